// One workflow: the graph drawn from the document the worker materialized, live updates, the
// editor (add, rename, connect, delete: each a patch posted with base_version) and the history
// slider (past versions materialized in the worker from the patch history).

import { API_BASE, ApiError, api, describe, session } from "../api.js";
import { fmt, h, ms } from "../dom.js";
import { layout } from "../graph/layout.js";
import { render, select as selectInSvg, setZoom } from "../graph/render.js";
import * as ops from "../ops.js";
import { toast } from "../toast.js";
import { WorkflowWorker } from "../workflow-worker.js";

const ZOOMS = [0.25, 0.4, 0.55, 0.7, 0.85, 1, 1.2, 1.5];

export function mountWorkflow(root, workflowId) {
  const s = {
    doc: null, // latest document
    version: null,
    name: workflowId,
    shown: null, // the document drawn: latest, or a past version
    graph: null, // layout of `shown`
    viewing: null, // null = latest; else the past version on screen
    selected: null,
    pendingSelect: null, // a node we added, to select once it is drawn
    zoom: 1,
    busy: false,
    ownVersions: new Set(), // versions our writes created, so their live echo isn't announced
  };

  // ---- elements ------------------------------------------------------------------------
  const title = h("h1", { id: "wf-title" }, "Loading…");
  const meta = h("p", { class: "muted", id: "wf-meta" });
  const liveBadge = h("span", { class: "badge", id: "live-state" }, "connecting");
  const materialized = h("p", { class: "materialized", id: "materialize-status" }, "Materializing in a Web Worker…");
  const timings = h("p", { class: "muted small", id: "timings" });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.id = "graph";
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Workflow graph");
  const scroller = h("div", { class: "graph-scroll", id: "graph-scroll" }, svg);
  const nodeList = h("datalist", { id: "node-options" });
  const find = h("input", { id: "find-node", list: "node-options", placeholder: "Find a node by id…", autocomplete: "off" });
  const zoomLabel = h("span", { class: "muted small zoom-label" }, "100%");

  const selTitle = h("h3", { id: "selected-name" }, "No node selected");
  const selMeta = h("p", { class: "muted small", id: "selected-meta" }, "Click a node in the graph, or find it by id.");
  const renameInput = h("input", { id: "rename-input", placeholder: "New name", maxlength: 200 });
  const connectInput = h("input", { id: "connect-target", list: "node-options", placeholder: "Target node id", autocomplete: "off" });
  const selectionFields = h("fieldset", { id: "selection-edit", disabled: true },
    h("form", { class: "inline", onsubmit: (e) => (e.preventDefault(), rename()) },
      renameInput, h("button", { type: "submit", id: "rename-btn" }, "Rename")),
    h("form", { class: "inline", onsubmit: (e) => (e.preventDefault(), connectTo()) },
      connectInput, h("button", { type: "submit", id: "connect-btn" }, "Connect")),
    h("button", { type: "button", class: "danger", id: "delete-btn", onclick: () => remove() }, "Delete node and its edges"));

  const addName = h("input", { id: "add-name", placeholder: "Name", maxlength: 200, required: true });
  const addType = h("input", { id: "add-type", placeholder: "Type, e.g. plugin", maxlength: 200, required: true, value: "plugin" });
  const addFrom = h("input", { id: "add-from-selected", type: "checkbox" });
  const addFields = h("fieldset", { id: "add-edit", disabled: true },
    h("form", { onsubmit: (e) => (e.preventDefault(), add()) },
      h("div", { class: "row2" }, addName, addType),
      h("label", { class: "check" }, addFrom, " Connect from the selected node"),
      h("button", { type: "submit", class: "primary", id: "add-btn" }, "Add node")));
  const editMsg = h("p", { class: "hint", id: "edit-status" }, "");

  const slider = h("input", { id: "history-slider", type: "range", min: 0, max: 0, value: 0, step: 1, disabled: true, "aria-label": "Version" });
  const historyLabel = h("p", { class: "small", id: "history-label" }, "—");
  const latestBtn = h("button", { type: "button", id: "history-latest", hidden: true, onclick: () => showLatest() }, "Back to latest");
  const activity = h("ol", { class: "activity", id: "activity" }, h("li", { class: "muted" }, "Live changes will show here."));

  root.append(
    h("div", { class: "workspace" },
      h("div", { class: "wf-head" },
        h("div", {}, h("a", { href: "#/workflows", class: "muted small" }, "← Workflows"), title, meta),
        h("div", { class: "wf-status" }, h("div", { class: "row-inline" }, liveBadge, materialized), timings)),
      h("div", { class: "wf-body" },
        h("section", { class: "graph-pane" },
          h("div", { class: "toolbar" },
            h("button", { type: "button", title: "Zoom out", onclick: () => zoomBy(-1), id: "zoom-out" }, "−"),
            zoomLabel,
            h("button", { type: "button", title: "Zoom in", onclick: () => zoomBy(1), id: "zoom-in" }, "+"),
            h("form", { class: "find", onsubmit: (e) => (e.preventDefault(), selectNode(find.value.trim(), true)) }, find, nodeList)),
          scroller),
        h("aside", { class: "panel" },
          h("section", { class: "card" }, h("h2", {}, "Selected"), selTitle, selMeta, selectionFields),
          h("section", { class: "card" }, h("h2", {}, "Add a node"), addFields, editMsg),
          h("section", { class: "card" }, h("h2", {}, "History"), slider, historyLabel, latestBtn),
          h("section", { class: "card" }, h("h2", {}, "Activity"), activity)),
      ),
    ),
  );

  // ---- the worker ----------------------------------------------------------------------
  const worker = new WorkflowWorker({
    document: (doc, info) => onDocument(doc, info),
    live: (state, detail) => {
      liveBadge.textContent = state === "live" ? "live" : state;
      liveBadge.className = `badge ${state}`;
      liveBadge.title = detail ?? "";
    },
    deleted: () => {
      s.doc = null; // nothing left to edit
      editable();
      materialized.textContent = "This workflow was deleted.";
      toast("This workflow was deleted by someone else.", "warn", 8000);
    },
    error: (err) => onWorkerError(err),
  });
  worker.open(API_BASE, session.key, workflowId);

  function onDocument(doc, info) {
    s.doc = doc;
    s.version = info.version;
    s.name = info.name ?? doc.name ?? workflowId;
    title.textContent = s.name;
    slider.max = String(info.version);
    slider.disabled = false;
    if (info.reason === "open" || info.reason === "reload") {
      const what = `${fmt(info.patchCount)} patch${info.patchCount === 1 ? "" : "es"} materialized in ${ms(info.materializeMs)} ms in a Web Worker`;
      materialized.textContent = info.reason === "reload" ? `Reloaded: ${what}` : what;
      materialized.title = `snapshot at version ${info.snapshotSeq} + ${info.patchCount} patches`;
      if (info.warning) toast(info.warning, "warn");
    } else {
      const theirs = [...Array(info.applied).keys()].some((k) => !s.ownVersions.has(info.version - k));
      logActivity(info);
      if (theirs) toast(`Version ${info.version} arrived live${info.authors?.length ? ` from ${info.authors.join(", ")}` : ""}.`, "info", 3500);
    }
    if (s.viewing === null) {
      slider.value = String(info.version);
      show(doc, info);
      updateHistoryLabel();
    } else {
      updateHistoryLabel();
    }
    updateMeta();
    editable();
  }

  function onWorkerError(err) {
    if (err.status === 401) return void dispatchEvent(new Event("patchbay:unauthorized"));
    if (err.status === 404 && err.during === "open") {
      root.replaceChildren(h("div", { class: "page" }, h("section", { class: "card" },
        h("h1", {}, "Workflow not found"), h("p", {}, `There is no workflow ${workflowId} in this workspace.`),
        h("a", { href: "#/workflows" }, "Back to the list"))));
      return;
    }
    if (err.during === "open") materialized.textContent = `Could not materialize: ${err.message}`;
    toast(err.message, "error", 8000);
  }

  // ---- drawing -------------------------------------------------------------------------
  function show(doc, info) {
    const t0 = performance.now();
    s.shown = doc;
    s.graph = layout(doc);
    const t1 = performance.now();
    render(svg, s.graph, { zoom: s.zoom, selected: s.selected });
    const t2 = performance.now();
    // Keep the selection (refreshing its details), or take up one an add was waiting for.
    const want = s.pendingSelect !== null && s.graph.nodes.some((p) => p.id === s.pendingSelect) ? s.pendingSelect : s.selected;
    if (want === s.pendingSelect) s.pendingSelect = null;
    selectNode(want !== null && s.graph.nodes.some((p) => p.id === want) ? want : null);
    nodeList.replaceChildren(...s.graph.nodes.map((p) => h("option", { value: p.id }, ops.displayName(p.node))));
    const parts = [];
    if (info?.fetchMs !== undefined) parts.push(`fetched ${fmt(Math.round(info.bytes / 1024))} KiB in ${ms(info.fetchMs)} ms`);
    if (info?.wasmMs) parts.push(`wasm loaded in ${ms(info.wasmMs)} ms`);
    if (info?.parseMs !== undefined) parts.push(`decoded in ${ms(info.parseMs)} ms`);
    parts.push(`laid out in ${ms(t1 - t0)} ms`, `drawn in ${ms(t2 - t1)} ms`);
    timings.textContent = parts.join(" · ");
  }

  function updateMeta() {
    const d = s.shown ?? s.doc;
    const nodes = d?.nodes?.length ?? 0, edges = d?.edges?.length ?? 0;
    const cyc = s.graph ? s.graph.edges.filter((e) => e.back).length : 0;
    meta.textContent = `${s.viewing === null ? `version ${fmt(s.version)}` : `viewing version ${fmt(s.viewing)} of ${fmt(s.version)}`} · ${fmt(nodes)} nodes · ${fmt(edges)} edges${cyc ? ` · ${fmt(cyc)} against the flow` : ""}`;
    meta.dataset.nodes = String(nodes);
    meta.dataset.edges = String(edges);
  }

  function zoomBy(step) {
    const i = ZOOMS.indexOf(s.zoom);
    s.zoom = ZOOMS[Math.max(0, Math.min(ZOOMS.length - 1, (i < 0 ? 5 : i) + step))];
    zoomLabel.textContent = `${Math.round(s.zoom * 100)}%`;
    if (s.graph) setZoom(svg, s.graph, s.zoom);
  }

  svg.addEventListener("click", (e) => {
    const g = e.target.closest?.("[data-node-id]");
    selectNode(g ? g.dataset.nodeId : null);
  });
  addEventListener("keydown", onKey);
  function onKey(e) {
    if (e.key === "Escape" && !(e.target instanceof HTMLInputElement)) selectNode(null);
  }

  function selectNode(id, scroll = false) {
    const p = id ? s.graph?.nodes.find((q) => q.id === id) : null;
    if (id && !p) return void toast(`No node ${id} in this version.`, "warn");
    s.selected = p ? p.id : null;
    selectInSvg(svg, s.selected);
    if (!p) {
      selTitle.textContent = "No node selected";
      selMeta.textContent = "Click a node in the graph, or find it by id.";
      renameInput.value = "";
    } else {
      const inn = s.graph.edges.filter((e) => e.to === p.id).length;
      const out = s.graph.edges.filter((e) => e.from === p.id).length;
      selTitle.textContent = ops.displayName(p.node);
      selMeta.textContent = `id ${p.id} · type ${p.node.type} · ${inn} in, ${out} out`;
      renameInput.value = ops.displayName(p.node);
      if (scroll) {
        scroller.scrollTo({ left: p.x * s.zoom - scroller.clientWidth / 2 + 90, top: p.y * s.zoom - scroller.clientHeight / 2, behavior: "instant" });
      }
    }
    editable();
  }

  // ---- editing -------------------------------------------------------------------------
  function editable() {
    const can = s.doc !== null && s.viewing === null && !s.busy;
    addFields.disabled = !can;
    selectionFields.disabled = !can || s.selected === null;
  }

  async function submit(what, build) {
    let patch;
    try {
      patch = build(s.doc);
    } catch (err) {
      return void setEdit(err.message, "form-error");
    }
    s.busy = true;
    editable();
    setEdit(`${what}…`, "hint");
    try {
      const res = await api("POST", `/workflows/${encodeURIComponent(workflowId)}/patches`, { json: { base_version: s.version, ops: patch } });
      s.ownVersions.add(res.version);
      setEdit(`${what}: saved as version ${fmt(res.version)}.`, "ok");
      // The event stream brings the patch; sync covers a stream that is reconnecting.
      worker.sync();
      return res;
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        const now = err.problem.current_version;
        setEdit(`Not saved: the workflow changed${now !== undefined ? ` (now version ${fmt(now)})` : ""} while you edited. The latest version is loaded; please check and try again.`, "form-error");
        toast("Someone else changed this workflow: reloaded the latest version.", "warn", 6000);
        worker.reload();
      } else if (err instanceof ApiError && err.status === 422) {
        const p = err.problem;
        const where = p.op_index !== undefined && p.op_index !== null ? ` (operation ${p.op_index}${p.path ? ` at ${p.path}` : ""})` : "";
        setEdit(`Rejected: ${p.reason ?? p.detail ?? "invalid patch"}${where}`, "form-error");
      } else if (err instanceof ApiError && err.status === 403) {
        setEdit("This API key may only read this workflow.", "form-error");
      } else {
        setEdit(`Not saved: ${describe(err)}`, "form-error");
      }
    } finally {
      s.busy = false;
      editable();
    }
  }

  function setEdit(text, cls) {
    editMsg.textContent = text;
    editMsg.className = cls;
  }

  async function add() {
    const name = addName.value.trim(), type = addType.value.trim();
    if (!name || !type) return;
    const id = ops.freshId(s.doc, name);
    const from = addFrom.checked ? s.selected : null;
    const res = await submit(`Adding ${name}`, (doc) => ops.addNode(doc, { id, name, type, from }));
    if (res) {
      addName.value = "";
      if (s.graph.nodes.some((p) => p.id === id)) selectNode(id);
      else s.pendingSelect = id;
    }
  }

  function rename() {
    const name = renameInput.value.trim();
    if (!name || s.selected === null) return;
    const id = s.selected;
    submit(`Renaming ${id}`, (doc) => ops.renameNode(doc, id, name));
  }

  async function connectTo() {
    const to = connectInput.value.trim();
    if (!to || s.selected === null) return;
    const from = s.selected;
    if (await submit(`Connecting ${from} → ${to}`, (doc) => ops.connect(doc, from, to))) connectInput.value = "";
  }

  async function remove() {
    if (s.selected === null) return;
    const id = s.selected;
    if (await submit(`Deleting ${id}`, (doc) => ops.deleteNode(doc, id))) selectNode(null);
  }

  // ---- history -------------------------------------------------------------------------
  let wanted = null, inFlight = false;
  slider.addEventListener("input", () => {
    const v = Number(slider.value);
    if (v === s.version) return showLatest();
    s.viewing = v;
    latestBtn.hidden = false;
    editable();
    updateMeta();
    historyLabel.textContent = `Version ${fmt(v)}: materializing…`;
    wanted = v;
    pump();
  });

  // One request at a time; while it runs, only the slider's latest position is remembered.
  async function pump() {
    if (inFlight || wanted === null) return;
    const v = wanted;
    wanted = null;
    inFlight = true;
    try {
      const { doc, info } = await worker.history(v);
      if (s.viewing === v) {
        show(doc);
        updateMeta();
        historyLabel.textContent = `Version ${fmt(v)} of ${fmt(s.version)}: ${fmt(info.applied)} patch${info.applied === 1 ? "" : "es"} materialized in ${ms(info.materializeMs)} ms in a Web Worker (read-only)`;
        historyLabel.dataset.version = String(v);
        historyLabel.dataset.nodes = String(doc.nodes?.length ?? 0);
      }
    } catch (err) {
      if (err.message !== "closed") historyLabel.textContent = `Could not load version ${v}: ${err.message}`;
    } finally {
      inFlight = false;
      pump();
    }
  }

  function showLatest() {
    s.viewing = null;
    wanted = null;
    slider.value = String(s.version);
    if (s.doc) show(s.doc);
    updateHistoryLabel();
    updateMeta();
    editable();
  }

  function updateHistoryLabel() {
    latestBtn.hidden = s.viewing === null;
    if (s.viewing === null) {
      historyLabel.textContent = `Latest: version ${fmt(s.version)}. Drag to see an earlier one.`;
      historyLabel.dataset.version = String(s.version);
    }
  }

  function logActivity(info) {
    activity.querySelector("li.muted")?.remove();
    const who = info.authors?.length ? info.authors.join(", ") : "this tab";
    activity.prepend(h("li", {}, h("strong", {}, `v${fmt(info.version)}`), ` ${info.applied} patch${info.applied === 1 ? "" : "es"} by ${who}, applied in ${ms(info.applyMs)} ms`));
    while (activity.children.length > 8) activity.lastChild.remove();
  }

  updateHistoryLabel();
  return () => {
    removeEventListener("keydown", onKey);
    worker.terminate();
  };
}

// Plugins: the server-wide and workspace plugins with their routes and pool figures, and an
// upload form (multipart: `manifest` + `component`). The plugin API may not exist on this
// server yet: a 404 from it is shown as a notice, not an error.

import { API_BASE, ApiError, api, describe, session } from "../api.js";
import { fmt, h } from "../dom.js";

export function mountPlugins(root) {
  const list = h("div", { id: "plugin-list" }, h("p", { class: "muted" }, "Loading…"));
  const notice = h("div", { id: "plugins-notice" });
  const manifest = h("input", { id: "plugin-manifest", name: "manifest", type: "file", accept: ".toml,.json,.yaml,.yml", required: true });
  const component = h("input", { id: "plugin-component", name: "component", type: "file", accept: ".wasm,application/wasm", required: true });
  const msg = h("p", { class: "hint", id: "upload-status" }, "A manifest (routes, pool sizes, required role) and a wasi:http component (.wasm).");
  const uploadBtn = h("button", { type: "submit", class: "primary" }, "Upload");
  let alive = true;

  async function load() {
    try {
      const page = await api("GET", "/plugins");
      if (!alive) return;
      notice.replaceChildren();
      list.replaceChildren(table(page.items ?? []));
    } catch (err) {
      if (!alive) return;
      if (err instanceof ApiError && err.status === 404) {
        list.replaceChildren(h("p", { class: "muted" }, "No plugins to list."));
        notice.replaceChildren(unavailable());
      } else {
        list.replaceChildren(h("p", { class: "form-error" }, `Could not list plugins: ${describe(err)}`));
      }
    }
  }

  async function upload(e) {
    e.preventDefault();
    if (!manifest.files[0] || !component.files[0]) return;
    const form = new FormData();
    form.append("manifest", manifest.files[0]);
    form.append("component", component.files[0]);
    uploadBtn.disabled = true;
    msg.className = "hint";
    msg.textContent = `Uploading ${component.files[0].name} (${fmt(Math.ceil(component.files[0].size / 1024))} KiB)…`;
    try {
      // The browser sets the multipart boundary itself when the body is a FormData.
      const res = await fetch(`${API_BASE}/plugins`, { method: "POST", headers: { Authorization: `Bearer ${session.key}` }, body: form });
      const body = await res.json().catch(() => null);
      if (res.status === 404) {
        notice.replaceChildren(unavailable());
        msg.textContent = "Not uploaded: this server has no plugin API yet.";
        msg.className = "form-error";
      } else if (!res.ok) {
        msg.className = "form-error";
        msg.textContent = `Not uploaded: ${describe(new ApiError(res.status, body))}`;
      } else {
        msg.className = "ok";
        msg.textContent = `Uploaded ${body?.name ?? "the plugin"}${body?.version ? ` ${body.version}` : ""}.`;
        load();
      }
    } catch (err) {
      msg.className = "form-error";
      msg.textContent = `Not uploaded: ${describe(err)}`;
    } finally {
      uploadBtn.disabled = false;
    }
  }

  root.append(
    h("div", { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, "Plugins")),
      notice,
      h("div", { class: "columns" },
        h("section", { class: "card grow" }, list),
        h("section", { class: "card side" },
          h("h2", {}, "Upload a plugin"),
          h("form", { onsubmit: upload, id: "upload-form" },
            h("label", { for: "plugin-manifest" }, "Manifest"), manifest,
            h("label", { for: "plugin-component" }, "Component"), component,
            msg,
            h("div", { class: "actions" }, uploadBtn))))));
  load();
  return () => (alive = false);
}

function unavailable() {
  return h("div", { class: "notice", role: "note" },
    h("strong", {}, "Plugins are not available on this server yet. "),
    "Its plugin API (/api/v1/plugins) did not answer; this page will list and upload plugins once it does.");
}

function table(items) {
  if (!items.length) return h("p", { class: "muted" }, "No plugins yet.");
  return h("table", { class: "table", id: "plugin-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Plugin"), h("th", {}, "Routes"), h("th", {}, "Pool"))),
    h("tbody", {}, items.map((p) =>
      h("tr", { dataset: { plugin: p.name } },
        h("td", {}, h("strong", {}, p.name), h("div", { class: "muted small" }, p.version ?? "")),
        h("td", {}, (p.routes ?? []).map((r) =>
          h("div", { class: "route" }, h("span", { class: "methods" }, (r.methods ?? ["*"]).join(" ")), " ", h("code", {}, r.path)))),
        h("td", {}, figures(p.pools ?? p.pool))))));
}

/** Pool figures in whatever shape the API gives them: numbers, objects of numbers, lists. */
function figures(v) {
  if (v === undefined || v === null) return h("span", { class: "muted" }, "—");
  if (typeof v !== "object") return String(v);
  if (Array.isArray(v)) return v.map((x) => h("div", { class: "pool" }, figures(x)));
  return h("dl", { class: "figures" }, Object.entries(v).map(([k, x]) => [h("dt", {}, k.replace(/_/g, " ")), h("dd", {}, typeof x === "object" && x !== null ? figures(x) : typeof x === "number" ? fmt(x) : String(x))]));
}

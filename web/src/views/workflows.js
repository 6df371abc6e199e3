// The workspace's workflows, a page at a time, and a form to create one from a template.

import { api, describe } from "../api.js";
import { fmt, h } from "../dom.js";
import { templates } from "../templates.js";

const PAGE = 50;

export function mountWorkflows(root) {
  const body = h("tbody");
  const status = h("p", { class: "muted", id: "list-status" }, "Loading…");
  const more = h("button", { type: "button", hidden: true, onclick: () => load(cursor) }, "Load more");
  let cursor = null;
  let alive = true;

  async function load(after) {
    more.disabled = true;
    try {
      const q = new URLSearchParams({ limit: String(PAGE) });
      if (after !== null && after !== undefined) q.set("after", after);
      const page = await api("GET", `/workflows?${q}`);
      if (!alive) return;
      for (const w of page.items ?? []) body.append(row(w));
      cursor = page.next_cursor ?? null;
      more.hidden = cursor === null;
      const count = body.children.length;
      status.textContent = count ? `${fmt(count)} workflow${count === 1 ? "" : "s"}${cursor !== null ? " shown" : ""}` : "No workflows yet: create one.";
    } catch (err) {
      if (alive) status.textContent = `Could not list workflows: ${describe(err)}`;
    } finally {
      more.disabled = false;
    }
  }

  const name = h("input", { id: "new-name", name: "name", required: true, maxlength: 200, placeholder: "e.g. Image thumbnails" });
  const template = h("select", { id: "new-template", name: "template" },
    Object.entries(templates).map(([k, t]) => h("option", { value: k }, t.label)));
  const createMsg = h("p", { class: "hint" });
  async function create(e) {
    e.preventDefault();
    const n = name.value.trim();
    if (!n) return;
    createMsg.className = "hint";
    createMsg.textContent = "Creating…";
    try {
      const made = await api("POST", "/workflows", { json: { name: n, document: templates[template.value].document(n) } });
      location.hash = `#/workflows/${encodeURIComponent(made.id)}`;
    } catch (err) {
      createMsg.className = "form-error";
      createMsg.textContent = describe(err);
    }
  }

  root.append(
    h("div", { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, "Workflows"), status),
      h("div", { class: "columns" },
        h("section", { class: "card grow" },
          h("table", { class: "table", id: "workflow-table" },
            h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Id"), h("th", { class: "num" }, "Version"), h("th", {}, "Updated"))),
            body),
          more),
        h("section", { class: "card side" },
          h("h2", {}, "New workflow"),
          h("form", { onsubmit: create, id: "create-form" },
            h("label", { for: "new-name" }, "Name"), name,
            h("label", { for: "new-template" }, "Start from"), template,
            createMsg,
            h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create"))),
        ),
      ),
    ),
  );
  load(null);
  return () => (alive = false);
}

function row(w) {
  const href = `#/workflows/${encodeURIComponent(w.id)}`;
  const when = w.updated_at ?? w.created_at;
  return h("tr", { dataset: { workflowId: w.id } },
    h("td", {}, h("a", { href }, w.name ?? w.id)),
    h("td", { class: "mono muted" }, w.id),
    h("td", { class: "num" }, fmt(w.version ?? 0)),
    h("td", { class: "muted" }, when ? new Date(when).toLocaleString() : "—"));
}

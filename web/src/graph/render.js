// Draws a laid-out graph as SVG. The markup is built as one string and parsed once: for a
// thousand nodes that is several times faster than a createElementNS call per element, and
// every text from the document goes through esc(), so names cannot inject markup.

import { NODE_H, NODE_W } from "./layout.js";
import { displayName } from "../ops.js";

const LABEL_CHARS = 21;

const esc = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

function edgePath(e) {
  const { x1, y1, x2, y2 } = e;
  if (e.self) {
    // A small loop over the node's right end.
    return `M${x1 - 24},${y1 - NODE_H / 2}C${x1 - 24},${y1 - NODE_H - 6} ${x1 + 18},${y1 - NODE_H - 6} ${x1},${y1 - 8}`;
  }
  if (e.back) {
    // Against the flow: leave to the right, swing below both nodes, come back in from the left.
    const drop = Math.max(y1, y2) + NODE_H;
    return `M${x1},${y1}C${x1 + 60},${drop} ${x2 - 60},${drop} ${x2},${y2}`;
  }
  const dx = Math.max(24, (x2 - x1) / 2);
  return `M${x1},${y1}C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

/** Renders `g` (from layout()) into `svg`, at `zoom`. */
export function render(svg, g, { zoom = 1, selected = null } = {}) {
  const parts = [
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">` +
      `<path d="M0,0L10,5L0,10z" class="arrowhead"/></marker></defs><g class="edges">`,
  ];
  for (const e of g.edges) {
    const cls = e.back || e.self ? "edge back" : "edge";
    parts.push(`<path class="${cls}" data-from="${esc(e.from)}" data-to="${esc(e.to)}" d="${edgePath(e)}" marker-end="url(#arrow)"/>`);
  }
  parts.push(`</g><g class="nodes">`);
  for (const p of g.nodes) {
    const name = displayName(p.node);
    const type = typeof p.node.type === "string" ? p.node.type : "";
    const cls = p.id === selected ? "node selected" : "node";
    parts.push(
      `<g class="${cls}" data-node-id="${esc(p.id)}" data-name="${esc(name)}" transform="translate(${p.x},${p.y})" tabindex="-1">` +
        `<title>${esc(name)}${name !== p.id ? ` (${esc(p.id)})` : ""} · ${esc(type)}</title>` +
        `<rect width="${NODE_W}" height="${NODE_H}" rx="7"/>` +
        `<text class="label" x="12" y="19">${esc(clip(name, LABEL_CHARS))}</text>` +
        `<text class="type" x="12" y="35">${esc(clip(type, LABEL_CHARS + 4))}</text></g>`,
    );
  }
  parts.push("</g>");
  svg.setAttribute("viewBox", `0 0 ${g.width} ${g.height}`);
  setZoom(svg, g, zoom);
  svg.innerHTML = parts.join("");
}

export function setZoom(svg, g, zoom) {
  svg.setAttribute("width", Math.round(g.width * zoom));
  svg.setAttribute("height", Math.round(g.height * zoom));
}

/** Marks `id` (and its edges) selected, without redrawing. */
export function select(svg, id) {
  for (const el of svg.querySelectorAll(".selected, .linked")) el.classList.remove("selected", "linked");
  if (id === null || id === undefined) return;
  const q = CSS.escape(id);
  svg.querySelector(`[data-node-id="${q}"]`)?.classList.add("selected");
  for (const el of svg.querySelectorAll(`[data-from="${q}"], [data-to="${q}"]`)) el.classList.add("linked");
}

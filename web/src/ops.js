// RFC 6902 operations for the editor's actions. Each edit guards the array positions it
// touches with `test` operations: base_version already rejects a stale edit, and the tests
// make a patch that was built against the wrong document fail loudly instead of hitting
// whatever node now sits at that index.

export const displayName = (node) => (typeof node.name === "string" && node.name ? node.name : node.id);

function indexOfNode(doc, id) {
  const i = doc.nodes.findIndex((n) => n.id === id);
  if (i < 0) throw new Error(`there is no node ${id}`);
  return i;
}

/** A node id derived from its name, unique in `doc` ("Resize image" -> "resize-image-2"). */
export function freshId(doc, name) {
  const stem = String(name).toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "node";
  const taken = new Set(doc.nodes.map((n) => n.id));
  if (!taken.has(stem)) return stem;
  for (let k = 2; ; k++) if (!taken.has(`${stem}-${k}`)) return `${stem}-${k}`;
}

export function addNode(doc, { id, name, type, from }) {
  const ops = [{ op: "add", path: "/nodes/-", value: { id, type, name } }];
  if (from) ops.push(...connect(doc, from, id, { checkTo: false }));
  return ops;
}

export function renameNode(doc, id, name) {
  const i = indexOfNode(doc, id);
  const has = Object.prototype.hasOwnProperty.call(doc.nodes[i], "name");
  return [
    { op: "test", path: `/nodes/${i}/id`, value: id },
    { op: has ? "replace" : "add", path: `/nodes/${i}/name`, value: name },
  ];
}

export function connect(doc, from, to, { checkTo = true } = {}) {
  if (from === to) throw new Error("a node cannot be connected to itself here");
  indexOfNode(doc, from);
  if (checkTo) indexOfNode(doc, to);
  if (doc.edges.some((e) => e.from === from && e.to === to)) throw new Error(`${from} is already connected to ${to}`);
  return [{ op: "add", path: "/edges/-", value: { from, to } }];
}

/** Removes a node and every edge that touches it (highest index first, so indices hold). */
export function deleteNode(doc, id) {
  const ops = [];
  for (let j = doc.edges.length - 1; j >= 0; j--) {
    const e = doc.edges[j];
    if (e.from === id || e.to === id) {
      ops.push({ op: "test", path: `/edges/${j}/${e.from === id ? "from" : "to"}`, value: id });
      ops.push({ op: "remove", path: `/edges/${j}` });
    }
  }
  const i = indexOfNode(doc, id);
  ops.push({ op: "test", path: `/nodes/${i}/id`, value: id }, { op: "remove", path: `/nodes/${i}` });
  return ops;
}

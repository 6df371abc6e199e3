// A deterministic test workflow: 1,000 nodes in ~25 layers (a DAG plus a few cycles) and a
// list of patches that are valid one after another. Node names are kept distinct from ids
// so the test can tell them apart.

/** Mulberry32: small, fast, and the same sequence on every run. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TYPES = ["trigger.http", "plugin", "cache.lookup", "cache.store", "transform", "respond", "branch", "fetch"];
const WORDS = ["resize", "thumbnail", "validate", "enrich", "route", "score", "filter", "merge", "split", "notify", "archive", "index"];

export function workflow(n = 1000, seed = 7) {
  const r = rng(seed);
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const width = 40;
  const nodes = [];
  const edges = [];
  for (let i = 0; i < n; i++) {
    const node = { id: `n${String(i).padStart(4, "0")}`, type: pick(TYPES), name: `${pick(WORDS)} ${i}` };
    if (i % 5 === 0) node.config = { retries: i % 3, timeout_ms: 100 * (i % 7) };
    nodes.push(node);
    const layer = Math.floor(i / width);
    if (layer === 0) continue;
    const parents = 1 + (r() < 0.45 ? 1 : 0);
    const seen = new Set();
    for (let p = 0; p < parents; p++) {
      const back = layer >= 2 && r() < 0.2 ? 2 : 1;
      const from = (layer - back) * width + Math.floor(r() * width);
      if (seen.has(from)) continue;
      seen.add(from);
      edges.push({ from: nodes[from].id, to: node.id });
    }
  }
  // A few cycles, so the layout's cycle breaking is exercised (those whose nodes exist).
  for (const [a, b] of [[n - 1, 0], [600, 590], [333, 333]].filter(([a]) => a < n)) edges.push({ from: nodes[a].id, to: nodes[b].id });
  return { name: "Thumbnail farm", nodes, edges, metadata: { owner: "browser-tests", revision: 0 } };
}

/**
 * `count` patches, each valid on the document the previous ones produced. Mutates a copy of
 * `doc` to track what the server will hold; returns {patches, doc}.
 */
export function patches(doc, count = 500, seed = 11) {
  const r = rng(seed);
  const d = structuredClone(doc);
  const out = [];
  let added = 0;
  const idx = () => Math.floor(r() * d.nodes.length);
  while (out.length < count) {
    const x = r();
    let ops;
    if (x < 0.3) {
      const i = idx();
      const name = `${d.nodes[i].name ?? d.nodes[i].id} v${out.length}`;
      ops = [{ op: "test", path: `/nodes/${i}/id`, value: d.nodes[i].id }, { op: "replace", path: `/nodes/${i}/name`, value: name }];
      d.nodes[i].name = name;
    } else if (x < 0.5) {
      const from = d.nodes[idx()].id;
      const node = { id: `added-${added++}`, type: "plugin", name: `added node ${added}` };
      ops = [{ op: "add", path: "/nodes/-", value: node }, { op: "add", path: "/edges/-", value: { from, to: node.id } }];
      d.nodes.push(node);
      d.edges.push({ from, to: node.id });
    } else if (x < 0.7) {
      const e = { from: d.nodes[idx()].id, to: d.nodes[idx()].id };
      ops = [{ op: "add", path: "/edges/-", value: e }];
      d.edges.push(e);
    } else if (x < 0.8 && d.edges.length) {
      const j = Math.floor(r() * d.edges.length);
      ops = [{ op: "test", path: `/edges/${j}/from`, value: d.edges[j].from }, { op: "remove", path: `/edges/${j}` }];
      d.edges.splice(j, 1);
    } else if (x < 0.9) {
      const i = idx();
      const config = { retries: out.length % 4, note: `patch ${out.length}` };
      ops = [{ op: "add", path: `/nodes/${i}/config`, value: config }];
      d.nodes[i].config = config;
    } else {
      ops = [{ op: "replace", path: "/metadata/revision", value: out.length }];
      d.metadata.revision = out.length;
    }
    out.push(ops);
  }
  return { patches: out, doc: d };
}

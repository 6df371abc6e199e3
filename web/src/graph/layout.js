// A layered (Sugiyama-style) layout, left to right, in O(n + e) per step:
//   1. cycles are broken by reversing DFS back edges (they are drawn, dashed, but ignored
//      for layering);
//   2. longest-path layering from the sources: every edge points to a later column;
//   3. barycentre ordering: a few sweeps down and up, each node moving to the mean position of
//      its neighbours in earlier (later) columns, which removes most crossings;
//   4. coordinates: columns at fixed pitch, each column centred vertically.
// No dummy nodes for long edges: they would make the work proportional to edge spans, not
// edges; their curves are drawn straight through instead.

export const NODE_W = 184;
export const NODE_H = 44;
const GAP_X = 72;
const GAP_Y = 16;
const PAD = 24;
const SWEEPS = 6;

/**
 * `doc` is a workflow document. Returns {nodes: [{id, node, x, y, layer}], edges: [{from, to,
 * x1, y1, x2, y2, back, self}], width, height, layers, dangling}.
 */
export function layout(doc) {
  const src = Array.isArray(doc?.nodes) ? doc.nodes : [];
  const index = new Map();
  const nodes = [];
  for (const node of src) {
    if (node && typeof node.id === "string" && !index.has(node.id)) {
      index.set(node.id, nodes.length);
      nodes.push(node);
    }
  }
  const n = nodes.length;
  const edges = [];
  let dangling = 0;
  for (const e of Array.isArray(doc?.edges) ? doc.edges : []) {
    const a = index.get(e?.from), b = index.get(e?.to);
    if (a === undefined || b === undefined) dangling++;
    else edges.push([a, b]);
  }

  const out = csr(n, edges, 0, 1);
  const reversed = breakCycles(n, edges, out);
  // The acyclic view: back edges turned around, self-loops left out.
  const dag = edges.map(([a, b], k) => (a === b ? null : reversed[k] ? [b, a] : [a, b])).filter(Boolean);
  const succ = csr(n, dag, 0, 1);
  const pred = csr(n, dag, 1, 0);
  const { layer, topo } = longestPath(n, succ, pred);

  // Columns in topological order: a decent start for the sweeps.
  let layerCount = 0;
  for (const v of topo) if (layer[v] + 1 > layerCount) layerCount = layer[v] + 1;
  const columns = Array.from({ length: layerCount }, () => []);
  for (const v of topo) columns[layer[v]].push(v);
  const rank = new Float64Array(n); // position in its column, as a fraction of the column
  const place = (col) => col.forEach((v, i) => (rank[v] = (i + 0.5) / col.length));
  columns.forEach(place);

  for (let s = 0; s < SWEEPS; s++) {
    const down = s % 2 === 0;
    const adj = down ? pred : succ;
    const order = down ? columns.keys() : [...columns.keys()].reverse();
    for (const c of order) {
      const col = columns[c];
      const key = new Float64Array(col.length);
      col.forEach((v, i) => {
        let sum = 0, k = 0;
        for (let j = adj.start[v]; j < adj.start[v + 1]; j++) {
          sum += rank[adj.to[j]];
          k++;
        }
        key[i] = k ? sum / k : rank[v]; // no neighbours that way: stay put
      });
      const idx = col.map((_, i) => i).sort((p, q) => key[p] - key[q] || p - q);
      columns[c] = idx.map((i) => col[i]);
      place(columns[c]);
    }
  }

  const tallest = columns.reduce((m, col) => Math.max(m, col.length), 0);
  const pos = new Array(n);
  columns.forEach((col, c) => {
    const offset = (tallest - col.length) / 2;
    col.forEach((v, i) => {
      pos[v] = { id: nodes[v].id, node: nodes[v], layer: c, x: PAD + c * (NODE_W + GAP_X), y: PAD + (offset + i) * (NODE_H + GAP_Y) };
    });
  });
  const drawnEdges = edges.map(([a, b], k) => {
    const p = pos[a], q = pos[b];
    return { from: p.id, to: q.id, x1: p.x + NODE_W, y1: p.y + NODE_H / 2, x2: q.x, y2: q.y + NODE_H / 2, back: reversed[k] || p.layer >= q.layer, self: a === b };
  });
  return {
    nodes: pos,
    edges: drawnEdges,
    layers: layerCount,
    dangling,
    width: PAD * 2 + Math.max(layerCount, 1) * (NODE_W + GAP_X) - GAP_X,
    height: PAD * 2 + Math.max(tallest, 1) * (NODE_H + GAP_Y) - GAP_Y + NODE_H, // room for back-edge loops
  };
}

/** Compressed adjacency: neighbours of v are to[start[v] .. start[v+1]). */
function csr(n, edges, fromSide, toSide) {
  const start = new Int32Array(n + 1);
  for (const e of edges) start[e[fromSide] + 1]++;
  for (let i = 0; i < n; i++) start[i + 1] += start[i];
  const fill = start.slice(0, n);
  const to = new Int32Array(edges.length);
  const edgeId = new Int32Array(edges.length);
  edges.forEach((e, k) => {
    const at = fill[e[fromSide]]++;
    to[at] = e[toSide];
    edgeId[at] = k;
  });
  return { start, to, edgeId };
}

/** Marks the edges that close a cycle (DFS back edges), iteratively: 1,000-node chains would
 * overflow a recursive walk's stack. */
function breakCycles(n, edges, out) {
  const reversed = new Uint8Array(edges.length);
  const state = new Uint8Array(n); // 0 new, 1 on the stack, 2 done
  const stack = new Int32Array(n);
  const cursor = new Int32Array(n);
  for (let root = 0; root < n; root++) {
    if (state[root]) continue;
    let top = 0;
    stack[0] = root;
    state[root] = 1;
    cursor[root] = out.start[root];
    while (top >= 0) {
      const v = stack[top];
      if (cursor[v] < out.start[v + 1]) {
        const j = cursor[v]++;
        const w = out.to[j];
        if (state[w] === 1) reversed[out.edgeId[j]] = 1;
        else if (state[w] === 0) {
          state[w] = 1;
          cursor[w] = out.start[w];
          stack[++top] = w;
        }
      } else {
        state[v] = 2;
        top--;
      }
    }
  }
  // Self-loops were marked as back edges; they are drawn as loops instead.
  edges.forEach(([a, b], k) => a === b && (reversed[k] = 0));
  return reversed;
}

/** Kahn's algorithm: layer[v] = 1 + the deepest predecessor's layer. */
function longestPath(n, succ, pred) {
  const indeg = new Int32Array(n);
  for (let v = 0; v < n; v++) indeg[v] = pred.start[v + 1] - pred.start[v];
  const layer = new Int32Array(n);
  const topo = [];
  for (let v = 0; v < n; v++) if (indeg[v] === 0) topo.push(v);
  for (let h = 0; h < topo.length; h++) {
    const v = topo[h];
    for (let j = succ.start[v]; j < succ.start[v + 1]; j++) {
      const w = succ.to[j];
      if (layer[v] + 1 > layer[w]) layer[w] = layer[v] + 1;
      if (--indeg[w] === 0) topo.push(w);
    }
  }
  return { layer, topo };
}

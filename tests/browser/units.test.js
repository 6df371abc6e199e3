// The UI's pure modules, in node (no browser): the envelope slicer, the layout, and the
// editor's patches, the latter applied by the real wasm materializer (web/pkg).

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { arrayOf, elements, locate, members, parseRange, view } from "../../web/src/jsonslice.js";
import { layout } from "../../web/src/graph/layout.js";
import * as ops from "../../web/src/ops.js";
import { EventStreamParser } from "../../web/src/sse.js";
import * as fixtures from "./support/fixtures.js";
import { repoRoot } from "./support/server.js";

const enc = (v) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
const text = (b) => new TextDecoder().decode(b);

describe("jsonslice", () => {
  const envelope = {
    id: 'w"1\\',
    name: "a}b]c",
    snapshot: { seq: 3, digest: "d", document: { name: "x", nodes: [{ id: "[" }], edges: [] } },
    patches: [{ seq: 4, ops: [{ op: "add", path: "/a", value: '"]}' }] }, { seq: 5, ops: [] }],
  };
  const b = enc(JSON.stringify(envelope, null, 1)); // whitespace everywhere

  it("finds nested members in one pass, exactly", () => {
    const top = locate(b, { name: true, snapshot: { seq: true, document: true }, patches: true });
    assert.equal(parseRange(b, top.name), envelope.name);
    assert.equal(parseRange(b, top.snapshot.seq), 3);
    assert.deepEqual(parseRange(b, top.snapshot.document), envelope.snapshot.document);
    assert.deepEqual(JSON.parse(text(view(b, top.patches))), envelope.patches);
    assert.deepEqual(members(b, ["id"]).id && parseRange(b, members(b, ["id"]).id), envelope.id);
  });

  it("cuts runs of array elements", () => {
    const list = elements(b, locate(b, { patches: true }).patches.start);
    assert.equal(list.length, 2);
    assert.deepEqual(JSON.parse(text(arrayOf(b, list, 1, 1))), [envelope.patches[1]]);
    assert.deepEqual(JSON.parse(text(arrayOf(b, list, 0, 1))), envelope.patches);
  });
});

describe("layout", () => {
  it("puts every edge of a DAG forward and breaks cycles", () => {
    const doc = fixtures.workflow(1000);
    const t0 = performance.now();
    const g = layout(doc);
    const took = performance.now() - t0;
    assert.equal(g.nodes.length, 1000);
    assert.equal(g.edges.length, doc.edges.length);
    const layer = new Map(g.nodes.map((p) => [p.id, p.layer]));
    for (const e of g.edges) if (!e.back && !e.self) assert.ok(layer.get(e.from) < layer.get(e.to), `${e.from} -> ${e.to}`);
    assert.ok(g.edges.some((e) => e.back), "the fixture's cycles show as edges against the flow");
    assert.ok(took < 500, `layout of 1,000 nodes took ${took} ms`);
  });

  it("handles a long cycle without recursion and places nodes apart", () => {
    const n = 5000;
    const doc = { nodes: Array.from({ length: n }, (_, i) => ({ id: `c${i}`, type: "t" })), edges: [] };
    for (let i = 0; i < n; i++) doc.edges.push({ from: `c${i}`, to: `c${(i + 1) % n}` });
    const g = layout(doc);
    assert.equal(g.edges.filter((e) => e.back).length, 1);
    assert.equal(new Set(g.nodes.map((p) => `${p.x},${p.y}`)).size, n, "no two nodes overlap");
  });
});

describe("editor patches, applied by the wasm materializer", async () => {
  const { initSync, Materializer } = await import(join(repoRoot, "web/pkg/patchbay_materializer.js"));
  initSync({ module: readFileSync(join(repoRoot, "web/pkg/patchbay_materializer_bg.wasm")) });
  const apply = (doc, patch) => {
    const m = Materializer.fromString(JSON.stringify(doc), 0);
    m.applyString(JSON.stringify(patch));
    assert.deepEqual(m.validate(), [], "still a valid workflow");
    return JSON.parse(m.documentString());
  };
  const base = {
    name: "t",
    nodes: [{ id: "a", type: "x" }, { id: "b", type: "x", name: "B" }, { id: "c", type: "x" }],
    edges: [{ from: "a", to: "b" }, { from: "b", to: "c" }, { from: "a", to: "c" }, { from: "c", to: "b" }],
  };

  it("adds (and connects), renames, connects", () => {
    let d = apply(base, ops.addNode(base, { id: ops.freshId(base, "B"), name: "New", type: "y", from: "a" }));
    assert.deepEqual(d.nodes.at(-1), { id: "b-2", type: "y", name: "New" });
    assert.deepEqual(d.edges.at(-1), { from: "a", to: "b-2" });
    d = apply(d, ops.renameNode(d, "a", "Alpha"));
    d = apply(d, ops.renameNode(d, "b", "Beta"));
    assert.deepEqual(d.nodes.slice(0, 2).map((n) => n.name), ["Alpha", "Beta"]);
    d = apply(d, ops.connect(d, "c", "a"));
    assert.deepEqual(d.edges.at(-1), { from: "c", to: "a" });
    assert.throws(() => ops.connect(d, "c", "a"), /already connected/);
  });

  it("deletes a node with all its edges", () => {
    const d = apply(base, ops.deleteNode(base, "b"));
    assert.deepEqual(d.nodes.map((n) => n.id), ["a", "c"]);
    assert.deepEqual(d.edges, [{ from: "a", to: "c" }]);
  });

  it("refuses a patch built for another document", () => {
    const stale = ops.deleteNode(base, "b");
    const moved = { ...base, nodes: [base.nodes[1], base.nodes[0], base.nodes[2]] };
    assert.throws(() => apply(moved, stale), (e) => e.name === "PatchError" && e.kind === "test_failed");
  });
});

describe("event stream parser", () => {
  it("splits events across chunks and line endings, skipping comments", () => {
    const seen = [];
    let comments = 0;
    const p = new EventStreamParser((e) => seen.push(e), () => comments++);
    for (const chunk of [": hb\n\nid: 7\nevent: pa", "tch\r\ndata: {\"seq\":7}\r", "\n\r\nid: 8\ndata: a\ndata: b\n\n"]) p.push(chunk);
    assert.equal(comments, 1);
    assert.deepEqual(seen, [
      { id: "7", event: "patch", data: '{"seq":7}' },
      { id: "8", event: "message", data: "a\nb" },
    ]);
  });
});

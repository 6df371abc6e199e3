// The materializer's Web Worker (a module worker). It fetches a workflow's latest snapshot and
// the patches after it, materializes them with Patchbay's Rust materializer compiled to
// WebAssembly, and hands the page the document as JSON bytes in a transferred ArrayBuffer.
// The Materializer stays alive here: live patches from the event stream are applied to the
// document already in wasm memory, so nothing is re-parsed per update. Raw fetched bytes go
// to wasm as they arrived (sliced out of the API's envelope, see jsonslice.js).
//
// Page -> worker: {type: "open", apiBase, key, workflowId} | {type: "sync"} | {type: "reload"}
//                 | {type: "history", reqId, version}
// Worker -> page: {type: "document", reason, buffer, version, ...} | {type: "history", ...}
//                 | {type: "live", state, detail} | {type: "deleted"} | {type: "error", ...}

import { arrayOf, elements, locate, members, parseRange, view } from "./jsonslice.js";
import { follow } from "./sse.js";

let wasm; // the materializer module, once loaded
let ctx; // {apiBase, key, workflowId}
let live = null; // {m: Materializer, name, snapshotSeq}
let stream = null;
let history = null; // see historyAt()
let flushTimer = null;
let pendingLive = null; // coalesces bursts of live patches into one document post

const loaded = (async () => {
  const t0 = performance.now();
  try {
    wasm = await import("../pkg/patchbay_materializer.js");
    await wasm.default();
  } catch (err) {
    throw new Error(`the wasm materializer could not be loaded (is web/pkg built? run \`cargo xtask wasm\`): ${err.message}`);
  }
  return performance.now() - t0;
})();

self.onmessage = (e) => {
  const msg = e.data;
  const run = { open, sync, reload, history: queueHistory }[msg.type];
  if (!run) return;
  run(msg).catch((err) => report(err, msg));
};

function report(err, msg) {
  self.postMessage({
    type: "error",
    during: msg?.type,
    reqId: msg?.reqId,
    message: err.message,
    status: err.status ?? null,
    kind: err.kind ?? null,
    problem: err.problem ?? null,
  });
}

async function get(path) {
  const res = await fetch(ctx.apiBase + path, {
    headers: { Authorization: `Bearer ${ctx.key}`, Accept: "application/json" },
    cache: "no-store",
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (!res.ok) {
    let problem = null;
    try {
      problem = JSON.parse(new TextDecoder().decode(bytes));
    } catch {}
    const err = new Error(problem?.detail || `GET ${path} answered HTTP ${res.status}`);
    err.status = res.status;
    err.problem = problem;
    throw err;
  }
  return bytes;
}

const wfPath = (suffix = "") => `/workflows/${encodeURIComponent(ctx.workflowId)}${suffix}`;

async function open(msg) {
  ctx = { apiBase: msg.apiBase, key: msg.key, workflowId: msg.workflowId };
  const wasmMs = await loaded;
  await load("open", wasmMs);
  startStream();
}

/** Fetches the latest snapshot + patches and materializes them into a fresh Materializer. */
async function load(reason, wasmMs = 0) {
  const f0 = performance.now();
  const bytes = await get(wfPath());
  const fetchMs = performance.now() - f0;

  const t0 = performance.now();
  const top = locate(bytes, { name: true, version: true, snapshot: { seq: true, document: true }, patches: true });
  const snap = top.snapshot;
  const snapshotSeq = parseRange(bytes, snap.seq);
  const m = new wasm.Materializer(view(bytes, snap.document), snapshotSeq);
  // The API's patch records go in as they are: wasm checks each record's seq follows on.
  if (top.patches) m.apply(view(bytes, top.patches));
  const doc = m.document();
  const materializeMs = performance.now() - t0;
  const patchCount = m.version() - snapshotSeq;

  live?.m.free();
  live = { m, name: parseRange(bytes, top.name), snapshotSeq };
  const version = m.version();
  const expected = parseRange(bytes, top.version);
  postDocument(doc, {
    reason,
    version,
    name: live.name,
    snapshotSeq,
    patchCount,
    materializeMs,
    fetchMs,
    wasmMs,
    bytes: bytes.length,
    warning: expected !== version ? `the server said version ${expected}, the patches give ${version}` : null,
  });
}

function postDocument(doc, fields) {
  // The document's bytes move to the page without a copy.
  self.postMessage({ type: "document", buffer: doc.buffer, ...fields }, [doc.buffer]);
}

/** On a conflict the page asks for everything afresh. */
async function reload() {
  await loaded;
  await load("reload");
}

function startStream() {
  stream?.stop();
  stream = follow(ctx.apiBase + wfPath("/events"), {
    key: ctx.key,
    // Resume after what the document already holds, whatever the stream saw last.
    lastEventId: () => live?.m.version(),
    onEvent: onLiveEvent,
    onState: (state, detail) => self.postMessage({ type: "live", state, detail: detail ?? null }),
    // A key that stopped working or a workflow that is gone will not come back by retrying.
    fatal: (err) => err.status === 401 || err.status === 403 || err.status === 404,
  });
}

function onLiveEvent(e) {
  if (e.event === "deleted") {
    // The server ends the stream after this; reconnecting would only find a 404.
    stream?.stop();
    self.postMessage({ type: "live", state: "stopped", detail: "the workflow was deleted" });
    self.postMessage({ type: "deleted" });
    return;
  }
  if (e.event !== "patch" || !live) return;
  const seq = Number(e.id);
  const version = live.m.version();
  if (!Number.isSafeInteger(seq) || seq <= version) return; // already applied (sync or resume)
  if (seq > version + 1) {
    // A gap (events lost while reconnecting): fetch what is missing from the history.
    sync().catch((err) => report(err, { type: "sync" }));
    return;
  }
  const t0 = performance.now();
  try {
    live.m.applyString(`[${e.data}]`);
  } catch (err) {
    report(err, { type: "live" });
    return;
  }
  const took = performance.now() - t0;
  let author = null;
  try {
    author = JSON.parse(e.data).author ?? null; // small: one patch record
  } catch {}
  queueLive({ applied: 1, applyMs: took, author });
}

/** Live patches arrive in bursts; the page gets one document per burst, not per patch. */
function queueLive({ applied, applyMs, author }) {
  pendingLive ??= { applied: 0, applyMs: 0, authors: new Set() };
  pendingLive.applied += applied;
  pendingLive.applyMs += applyMs;
  if (author) pendingLive.authors.add(author);
  if (flushTimer) return;
  flushTimer = setTimeout(() => {
    flushTimer = null;
    const p = pendingLive;
    pendingLive = null;
    const t0 = performance.now();
    const doc = live.m.document();
    postDocument(doc, {
      reason: "live",
      version: live.m.version(),
      name: live.name,
      applied: p.applied,
      applyMs: p.applyMs + (performance.now() - t0),
      authors: [...p.authors],
    });
  }, 16);
}

/** Pages through the patch history after `after`; calls `onPage(bytes, records)` per page. */
async function eachHistoryPage(after, onPage, until = Infinity) {
  let cursor = after;
  for (;;) {
    const bytes = await get(wfPath(`/patches?after=${encodeURIComponent(cursor)}&limit=1000`));
    const top = members(bytes, ["patches", "next_cursor"]);
    const elems = top.patches ? elements(bytes, top.patches.start) : [];
    const seqs = elems.map((r) => parseRange(bytes, members(bytes, ["seq"], r.start).seq));
    onPage(bytes, elems, seqs);
    const next = parseRange(bytes, top.next_cursor);
    if (next === null || next === undefined || elems.length === 0) return;
    if (seqs.length && seqs[seqs.length - 1] >= until) return;
    cursor = next;
  }
}

/** Applies the records with seq > the current version (others arrived meanwhile over SSE). */
function applyNewer(m, bytes, elems, seqs, upTo = Infinity) {
  const from = seqs.findIndex((s) => s > m.version());
  if (from < 0) return 0;
  let to = seqs.length - 1;
  while (to >= from && seqs[to] > upTo) to--;
  if (to < from) return 0;
  m.apply(arrayOf(bytes, elems, from, to));
  return to - from + 1;
}

/** Fetches and applies the patches the live document is missing (after our own write). */
async function sync() {
  if (!live) return;
  const t0 = performance.now();
  let applied = 0;
  await eachHistoryPage(live.m.version(), (bytes, elems, seqs) => {
    applied += applyNewer(live.m, bytes, elems, seqs);
  });
  if (applied) queueLive({ applied, applyMs: performance.now() - t0, author: null });
}

// One history request at a time: each extends the shared page cache and walks its Materializer.
let historyChain = Promise.resolve();
function queueHistory(msg) {
  const next = historyChain.then(() => historyAt(msg));
  historyChain = next.catch(() => {});
  return next;
}

/**
 * The document at a past version, materialized here from the full history: the base document
 * (version 0) plus patches 1..version. A second Materializer walks forward as the slider
 * moves and starts again from the base only when it moves back.
 */
async function historyAt({ reqId, version }) {
  await loaded;
  const t0 = performance.now();
  if (!history || history.workflowId !== ctx.workflowId) {
    const base = await get(wfPath("/document?at=0"));
    history = { workflowId: ctx.workflowId, base: documentBytes(base), pages: [], lastSeq: 0, m: null };
  }
  if (version > history.lastSeq) {
    await eachHistoryPage(
      history.lastSeq,
      (bytes, elems, seqs) => {
        if (!seqs.length) return;
        history.pages.push({ bytes, elems, seqs });
        history.lastSeq = seqs[seqs.length - 1];
      },
      version,
    );
  }
  const fetched = performance.now();
  if (!history.m || history.m.version() > version) {
    history.m?.free();
    history.m = new wasm.Materializer(history.base, 0);
  }
  let applied = 0;
  for (const p of history.pages) {
    if (history.m.version() >= version) break;
    applied += applyNewer(history.m, p.bytes, p.elems, p.seqs, version);
  }
  const doc = history.m.document();
  self.postMessage(
    {
      type: "history",
      reqId,
      version: history.m.version(),
      buffer: doc.buffer,
      applied,
      totalPatches: history.m.version(),
      fetchMs: fetched - t0,
      materializeMs: performance.now() - fetched,
    },
    [doc.buffer],
  );
}

/** `/document` answers the document itself; accept an envelope `{document}` too. */
function documentBytes(bytes) {
  const top = members(bytes, ["document", "nodes"]);
  return top.document && !top.nodes ? view(bytes, top.document).slice() : bytes;
}

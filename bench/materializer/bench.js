// Runs in the page. Both sides start from the text as fetched (the GET /workflows/{id}
// envelope: snapshot + patch records) and end with a document object the page can render:
//   wasm: bytes -> worker (transfer) -> wasm materializer -> JSON bytes (transfer) -> JSON.parse
//   fast-json-patch: JSON.parse(text) -> applyPatch per patch (validation off), on the page.

import { applyPatch } from "/fjp/index.mjs";

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const decoder = new TextDecoder();

function viaWorker(buffer, as) {
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (e) => reject(new Error(e.message || "worker failed"));
    worker.postMessage({ buffer, as }, [buffer]);
  });
}

async function wasmOnce(bytes, as) {
  const copy = bytes.slice().buffer; // a fresh buffer to transfer, made before the clock starts
  const t0 = performance.now();
  const r = await viaWorker(copy, as);
  // The only part that blocks the page's main thread (fast-json-patch blocks it throughout).
  const t1 = performance.now();
  const doc = JSON.parse(as === "string" ? r.text : decoder.decode(new Uint8Array(r.buffer)));
  const t2 = performance.now();
  return { ms: t2 - t0, mainMs: t2 - t1, workerMs: r.workerMs, phases: r.phases, doc, version: r.version };
}

function fjpOnce(text) {
  const t0 = performance.now();
  const env = JSON.parse(text);
  const doc = env.snapshot.document;
  for (const p of env.patches) applyPatch(doc, p.ops, false, true);
  return { ms: performance.now() - t0, doc };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x) => Math.round(x * 1000) / 1000;

/** Benchmarks one data set; `rounds` measured runs after `warmup` unmeasured ones. */
async function one(url, { rounds, warmup }) {
  const res = await fetch(url);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const text = decoder.decode(bytes);
  const samples = { fjp: [], wasmBytes: [], wasmBytesWorker: [], wasmString: [], wasmStringWorker: [], wasmBytesMain: [], wasmStringMain: [] };
  const phases = { slice: [], parse: [], apply: [], serialize: [] };
  let check = null;
  for (let i = 0; i < warmup + rounds; i++) {
    // Alternate the order so neither side always runs on a freshly collected heap.
    const order = i % 2 ? ["wasm", "fjp"] : ["fjp", "wasm"];
    for (const side of order) {
      if (side === "fjp") {
        const r = fjpOnce(text);
        if (i >= warmup) samples.fjp.push(r.ms);
        check ??= { fjp: r.doc };
      } else {
        const b = await wasmOnce(bytes, "bytes");
        const s = await wasmOnce(bytes, "string");
        if (i >= warmup) {
          samples.wasmBytes.push(b.ms);
          samples.wasmBytesWorker.push(b.workerMs);
          samples.wasmString.push(s.ms);
          samples.wasmStringWorker.push(s.workerMs);
          samples.wasmBytesMain.push(b.mainMs);
          samples.wasmStringMain.push(s.mainMs);
          for (const k of Object.keys(phases)) phases[k].push(b.phases[k]);
        }
        if (check && !check.wasm) check.wasm = b.doc;
      }
    }
  }
  // Both sides must have computed the same document, or the race means nothing.
  const same = JSON.stringify(check.fjp) === JSON.stringify(check.wasm);
  if (!same) throw new Error(`${url}: wasm and fast-json-patch disagree on the document`);
  const med = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, round(median(v))]));
  const wasm = Math.min(med.wasmBytes, med.wasmString);
  return {
    bytes: bytes.length,
    nodes: check.wasm.nodes.length,
    rounds,
    median_ms: {
      fast_json_patch: med.fjp,
      wasm_worker_bytes_end_to_end: med.wasmBytes,
      wasm_worker_string_end_to_end: med.wasmString,
      wasm_in_worker_bytes: med.wasmBytesWorker,
      wasm_in_worker_string: med.wasmStringWorker,
      // Main-thread time of the wasm path: decoding + JSON.parse of the result on the page.
      wasm_main_thread_bytes: med.wasmBytesMain,
      wasm_main_thread_string: med.wasmStringMain,
    },
    wasm_phases_median_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, round(median(v))])),
    // > 1: the wasm worker (end to end, best variant) is that many times faster.
    ratio_fjp_over_wasm: round(med.fjp / wasm),
    ratio_fjp_over_wasm_in_worker: round(med.fjp / Math.min(med.wasmBytesWorker, med.wasmStringWorker)),
  };
}

window.runBench = async (sets) => {
  const out = {};
  for (const s of sets) out[s.patches] = await one(s.url, s);
  document.getElementById("out").textContent = JSON.stringify(out, null, 2);
  return out;
};
window.benchReady = true;

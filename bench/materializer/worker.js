// The wasm side, exactly as the UI's worker does it: the fetched envelope's bytes arrive
// (transferred), the snapshot document and the patch records are sliced out without parsing
// (the UI's own jsonslice.js), materialized by the wasm Materializer, and the document goes
// back as JSON bytes in a transferred buffer (or as a string, the other variant measured).

import init, { Materializer } from "/pkg/patchbay_materializer.js";
import { locate, view } from "/src/jsonslice.js";

const ready = init();

self.onmessage = async ({ data: { buffer, as } }) => {
  await ready;
  const t0 = performance.now();
  const bytes = new Uint8Array(buffer);
  const top = locate(bytes, { snapshot: { seq: true, document: true }, patches: true });
  const seq = Number(new TextDecoder().decode(view(bytes, top.snapshot.seq)));
  const t1 = performance.now();
  const m = new Materializer(view(bytes, top.snapshot.document), seq);
  const t2 = performance.now();
  const version = m.apply(view(bytes, top.patches));
  const t3 = performance.now();
  const out = as === "string" ? m.documentString() : m.document();
  const t4 = performance.now();
  m.free();
  // Where the time goes, for the report: slicing, parsing the snapshot, patching, serializing.
  const phases = { slice: t1 - t0, parse: t2 - t1, apply: t3 - t2, serialize: t4 - t3 };
  if (as === "string") self.postMessage({ text: out, version, phases, workerMs: performance.now() - t0 });
  else self.postMessage({ buffer: out.buffer, version, phases, workerMs: performance.now() - t0 }, [out.buffer]);
};

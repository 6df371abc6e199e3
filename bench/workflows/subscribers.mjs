// A worker thread of run.mjs's SSE phase: holds `count` live event streams on one workflow and
// records when each event arrives. Subscribers are spread over worker threads so that parsing
// 1,000 streams does not run on the event loop that sends the appends and times their responses,
// and so that the fan-out is not measured through one JavaScript thread alone.
//
// workerData: {url, wf, key, count, batch}. Messages to the parent:
//   {type: "connected", connectMs: [...]}          once every stream has sent `: connected`
//   {type: "error", message}                       a stream could not be opened
//   {type: "result", subs: [...], drainedAt}       after the parent's {type: "collect"}
// Times are absolute (performance.timeOrigin + performance.now(), ms), comparable across threads.

import http from "node:http";
import { parentPort, workerData } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

const { url, wf, key, count, batch } = workerData;
const now = () => performance.timeOrigin + performance.now();

// Streams never reuse a connection; one socket each, no pooling limit.
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

/**
 * One live subscriber: GET /events, parsed just enough to take each patch event's id (= seq).
 * The arrival time of a chunk is read before anything else is done with it; all events in one
 * chunk share it. Resolves once the server's `: connected` comment arrives.
 */
function subscribe() {
  return new Promise((resolve, reject) => {
    const sub = { seqs: [], times: [], other: 0, ended: false, req: null, connectMs: null };
    const t0 = now();
    let buf = "";
    let connected = false;
    const req = http.request(`${url}/api/v1/workflows/${wf}/events`, {
      agent,
      headers: { Authorization: `Bearer ${key}`, Accept: "text/event-stream" },
    });
    sub.req = req;
    req.on("response", (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`events: HTTP ${res.statusCode}`));
        return;
      }
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        const t = now();
        buf += chunk;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (frame.startsWith("id: ")) {
            // `id: <seq>\nevent: patch\ndata: {...}` (server/src/workflows/events.rs).
            const nl = frame.indexOf("\n");
            if (frame.startsWith("event: patch", nl + 1)) {
              sub.seqs.push(Number(frame.slice(4, nl)));
              sub.times.push(t);
            } else sub.other++;
          } else if (frame.startsWith(": connected")) {
            if (!connected) {
              connected = true;
              sub.connectMs = t - t0;
              resolve(sub);
            }
          } else if (!frame.startsWith(": heartbeat")) {
            sub.other++; // e.g. `event: deleted`
          }
        }
      });
      res.on("end", () => (sub.ended = true));
      res.on("error", () => (sub.ended = true));
    });
    req.on("error", (err) => {
      sub.ended = true;
      if (!connected) reject(err);
    });
    req.end();
  });
}

const subs = [];
try {
  // In batches, so the server sees a steady trickle of handshakes rather than all at once;
  // the batch size does not affect the delivery figures.
  for (let i = 0; i < count; i += batch) {
    subs.push(...(await Promise.all(Array.from({ length: Math.min(batch, count - i) }, subscribe))));
  }
  parentPort.postMessage({ type: "connected", connectMs: subs.map((s) => s.connectMs) });
} catch (err) {
  parentPort.postMessage({ type: "error", message: String(err?.message ?? err) });
}

parentPort.on("message", async (msg) => {
  if (msg.type !== "collect") return;
  // Wait for the stragglers: every stream should reach `expected` events.
  const until = now() + msg.timeoutMs;
  while (now() < until && subs.some((s) => s.seqs.length < msg.expected && !s.ended)) await sleep(5);
  const drainedAt = now();
  const ended = subs.map((s) => s.ended); // before we close them ourselves
  for (const s of subs) s.req.destroy();
  agent.destroy();
  parentPort.postMessage({
    type: "result",
    drainedAt,
    subs: subs.map((s, i) => ({ seqs: s.seqs, times: s.times, other: s.other, ended: ended[i] })),
  });
  parentPort.close();
});

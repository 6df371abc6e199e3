// Server-Sent Events over fetch(). EventSource cannot send an Authorization header, so the
// worker reads the stream itself: this parses it (per the WHATWG event-stream rules) and
// reconnects with Last-Event-ID, backing off while the server is away.

/** Splits a text stream into events; `onEvent({id, event, data})`, `onComment()`. */
export class EventStreamParser {
  constructor(onEvent, onComment = () => {}, onRetry = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.onRetry = onRetry;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.data = [];
    this.event = "";
    this.id = null;
  }

  push(text) {
    this.buffer += text;
    // Lines end in \n, \r\n or \r; a trailing \r may be half of a \r\n still in flight.
    let start = 0;
    for (;;) {
      const m = /\r\n|\n|\r/g;
      m.lastIndex = start;
      const hit = m.exec(this.buffer);
      if (!hit || (hit[0] === "\r" && hit.index === this.buffer.length - 1)) break;
      this.line(this.buffer.slice(start, hit.index));
      start = hit.index + hit[0].length;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return this.onComment(line.slice(1));
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
  }
}

/**
 * Keeps an event stream open: `lastEventId()` is asked at each (re)connect, so the caller
 * decides where to resume. `onState` hears "connecting" | "live" | "reconnecting" (+ detail).
 * A stream silent for `idleMs` (no event, no heartbeat) counts as dead and is reopened.
 */
export function follow(url, { key, lastEventId, onEvent, onState, idleMs = 45_000, fatal = () => false }) {
  const stopped = new AbortController();
  let retryMs = 1000;
  let failures = 0;

  async function connectOnce() {
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    stopped.signal.addEventListener("abort", abort);
    let idle;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(abort, idleMs);
    };
    try {
      const headers = { Accept: "text/event-stream", Authorization: `Bearer ${key}` };
      const last = lastEventId();
      if (last !== null && last !== undefined) headers["Last-Event-ID"] = String(last);
      touch();
      const res = await fetch(url, { headers, signal: attempt.signal, cache: "no-store" });
      if (!res.ok) {
        const err = new Error(`the event stream answered HTTP ${res.status}`);
        err.status = res.status;
        throw err;
      }
      failures = 0;
      onState("live");
      const parser = new EventStreamParser(
        (e) => {
          touch();
          onEvent(e);
        },
        touch,
        (ms) => (retryMs = ms),
      );
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        touch();
        parser.push(value);
      }
    } finally {
      clearTimeout(idle);
      stopped.signal.removeEventListener("abort", abort);
    }
  }

  (async () => {
    onState("connecting");
    while (!stopped.signal.aborted) {
      try {
        await connectOnce();
      } catch (err) {
        if (stopped.signal.aborted) break;
        if (fatal(err)) {
          onState("stopped", err.message);
          return;
        }
        failures++;
      }
      if (stopped.signal.aborted) break;
      // Exponential backoff with jitter, capped, so a restarting server isn't stampeded.
      const wait = Math.min(retryMs * 2 ** Math.min(failures, 4), 15_000) * (0.75 + Math.random() / 2);
      onState("reconnecting", `retrying in ${(wait / 1000).toFixed(1)} s`);
      await new Promise((r) => setTimeout(r, wait));
    }
  })();

  return { stop: () => stopped.abort() };
}

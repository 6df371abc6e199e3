// The page's side of the materializer worker: starts it, turns its messages into callbacks
// and promises, and decodes the transferred JSON bytes into the document object.

const decoder = new TextDecoder();

export class WorkflowWorker {
  /** `on`: {document(doc, info), live(state, detail), deleted(), error(err)} */
  constructor(on) {
    this.on = on;
    this.pending = new Map();
    this.nextReq = 1;
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module", name: "materializer" });
    this.worker.onmessage = (e) => this.receive(e.data);
    // A module that fails to load (syntax error, missing file) surfaces only here.
    this.worker.onerror = (e) => {
      e.preventDefault();
      on.error?.(new Error(e.message || "the materializer worker failed to start"));
    };
  }

  open(apiBase, key, workflowId) {
    this.worker.postMessage({ type: "open", apiBase, key, workflowId });
  }

  /** Fetch the patches the live document is missing (after a write of ours). */
  sync() {
    this.worker.postMessage({ type: "sync" });
  }

  /** Fetch the latest snapshot again and re-materialize (after a conflict). */
  reload() {
    this.worker.postMessage({ type: "reload" });
  }

  /** The document at a past version: resolves to {doc, info}. */
  history(version) {
    const reqId = this.nextReq++;
    this.worker.postMessage({ type: "history", reqId, version });
    return new Promise((resolve, reject) => this.pending.set(reqId, { resolve, reject }));
  }

  terminate() {
    this.worker.terminate();
    for (const p of this.pending.values()) p.reject(new Error("closed"));
    this.pending.clear();
  }

  receive(msg) {
    switch (msg.type) {
      case "document": {
        const t0 = performance.now();
        const doc = decode(msg.buffer);
        this.on.document?.(doc, { ...msg, buffer: undefined, parseMs: performance.now() - t0 });
        break;
      }
      case "history": {
        const p = this.pending.get(msg.reqId);
        this.pending.delete(msg.reqId);
        p?.resolve({ doc: decode(msg.buffer), info: { ...msg, buffer: undefined } });
        break;
      }
      case "live":
        this.on.live?.(msg.state, msg.detail);
        break;
      case "deleted":
        this.on.deleted?.();
        break;
      case "error": {
        const err = Object.assign(new Error(msg.message), msg);
        const p = msg.reqId && this.pending.get(msg.reqId);
        if (p) {
          this.pending.delete(msg.reqId);
          p.reject(err);
        } else this.on.error?.(err);
        break;
      }
    }
  }
}

function decode(buffer) {
  return JSON.parse(decoder.decode(new Uint8Array(buffer)));
}

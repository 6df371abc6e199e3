// Starts the real `patchbay` binary for a test: a free port (PATCHBAY_LISTEN=127.0.0.1:0, the
// URL read from its `listening on http://...` log line), a bootstrap admin token and a
// throwaway data directory. Set PATCHBAY_BIN to test another build.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";

export const repoRoot = resolve(import.meta.dirname, "../../..");

export function binaryPath() {
  if (process.env.PATCHBAY_BIN) return process.env.PATCHBAY_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(repoRoot, "target");
  return join(target, "debug", "patchbay");
}

export async function startServer({ env = {}, timeoutMs = 30_000 } = {}) {
  const bin = binaryPath();
  if (!existsSync(bin)) throw new Error(`no patchbay binary at ${bin}: build it (cargo build) or set PATCHBAY_BIN`);
  const dataDir = mkdtempSync(join(tmpdir(), "patchbay-ui-"));
  const admin = `admin-${randomBytes(12).toString("hex")}`;
  // SQLite and file blobs in the data directory, whatever the caller's environment says.
  const inherited = { ...process.env };
  delete inherited.PATCHBAY_DATABASE_URL;
  delete inherited.PATCHBAY_BLOB_URL;
  const child = spawn(bin, ["serve"], {
    env: {
      ...inherited,
      PATCHBAY_LISTEN: "127.0.0.1:0",
      PATCHBAY_DATA_DIR: dataDir,
      PATCHBAY_ADMIN_TOKEN: admin,
      PATCHBAY_HTTP__WORKERS: "2",
      PATCHBAY_LOG__LEVEL: "info,sqlx=warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs = [];
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`patchbay did not log "listening on" within ${timeoutMs} ms:\n${logs.join("\n")}`)), timeoutMs);
    const onLine = (line) => {
      logs.push(line);
      const m = line.match(/listening on (http:\/\/[^\s"]+)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1].replace(/\/$/, ""));
      }
    };
    for (const stream of [child.stdout, child.stderr]) {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          onLine(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      });
    }
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`patchbay exited (${code}) before listening:\n${logs.join("\n")}`));
    });
  });

  return {
    url,
    admin,
    logs,
    /** The server's process id (benchmarks read its CPU time and memory from /proc). */
    pid: child.pid,
    /** Calls the API with `key` (default: the admin token); returns {status, body, headers}. */
    async call(method, path, { key = admin, json, headers = {} } = {}) {
      const res = await fetch(url + path, {
        method,
        headers: { Authorization: `Bearer ${key}`, ...(json !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
        body: json !== undefined ? JSON.stringify(json) : undefined,
      });
      const text = await res.text();
      let body = text;
      try {
        body = text ? JSON.parse(text) : null;
      } catch {}
      return { status: res.status, body, headers: res.headers };
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// How the server serves the UI's files: public, right content types, ETag revalidation,
// problem+json for what is missing, `/` redirecting to the UI.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";

import { startServer } from "./support/server.js";

describe("UI files", () => {
  let server;
  before(async () => (server = await startServer()));
  after(() => server?.stop());

  const get = (path, headers = {}) => fetch(server.url + path, { headers, redirect: "manual" });

  it("redirects / to /ui/", async () => {
    const res = await get("/");
    assert.ok([302, 307, 308].includes(res.status), `status ${res.status}`);
    assert.equal(res.headers.get("location"), "/ui/");
  });

  it("serves index.html at /ui/ and /ui without a key, with a CSP", async () => {
    for (const path of ["/ui/", "/ui"]) {
      const res = await get(path);
      assert.equal(res.status, 200, path);
      assert.match(res.headers.get("content-type"), /^text\/html/);
      assert.match(res.headers.get("content-security-policy"), /script-src 'self' 'wasm-unsafe-eval'/);
      assert.match(await res.text(), /<base href="\/ui\/">/);
    }
  });

  it("gives modules, styles and wasm the types browsers insist on", async () => {
    for (const [path, type] of [
      ["/ui/src/app.js", /^text\/javascript/],
      ["/ui/src/worker.js", /^text\/javascript/],
      ["/ui/style.css", /^text\/css/],
      ["/ui/pkg/patchbay_materializer.js", /^text\/javascript/],
      ["/ui/pkg/patchbay_materializer_bg.wasm", /^application\/wasm$/],
    ]) {
      const res = await get(path);
      assert.equal(res.status, 200, `${path} (is web/pkg built? cargo xtask wasm)`);
      assert.match(res.headers.get("content-type"), type, path);
      assert.equal(res.headers.get("x-content-type-options"), "nosniff");
      await res.arrayBuffer();
    }
  });

  it("revalidates with a strong ETag", async () => {
    const first = await get("/ui/src/app.js");
    const etag = first.headers.get("etag");
    assert.match(etag, /^"[0-9a-f]{32}"$/);
    assert.equal(first.headers.get("cache-control"), "no-cache");
    const again = await get("/ui/src/app.js", { "If-None-Match": etag });
    assert.equal(again.status, 304);
    assert.equal((await again.arrayBuffer()).byteLength, 0);
  });

  it("answers 404 problem+json for missing files and paths that leave web/", async () => {
    for (const path of ["/ui/missing.js", "/ui/%2e%2e/Cargo.toml", "/ui/src/..%2f..%2fCargo.toml"]) {
      const res = await get(path);
      assert.equal(res.status, 404, path);
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      assert.equal((await res.json()).type, "urn:patchbay:problem:not-found");
    }
  });
});

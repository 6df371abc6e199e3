// `node run.mjs [--rounds N] [--out FILE]`: the wasm materializer in a Web Worker against
// fast-json-patch on the page, in one headless Chromium run, on a 1,000-node workflow with
// 100, 1,000 and 10,000 patches. Prints JSON (medians in ms, ratios) on stdout.
// Needs web/pkg: `cargo xtask wasm`. Needs `npm ci` here.

import http from "node:http";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { extname, join, normalize, resolve } from "node:path";
import { chromium } from "playwright-core";

import * as fixtures from "../../tests/browser/support/fixtures.js";

const here = import.meta.dirname;
const root = resolve(here, "../..");
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const ROUNDS = Number(arg("rounds", 15));
const SIZES = [100, 1000, 10000];

if (!existsSync(join(root, "web/pkg/patchbay_materializer_bg.wasm"))) {
  console.error("web/pkg is missing: run `cargo xtask wasm` first");
  process.exit(2);
}

// The workflow as GET /api/v1/workflows/{id} would send it: snapshot + patch records.
const base = fixtures.workflow(1000);
const { patches } = fixtures.patches(base, Math.max(...SIZES));
const data = new Map(
  SIZES.map((n) => [
    `/data/${n}.json`,
    JSON.stringify({
      id: "bench",
      name: base.name,
      version: n,
      snapshot: { seq: 0, digest: "sha256:bench", document: base },
      patches: patches.slice(0, n).map((ops, i) => ({ seq: i + 1, ops, author: "bench", created_at: "2026-01-01T00:00:00Z" })),
    }),
  ]),
);

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };
const MOUNTS = [
  ["/pkg/", join(root, "web/pkg")],
  ["/src/", join(root, "web/src")],
  ["/fjp/", join(here, "node_modules/fast-json-patch")],
  ["/", here],
];

const server = http.createServer((req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  // Cross-origin isolation gives performance.now() 5 µs resolution instead of 100 µs.
  const headers = { "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp", "Cache-Control": "no-store" };
  if (path === "/favicon.ico") {
    res.writeHead(204, headers);
    return res.end();
  }
  if (data.has(path)) {
    res.writeHead(200, { ...headers, "Content-Type": "application/json" });
    return res.end(data.get(path));
  }
  const [prefix, dir] = MOUNTS.find(([p]) => path.startsWith(p));
  const file = normalize(join(dir, path.slice(prefix.length) || "index.html"));
  if (!file.startsWith(dir) || !existsSync(file)) {
    res.writeHead(404, headers);
    return res.end("not found");
  }
  res.writeHead(200, { ...headers, "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" });
  res.end(readFileSync(file));
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: false,
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"],
});
const errors = [];
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(origin + "/");
  await page.waitForFunction(() => window.benchReady === true);
  const isolated = await page.evaluate(() => crossOriginIsolated);
  const sets = SIZES.map((n) => ({ patches: n, url: `/data/${n}.json`, rounds: n >= 10000 ? Math.max(5, Math.ceil(ROUNDS / 2)) : ROUNDS, warmup: 5 }));
  const results = await page.evaluate((s) => window.runBench(s), sets);
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  const report = {
    scenario: "materializer",
    workflow_nodes: 1000,
    chromium: browser.version(),
    cross_origin_isolated: isolated,
    note: "both sides start from the fetched envelope text and end with a document object on the page; wasm runs in a module Web Worker, fast-json-patch (validation off) on the page",
    results,
  };
  const json = JSON.stringify(report, null, 2);
  console.log(json);
  const out = arg("out", null);
  if (out) writeFileSync(out, json + "\n");
} finally {
  await browser.close();
  server.close();
}

// `node run.mjs [--rounds N] [--out FILE] [--native] [--markdown FILE]`: the wasm materializer
// in a Web Worker against fast-json-patch on the page, in one headless Chromium run, on a
// 1,000-node workflow with 100, 1,000 and 10,000 patches. Prints JSON (medians in ms, ratios) on
// stdout. `--native` also times the same crate natively on the same data (`cargo bench -p
// patchbay-materializer --bench materialize`); `--markdown` writes the bench/README.md section.
// Needs web/pkg: `cargo xtask wasm`. Needs `npm ci` here.

import http from "node:http";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
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
  if (process.argv.includes("--native")) report.native = native();
  const json = JSON.stringify(report, null, 2);
  console.log(json);
  const out = arg("out", null);
  if (out) writeFileSync(out, json + "\n");
  const markdown = arg("markdown", null);
  if (markdown) writeFileSync(markdown, toMarkdown(report));
} finally {
  await browser.close();
  server.close();
}

/** Times the same crate natively (release build) on exactly the data the browser got: one JSON
 * line per size from the `materialize` bench target. */
function native() {
  const dir = mkdtempSync(join(tmpdir(), "pb-mat-"));
  try {
    const snapshot = join(dir, "snapshot.json");
    writeFileSync(snapshot, JSON.stringify(base));
    return Object.fromEntries(
      SIZES.map((n) => {
        const file = join(dir, `patches-${n}.json`);
        writeFileSync(file, JSON.stringify(patches.slice(0, n)));
        const r = spawnSync("cargo", ["bench", "-q", "-p", "patchbay-materializer", "--bench", "materialize"], {
          cwd: root,
          env: { ...process.env, MATERIALIZER_BENCH_SNAPSHOT: snapshot, MATERIALIZER_BENCH_PATCHES: file },
          stdio: ["ignore", "pipe", "inherit"],
          encoding: "utf8",
        });
        if (r.status !== 0) throw new Error(`native bench failed (exit ${r.status})`);
        const line = r.stdout.trim().split("\n").pop();
        return [n, JSON.parse(line)];
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The bench/README.md section: one row per size, ratios > 1 mean the wasm side is faster. */
function toMarkdown(report) {
  const f = (x) => (x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const rows = Object.entries(report.results).map(([n, r]) => {
    const m = r.median_ms;
    const wasm = Math.min(m.wasm_worker_bytes_end_to_end, m.wasm_worker_string_end_to_end);
    const inWorker = Math.min(m.wasm_in_worker_bytes, m.wasm_in_worker_string);
    const nat = report.native?.[n]?.median_ms;
    const main = Math.min(m.wasm_main_thread_bytes, m.wasm_main_thread_string);
    const p = r.wasm_phases_median_ms;
    return `| ${Number(n).toLocaleString("en")} | ${f(m.fast_json_patch)} | ${f(wasm)} | ${f(main)} | ${f(inWorker)} | ${f(p.parse)} / ${f(p.apply)} / ${f(p.serialize)} | ${nat === undefined ? "–" : f(nat)} | ${r.ratio_fjp_over_wasm.toFixed(2)} |`;
  });
  return [
    `Chromium ${report.chromium}, ${report.workflow_nodes}-node workflow, medians in ms of ${report.results[SIZES[0]].rounds} rounds`,
    "(half as many at 10,000 patches). Both sides start from the fetched envelope text and end with",
    "a document object on the page. \"wasm end to end\" = transfer to the worker, slice, materialize,",
    "serialize, transfer back, `JSON.parse` on the page; \"on main thread\" is that last parse, the",
    "only part that blocks the page (fast-json-patch blocks it throughout); \"in worker\" is the part",
    "inside the worker;",
    "native = the same crate compiled for this CPU on the same data (parse + apply + serialize).",
    "",
    "| patches | fast-json-patch | wasm end to end | wasm on main thread | wasm in worker | parse / apply / serialize (wasm) | native | fast-json-patch ÷ wasm |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows,
    "",
  ].join("\n");
}

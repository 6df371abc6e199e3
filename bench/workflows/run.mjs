// Workflow write path and live fan-out, measured against the real release server:
//
//   node bench/workflows/run.mjs [--bin PATH] [--duration S] [--writers K] [--workflows M]
//                                [--subscribers N] [--sse-patches P] [--interval-ms MS]
//                                [--client-threads T] [--nodes NODES] [--out FILE]
//                                [--markdown [FILE]]
//
// 1. Append throughput: one writer appending sequentially to one workflow; K writers racing on
//    one workflow (optimistic concurrency: 409s are counted and retried on the version the
//    409 names); M workflows with one writer each, all at once.
// 2. SSE delivery latency: N live subscribers on one workflow, P appends spaced MS apart; for
//    every (subscriber, patch) pair the time from sending the append to the event's arrival,
//    and a check that every subscriber got every seq once, in order. The streams are held by T
//    worker threads (subscribers.mjs); the appends are sent and timed from the main thread.
//
// One JSON report goes to stdout (and --out FILE); progress goes to stderr. --markdown writes a
// summary (tables and notes) to FILE, or to stderr without one. See README.md.
// Node 20.11+ (tests/browser/support/server.js uses import.meta.dirname); no npm packages.

import http from "node:http";
import os from "node:os";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";

import { startServer } from "../../tests/browser/support/server.js";
import * as fixtures from "../../tests/browser/support/fixtures.js";

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
function arg(name, dflt) {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith("--")) return true; // a bare flag
  return v;
}
if (argv.includes("--help") || argv.includes("-h")) {
  // The header comment above is the usage text.
  console.error(readFileSync(new URL(import.meta.url), "utf8").split("\n\n")[0]);
  process.exit(0);
}

const targetDir = process.env.CARGO_TARGET_DIR ?? join(os.homedir(), ".cache/patchbay/target");
const opts = {
  bin: arg("bin", join(targetDir, "release/patchbay")),
  durationS: Number(arg("duration", 8)),
  writers: Number(arg("writers", 8)),
  workflows: Number(arg("workflows", 50)),
  subscribers: Number(arg("subscribers", 1000)),
  ssePatches: Number(arg("sse-patches", 200)),
  intervalMs: Number(arg("interval-ms", 20)),
  // One thread is enough for 1,000 streams and leaves the cores to the server on small machines.
  clientThreads: Number(arg("client-threads", 1)),
  nodes: Number(arg("nodes", 1000)),
  out: arg("out", null),
  // false, true (stderr) or a file name (`cargo xtask bench materializer` passes one).
  markdown: arg("markdown", false),
  // Per-request info logs would be piped into this process (startServer reads every line),
  // costing the load generator CPU; keep only warnings and the lifecycle line startServer
  // waits for ("listening on ...").
  logLevel: arg("log-level", "warn,patchbay::lifecycle=info"),
};
for (const k of ["durationS", "writers", "workflows", "subscribers", "ssePatches", "intervalMs", "clientThreads", "nodes"]) {
  if (!Number.isFinite(opts[k]) || opts[k] < 0) throw new Error(`${k}: not a number: ${opts[k]}`);
}
// tests/browser/support/fixtures.js's workflow() adds fixed cycle edges up to node 600.
if (opts.nodes < 601) throw new Error("--nodes: at least 601 (the shared test fixture needs them)");
if (!existsSync(opts.bin)) {
  console.error(`no patchbay binary at ${opts.bin}: cargo build --release (or pass --bin PATH)`);
  process.exit(2);
}

const log = (...a) => console.error("[bench workflows]", ...a);

// Both ends of every SSE connection live on this machine and count against one fd limit (the
// server inherits ours): N client sockets + N server sockets + slack.
const fdLimit = Number(execFileSync("sh", ["-c", "ulimit -n"]).toString().trim()) || Infinity;
if (opts.subscribers * 2 + 200 > fdLimit) {
  console.error(`ulimit -n is ${fdLimit}: too low for ${opts.subscribers} subscribers (client and server share it); raise it (ulimit -n 65536)`);
  process.exit(2);
}

// The server's defaults refuse what this benchmark does on purpose: one key opening 1,000
// streams at once, or sending thousands of appends a second, is over the per-key token bucket
// (auth.key_requests_per_second = 100, auth.key_burst = 200). Raise only those. Everything
// else (compaction every 100 patches, SQLite in WAL, 2 workers, document cache) stays default.
const serverEnv = {
  PATCHBAY_AUTH__KEY_REQUESTS_PER_SECOND: "1000000",
  PATCHBAY_AUTH__KEY_BURST: "1000000",
  PATCHBAY_LOG__LEVEL: opts.logLevel,
};

// ---------------------------------------------------------------------------------------------
// Small helpers

/** Percentiles by nearest rank over a copy; null for no samples. */
function stats(values) {
  if (!values.length) return null;
  const s = Float64Array.from(values).sort();
  const at = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
  let sum = 0;
  for (const v of s) sum += v;
  const r = (x) => Math.round(x * 1000) / 1000;
  return { n: s.length, p50: r(at(50)), p90: r(at(90)), p99: r(at(99)), max: r(s[s.length - 1]), mean: r(sum / s.length) };
}

const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

/** CPU seconds used so far by the server (all threads) and by this process. */
function cpuNow(pid) {
  let server = null;
  if (pid) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      server = (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime + stime
    } catch {}
  }
  const c = process.cpuUsage();
  return { server, client: (c.user + c.system) / 1e6, wall: performance.now() / 1000 };
}

/** Cores used between two cpuNow() samples: how busy each side was during a phase. */
function cpuBetween(a, b) {
  const wall = b.wall - a.wall;
  return {
    server_cores: a.server === null || b.server === null ? null : round((b.server - a.server) / wall, 2),
    client_cores: round((b.client - a.client) / wall, 2),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP: node:http with keep-alive agents (each appender gets its own connection); fetch would
// work too, but one client stack for both the appends and the SSE streams keeps timings alike.

let BASE; // the server's URL, set once it is listening

/** A JSON request; resolves {status, body} (body parsed when JSON) or rejects on a socket error. */
function request(agent, method, path, key, json) {
  return new Promise((resolve, reject) => {
    const body = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
    const headers = { Authorization: `Bearer ${key}` };
    if (body) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = body.length;
    }
    const req = http.request(BASE + path, { method, agent, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed = text;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch {}
        resolve({ status: res.statusCode, body: parsed });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * Patch number i. Every patch applies to any version of the document (it only replaces or sets
 * members of existing nodes), so a writer that lost a race can resend the same operations on the
 * version the 409 named, and the document keeps its size: each append pays the same validation
 * cost whatever the phase. One or two operations, like an editor's edits.
 */
function opsFor(i, nodes) {
  const j = (i * 7919) % nodes; // spread over the document
  switch (i % 3) {
    case 0:
      return [{ op: "replace", path: `/nodes/${j}/name`, value: `bench rename ${i}` }];
    case 1:
      return [
        { op: "test", path: `/nodes/${j}/id`, value: `n${String(j).padStart(4, "0")}` },
        { op: "add", path: `/nodes/${j}/config`, value: { retries: i % 4, note: `patch ${i}` } },
      ];
    default:
      return [{ op: "replace", path: "/metadata/revision", value: i }];
  }
}

// ---------------------------------------------------------------------------------------------
// Append phases

/**
 * Runs `writers` appenders for `durationMs`; writer w appends to workflows[w % workflows.length].
 * A writer sends base_version = the version it last saw; on 409 it takes `current_version` from
 * the problem body and resends the same operations (the rebase is trivial, see opsFor). It stops
 * starting new patches at the deadline; patches in flight finish.
 */
async function appendPhase({ name, key, workflows, writers, durationMs, nodes }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const known = new Map(workflows.map((w) => [w.id, w.version]));
  const attemptMs = []; // one per HTTP request
  const patchMs = []; // first attempt to 201, retries included
  const errors = {}; // status (or "network") -> count, besides 201 and 409
  let accepted = 0;
  let conflicts = 0;
  let gaveUp = 0;
  let counter = 0;
  const committed = new Map(workflows.map((w) => [w.id, 0]));

  const cpu0 = cpuNow(serverPid);
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  let tEnd = t0;

  async function writer(w) {
    const wf = workflows[w % workflows.length].id;
    while (performance.now() < deadline) {
      const ops = opsFor(counter++, nodes);
      const first = performance.now();
      for (let attempt = 0; ; attempt++) {
        const base = known.get(wf);
        const a = performance.now();
        let res;
        try {
          res = await request(agent, "POST", `/api/v1/workflows/${wf}/patches`, key, { base_version: base, ops });
        } catch (err) {
          errors.network = (errors.network ?? 0) + 1;
          break;
        }
        const b = performance.now();
        attemptMs.push(b - a);
        tEnd = Math.max(tEnd, b);
        if (res.status === 201) {
          accepted++;
          committed.set(wf, committed.get(wf) + 1);
          patchMs.push(b - first);
          // Another writer's newer 201 may already have moved `known` further.
          known.set(wf, Math.max(known.get(wf), res.body.version));
          break;
        }
        if (res.status === 409 && Number.isInteger(res.body?.current_version)) {
          conflicts++;
          known.set(wf, Math.max(known.get(wf), res.body.current_version));
          // A patch that keeps losing past the deadline is abandoned so the phase ends.
          if (performance.now() > deadline + 5000) {
            gaveUp++;
            break;
          }
          continue;
        }
        errors[res.status] = (errors[res.status] ?? 0) + 1;
        break;
      }
    }
  }

  await Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
  const cpu1 = cpuNow(serverPid);
  agent.destroy();

  // Every 201 must be one more version on the server: nothing lost, nothing doubled.
  const mismatches = [];
  for (const w of workflows) {
    const res = await request(undefined, "GET", `/api/v1/workflows/${w.id}`, key);
    const expected = w.version + committed.get(w.id);
    if (res.status !== 200 || res.body.version !== expected) mismatches.push({ id: w.id, expected, got: res.body?.version ?? res.status });
    w.version = res.body?.version ?? w.version;
  }

  const seconds = (tEnd - t0) / 1000;
  const result = {
    workflows: workflows.length,
    writers,
    seconds: round(seconds, 2),
    accepted,
    patches_per_s: round(accepted / seconds, 1),
    requests: attemptMs.length,
    conflicts_409: conflicts,
    // Each 409 was followed by a resend of the same patch (unless abandoned).
    retries: conflicts - gaveUp,
    abandoned_after_deadline: gaveUp,
    other_errors: errors,
    request_latency_ms: stats(attemptMs),
    patch_latency_ms_incl_retries: stats(patchMs),
    ...cpuBetween(cpu0, cpu1),
    // CPU per accepted patch (409s included in the cost): less sensitive to other load on the
    // machine than patches/s is.
    server_cpu_ms_per_patch:
      cpu0.server === null || !accepted ? null : round(((cpu1.server - cpu0.server) * 1000) / accepted, 2),
    versions_verified: mismatches.length === 0,
    ...(mismatches.length ? { version_mismatches: mismatches.slice(0, 5) } : {}),
  };
  log(`${name}: ${result.patches_per_s} patches/s, p50 ${result.request_latency_ms?.p50} ms, p99 ${result.request_latency_ms?.p99} ms, 409s ${conflicts}, errors ${JSON.stringify(errors)}`);
  return result;
}

// ---------------------------------------------------------------------------------------------
// SSE phase

/** Absolute time in ms, comparable with the subscriber threads' timestamps. */
const absNow = () => performance.timeOrigin + performance.now();

/** The server's own gauge of connected streams, from /metrics (null when not found). */
async function sseClientsGauge() {
  const res = await fetch(BASE + "/metrics");
  const text = await res.text();
  const m = text.match(/^patchbay_workflow_sse_clients(?:\{[^}]*\})? ([0-9.e+]+)$/m);
  return m ? Number(m[1]) : null;
}

/** Starts a subscriber thread (subscribers.mjs) and waits until its streams are all open. */
function startSubscriberThread(wf, key, count) {
  const worker = new Worker(new URL("./subscribers.mjs", import.meta.url), {
    workerData: { url: BASE, wf, key, count, batch: 100 },
  });
  const connected = new Promise((resolve, reject) => {
    worker.once("error", reject);
    worker.once("message", (msg) => (msg.type === "connected" ? resolve(msg.connectMs) : reject(new Error(msg.message))));
  });
  return { worker, connected };
}

/** Asks a subscriber thread for what its streams received, after waiting for stragglers. */
function collect(thread, expected, timeoutMs) {
  return new Promise((resolve, reject) => {
    thread.worker.once("error", reject);
    thread.worker.once("message", (msg) => (msg.type === "result" ? resolve(msg) : reject(new Error(msg.message))));
    thread.worker.postMessage({ type: "collect", expected, timeoutMs });
  });
}

async function ssePhase({ writeKey, readKey, nodes }) {
  const N = opts.subscribers;
  const P = opts.ssePatches;
  const T = Math.max(1, Math.min(opts.clientThreads, N || 1));
  const made = await request(undefined, "POST", "/api/v1/workflows", writeKey, { name: "sse bench", document: fixtures.workflow(nodes) });
  if (made.status !== 201) throw new Error(`create: ${made.status} ${JSON.stringify(made.body)}`);
  const wf = made.body.id;

  // Subscribers are split over T threads; the appends and their timing stay on this one.
  const tc0 = performance.now();
  const threads = Array.from({ length: T }, (_, t) => startSubscriberThread(wf, readKey, Math.floor(N / T) + (t < N % T ? 1 : 0)));
  const connectMs = (await Promise.all(threads.map((t) => t.connected))).flat();
  const connectSeconds = (performance.now() - tc0) / 1000;
  const gaugeBefore = await sseClientsGauge();
  log(`sse: ${connectMs.length} subscribers on ${T} threads connected in ${round(connectSeconds, 2)} s (server gauge ${gaugeBefore})`);
  await sleep(200); // let the last handshakes settle before the clock starts

  // Appends on a fixed schedule (patch i is sent at start + i * interval, or as soon as the
  // previous response came back if that is later): one writer, so no 409s to muddy timings.
  const appendAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const sent = new Map(); // seq -> absolute time the request was sent
  const answered = new Map(); // seq -> absolute time the 201 arrived
  const appendMs = [];
  const appendErrors = {};
  let version = 0;
  const cpu0 = cpuNow(serverPid);
  const start = performance.now();
  for (let i = 0; i < P; i++) {
    const wait = start + i * opts.intervalMs - performance.now();
    if (wait > 0) await sleep(wait);
    const seq = version + 1;
    const a = absNow();
    const res = await request(appendAgent, "POST", `/api/v1/workflows/${wf}/patches`, writeKey, { base_version: version, ops: opsFor(i, nodes) });
    const b = absNow();
    if (res.status !== 201) {
      appendErrors[res.status] = (appendErrors[res.status] ?? 0) + 1;
      continue;
    }
    version = res.body.version;
    if (version !== seq) throw new Error(`expected seq ${seq}, got ${version}`);
    sent.set(seq, a);
    answered.set(seq, b);
    appendMs.push(b - a);
  }
  const appendsDone = absNow();
  const expected = sent.size;
  const gaugeAfter = await sseClientsGauge();

  const results = await Promise.all(threads.map((t) => collect(t, expected, 15_000)));
  const cpu1 = cpuNow(serverPid);
  appendAgent.destroy();
  const subs = results.flatMap((r) => r.subs);
  const drainedAt = Math.max(...results.map((r) => r.drainedAt));

  // Verify: each subscriber got seqs 1..expected exactly once, in order.
  let missed = 0;
  let extra = 0;
  let outOfOrder = 0;
  let incomplete = 0;
  let endedEarly = 0;
  let otherEvents = 0;
  const deliveryMs = []; // arrival - append sent, for every (subscriber, patch)
  const firstBySeq = new Map();
  const lastBySeq = new Map();
  for (const s of subs) {
    const seen = new Set();
    let prev = 0;
    for (let k = 0; k < s.seqs.length; k++) {
      const seq = s.seqs[k];
      if (seq <= prev) outOfOrder++;
      prev = seq;
      if (seen.has(seq) || !sent.has(seq)) {
        extra++;
        continue;
      }
      seen.add(seq);
      const t = s.times[k];
      deliveryMs.push(t - sent.get(seq));
      firstBySeq.set(seq, Math.min(firstBySeq.get(seq) ?? Infinity, t));
      lastBySeq.set(seq, Math.max(lastBySeq.get(seq) ?? -Infinity, t));
    }
    const miss = expected - seen.size;
    missed += miss;
    if (miss) incomplete++;
    if (s.ended) endedEarly++;
    otherEvents += s.other;
  }

  // Per patch: how the fan-out to all subscribers spreads around the append's own response.
  const sendToLast = [];
  const respToFirst = [];
  const respToLast = [];
  const spread = [];
  for (const [seq, tSend] of sent) {
    if (!lastBySeq.has(seq)) continue;
    sendToLast.push(lastBySeq.get(seq) - tSend);
    respToFirst.push(firstBySeq.get(seq) - answered.get(seq));
    respToLast.push(lastBySeq.get(seq) - answered.get(seq));
    spread.push(lastBySeq.get(seq) - firstBySeq.get(seq));
  }

  const result = {
    subscribers: subs.length,
    client_threads: T,
    patches: expected,
    interval_ms: opts.intervalMs,
    connect: { seconds_for_all: round(connectSeconds, 2), time_to_first_byte_ms: stats(connectMs) },
    server_gauge_sse_clients: { before_appends: gaugeBefore, after_appends: gaugeAfter },
    expected_deliveries: expected * subs.length,
    received_deliveries: deliveryMs.length,
    missed_deliveries: missed,
    subscribers_missing_some: incomplete,
    duplicate_or_unknown_events: extra,
    out_of_order_events: outOfOrder,
    streams_ended_early: endedEarly,
    other_events: otherEvents,
    all_in_order_and_complete: missed === 0 && extra === 0 && outOfOrder === 0 && subs.length === N,
    append_latency_ms: stats(appendMs),
    append_errors: appendErrors,
    // The headline: for every (subscriber, patch), event arrival minus append request sent.
    delivery_from_append_sent_ms: stats(deliveryMs),
    per_patch: {
      append_sent_to_last_delivery_ms: stats(sendToLast),
      // Negative when events arrived before the 201 did: the server publishes to the hub on
      // commit, before the handler's response is written.
      append_response_to_first_delivery_ms: stats(respToFirst),
      append_response_to_last_delivery_ms: stats(respToLast),
      first_to_last_delivery_spread_ms: stats(spread),
    },
    last_patch: lastBySeq.has(expected)
      ? { seq: expected, append_response_to_last_delivery_ms: round(lastBySeq.get(expected) - answered.get(expected), 3) }
      : null,
    appends_done_to_all_drained_ms: round(drainedAt - appendsDone, 1),
    ...cpuBetween(cpu0, cpu1),
  };
  log(`sse: delivery p50 ${result.delivery_from_append_sent_ms?.p50} ms, p99 ${result.delivery_from_append_sent_ms?.p99} ms, max ${result.delivery_from_append_sent_ms?.max} ms, missed ${missed}`);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Main

/** The report as Markdown: two tables and the notes needed to read them. */
function markdown(r) {
  const a = r.append;
  const f = (x, d = 1) => (x === null || x === undefined ? "–" : String(round(x, d)));
  const errs = (x) => Object.entries(x).map(([k, v]) => `${k}: ${v}`).join(", ") || "0";
  const row = (label, x) =>
    `| ${label} | ${x.workflows} | ${x.writers} | ${f(x.patches_per_s, 0)} | ${f(x.request_latency_ms?.p50)} | ${f(x.request_latency_ms?.p99)} | ${f(x.patch_latency_ms_incl_retries?.p99)} | ${x.conflicts_409} | ${errs(x.other_errors)} | ${f(x.server_cpu_ms_per_patch, 2)} |`;
  const s = r.sse;
  const d = s.delivery_from_append_sent_ms;
  const pp = s.per_patch;
  const verified = Object.values(a).every((x) => x.versions_verified);
  return [
    `A ${r.options.nodes}-node workflow (${round(r.document_bytes / 1024, 0)} KiB of JSON), SQLite, 2 HTTP workers, ${r.options.duration_s} s per append phase; ` +
      `load average ${r.machine.load_average_before.join(" ")} before, ${r.machine.load_average_after?.join(" ")} after.`,
    "",
    "| appends | workflows | writers | patches/s | p50 ms | p99 ms | p99 ms incl. retries | 409s | other errors | server CPU ms/patch |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    row("one writer, sequential", a.single_writer),
    row("writers racing on one workflow", a.one_workflow_concurrent),
    row("one writer per workflow", a.many_workflows),
    "",
    `Versions read back match the 201s: ${verified ? "yes" : "**no**"}.`,
    "",
    "| SSE, one workflow | subscribers | patches | delivery p50 ms | p90 ms | p99 ms | max ms | missed | 201 → last delivery p50 / p99 ms | append p50 ms |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    `| ${s.interval_ms} ms apart | ${s.subscribers} | ${s.patches} | ${f(d?.p50)} | ${f(d?.p90)} | ${f(d?.p99)} | ${f(d?.max)} | ${s.missed_deliveries} | ${f(pp.append_response_to_last_delivery_ms?.p50)} / ${f(pp.append_response_to_last_delivery_ms?.p99)} | ${f(s.append_latency_ms?.p50)} |`,
    "",
    `Delivery = event arrival − append request sent, over all ${s.expected_deliveries} (subscriber, patch) pairs; ` +
      `every subscriber got every seq once and in order: ${s.all_in_order_and_complete ? "yes" : "**no**"}. ` +
      `During the SSE phase the server used ${f(s.server_cores, 2)} cores and the load generator ${f(s.client_cores, 2)} on the same machine.`,
  ].join("\n");
}

const machine = {
  cpu: os.cpus()[0]?.model ?? "unknown",
  nproc: os.availableParallelism?.() ?? os.cpus().length,
  kernel: `${os.type()} ${os.release()}`,
  node: process.version,
  load_average_before: os.loadavg().map((x) => round(x, 2)),
  fd_limit: fdLimit,
};

process.env.PATCHBAY_BIN = opts.bin; // startServer's binaryPath() reads it
log(`starting ${opts.bin}`);
const server = await startServer({ env: serverEnv });
BASE = server.url;
const serverPid = server.pid;
let report;
try {
  // A write key for the appends and a read key for the streams, in the admin's workspace,
  // minted like a user would.
  const mint = async (role) => {
    const res = await server.call("POST", "/api/v1/keys", { json: { role, label: `bench ${role}` } });
    if (res.status !== 201) throw new Error(`minting a ${role} key: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.key;
  };
  const writeKey = await mint("write");
  const readKey = await mint("read");

  const doc = fixtures.workflow(opts.nodes);
  const create = async (name) => {
    const res = await request(undefined, "POST", "/api/v1/workflows", writeKey, { name, document: doc });
    if (res.status !== 201) throw new Error(`create: ${res.status} ${JSON.stringify(res.body)}`);
    return { id: res.body.id, version: 0 };
  };
  const durationMs = opts.durationS * 1000;
  const common = { key: writeKey, nodes: opts.nodes };

  // Warm-up on a workflow of its own: connection setup, the allocator, SQLite's page cache
  // and V8's JIT, so the first measured phase is not the one paying for them.
  await appendPhase({ name: "warm-up", ...common, workflows: [await create("warm-up")], writers: 2, durationMs: 1500 });

  const append = {};
  append.single_writer = await appendPhase({ name: "one writer", ...common, workflows: [await create("sequential")], writers: 1, durationMs });
  append.one_workflow_concurrent = await appendPhase({
    name: `${opts.writers} writers, one workflow`,
    ...common,
    workflows: [await create("contended")],
    writers: opts.writers,
    durationMs,
  });
  const many = [];
  for (let i = 0; i < opts.workflows; i++) many.push(await create(`many ${i}`));
  append.many_workflows = await appendPhase({ name: `${opts.workflows} workflows`, ...common, workflows: many, writers: opts.workflows, durationMs });

  const sse = await ssePhase({ writeKey, readKey, nodes: opts.nodes });

  // The server's own counters, as a cross-check of what the client counted.
  const metricsText = await (await fetch(BASE + "/metrics")).text();
  // Labelled families (compactions by outcome) are summed; by-label values go alongside.
  const metric = (name) => {
    const series = {};
    for (const m of metricsText.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.e+]+)$`, "gm"))) series[m[1] ?? ""] = Number(m[2]);
    const values = Object.values(series);
    if (!values.length) return null;
    return Object.keys(series).length === 1 && "" in series ? series[""] : { total: values.reduce((a, b) => a + b, 0), ...series };
  };

  report = {
    scenario: "workflows",
    date: new Date().toISOString(),
    command: `node bench/workflows/run.mjs ${argv.join(" ")}`.trim(),
    machine,
    server: {
      bin: opts.bin,
      backend: "sqlite (WAL), file blobs, throwaway data dir",
      http_workers: 2,
      env_overrides: serverEnv,
    },
    options: {
      duration_s: opts.durationS,
      writers: opts.writers,
      workflows: opts.workflows,
      subscribers: opts.subscribers,
      sse_patches: opts.ssePatches,
      interval_ms: opts.intervalMs,
      client_threads: opts.clientThreads,
      nodes: opts.nodes,
    },
    // The document every workflow starts from, as sent to the server.
    document_bytes: Buffer.byteLength(JSON.stringify(doc)),
    append,
    sse,
    server_metrics: {
      patches_committed_total: metric("patchbay_workflow_patches_committed_total"),
      conflicts_total: metric("patchbay_workflow_conflicts_total"),
      compactions_total: metric("patchbay_workflow_compactions_total"),
    },
  };
} finally {
  await server.stop();
}
// Other work on the machine shows up here; compare with load_average_before.
report.machine.load_average_after = os.loadavg().map((x) => round(x, 2));

const json = JSON.stringify(report, null, 2);
console.log(json);
if (opts.out) writeFileSync(opts.out, json + "\n");
if (opts.markdown === true) console.error("\n" + markdown(report) + "\n");
else if (opts.markdown) writeFileSync(opts.markdown, markdown(report) + "\n");

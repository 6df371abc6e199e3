// The web UI end to end, in headless Chromium against the real server: sign in, open a
// 1,000-node workflow with 500 patches materialized by the wasm materializer in a Web Worker,
// check the drawing against the server's document, edit, watch a second client's patches
// arrive live, scrub history, and save screenshots to tests/browser/out/.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { launch, newPage } from "./support/browser.js";
import { startServer } from "./support/server.js";
import * as fixtures from "./support/fixtures.js";

const OUT = join(import.meta.dirname, "out");
const NODES = 1000;
const PATCHES = 500;

/** HTTP errors the UI causes on purpose and handles (see support/browser.js). */
function expectedHttpError(status, url) {
  const path = new URL(url).pathname;
  return (status === 409 && path.endsWith("/patches")) || (status === 404 && path === "/api/v1/plugins");
}

describe("web UI", { timeout: 110_000 }, () => {
  let server, browser, key, wf, one, two;
  const problems = [];
  const timings = {};

  before(async () => {
    const t0 = Date.now();
    // No compaction within the 500 patches: the page then fetches the base snapshot and all
    // 500 patches, and the worker materializes every one of them.
    server = await startServer({ env: { PATCHBAY_WORKFLOWS__COMPACTION_EVERY: "1000" } });
    key = await writeKey(server);
    const base = fixtures.workflow(NODES);
    const made = await server.call("POST", "/api/v1/workflows", { key, json: { name: base.name, document: base } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    wf = made.body.id;
    const { patches } = fixtures.patches(base, PATCHES);
    for (const [i, ops] of patches.entries()) {
      const res = await server.call("POST", `/api/v1/workflows/${wf}/patches`, { key, json: { base_version: i, ops } });
      assert.equal(res.status, 201, `patch ${i + 1}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.version, i + 1);
    }
    timings.setupMs = Date.now() - t0;
    browser = await launch();
    one = await newPage(browser, problems, "client one", expectedHttpError);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    console.log(`timings: ${JSON.stringify(timings)}`);
  });

  /** The server's materialized document (at `at`, or the latest). */
  async function serverDoc(at) {
    const res = await server.call("GET", `/api/v1/workflows/${wf}/document${at === undefined ? "" : `?at=${at}`}`, { key });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.document && !res.body.nodes ? res.body.document : res.body;
  }

  /** What the page drew: node ids with names, and the edges, from the SVG. */
  const drawn = (page) =>
    page.evaluate(() => ({
      nodes: [...document.querySelectorAll("#graph [data-node-id]")].map((g) => [g.dataset.nodeId, g.dataset.name]),
      edges: [...document.querySelectorAll("#graph path.edge")].map((p) => [p.dataset.from, p.dataset.to]),
    }));

  const expectedOf = (doc) => ({
    nodes: doc.nodes.map((n) => [n.id, typeof n.name === "string" && n.name ? n.name : n.id]),
    edges: doc.edges.map((e) => [e.from, e.to]),
  });

  function assertDrawn(actual, doc) {
    const want = expectedOf(doc);
    const byId = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
    assert.deepEqual([...actual.nodes].sort(byId), [...want.nodes].sort(byId), "drawn nodes (id, name) = the server's");
    assert.equal(actual.edges.length, want.edges.length, "drawn edge count = the server's");
    const key = (e) => `${e[0]}\u0000${e[1]}`;
    assert.deepEqual(actual.edges.map(key).sort(), want.edges.map(key).sort(), "drawn edges = the server's");
  }

  async function signIn(page) {
    await page.goto(server.url + "/");
    assert.match(page.url(), /\/ui\/#\/signin$/);
    await page.fill("#api-key", key);
    await page.click("#signin-form button[type=submit]");
    await page.waitForSelector(`#workflow-table tr[data-workflow-id="${wf}"]`);
  }

  async function openWorkflow(page) {
    await page.click(`#workflow-table tr[data-workflow-id="${wf}"] a`);
    await page.waitForFunction(() => /materialized in [\d.]+ ms in a Web Worker/.test(document.querySelector("#materialize-status")?.textContent ?? ""));
    await page.waitForSelector("#live-state.live");
  }

  /** Waits until the page has drawn `version` (the meta line says it). */
  const waitVersion = (page, version) =>
    page.waitForFunction((v) => document.querySelector("#history-label")?.dataset.version === String(v), version);

  it("signs in, materializes 1,000 nodes + 500 patches with wasm in a worker, and draws the server's document", async () => {
    const { page, requests } = one;
    const t0 = Date.now();
    await signIn(page);
    await openWorkflow(page);
    timings.openMs = Date.now() - t0;

    const status = await page.textContent("#materialize-status");
    const m = status.match(/^([\d,]+) patch(?:es)? materialized in ([\d.]+) ms in a Web Worker$/);
    assert.ok(m, `status line: ${status}`);
    const summary = await server.call("GET", `/api/v1/workflows/${wf}`, { key });
    assert.equal(Number(m[1].replace(/,/g, "")), summary.body.patches.length, "N = the patches after the latest snapshot");
    assert.equal(summary.body.version, PATCHES);
    timings.materializeMs = Number(m[2]);

    // The worker is a module worker that fetched and ran the wasm materializer.
    assert.ok(page.workers().some((w) => w.url().endsWith("/ui/src/worker.js")), "a worker runs worker.js");
    assert.ok(requests.some((u) => u.endsWith("/ui/pkg/patchbay_materializer_bg.wasm")), "the wasm materializer was fetched");

    await waitVersion(page, PATCHES);
    assertDrawn(await drawn(page), await serverDoc());
  });

  it("edits: add, rename, connect and delete reach the server as patches", async () => {
    const { page } = one;
    let version = PATCHES;

    await page.fill("#add-name", "Browser node");
    await page.fill("#add-type", "plugin");
    await page.click("#add-btn");
    await page.waitForSelector('#graph [data-node-id="browser-node"][data-name="Browser node"]');
    await waitVersion(page, ++version);
    let doc = await serverDoc();
    assert.deepEqual(doc.nodes.find((n) => n.id === "browser-node"), { id: "browser-node", type: "plugin", name: "Browser node" });

    await selectNode(page, "n0005");
    await page.fill("#rename-input", "Renamed in the browser");
    await page.click("#rename-btn");
    await page.waitForSelector('#graph [data-node-id="n0005"][data-name="Renamed in the browser"]');
    await waitVersion(page, ++version);
    doc = await serverDoc();
    assert.equal(doc.nodes.find((n) => n.id === "n0005").name, "Renamed in the browser");

    const edgesBefore = doc.edges.length;
    await page.fill("#connect-target", "browser-node");
    await page.click("#connect-btn");
    await page.waitForSelector('#graph path.edge[data-from="n0005"][data-to="browser-node"]');
    await waitVersion(page, ++version);
    doc = await serverDoc();
    assert.equal(doc.edges.length, edgesBefore + 1);
    assert.ok(doc.edges.some((e) => e.from === "n0005" && e.to === "browser-node"));

    const victim = "n0010";
    const touching = doc.edges.filter((e) => e.from === victim || e.to === victim).length;
    assert.ok(touching > 0, "the node to delete has edges");
    await selectNode(page, victim);
    await page.click("#delete-btn");
    await page.waitForSelector(`#graph [data-node-id="${victim}"]`, { state: "detached" });
    await waitVersion(page, ++version);
    doc = await serverDoc();
    assert.ok(!doc.nodes.some((n) => n.id === victim), "node deleted");
    assert.ok(!doc.edges.some((e) => e.from === victim || e.to === victim), "its edges deleted");
    assert.equal(doc.edges.length, edgesBefore + 1 - touching);

    assertDrawn(await drawn(page), doc);
  });

  it("shows a second client's patches live", async () => {
    two = await newPage(browser, problems, "client two", expectedHttpError);
    await signIn(two.page);
    await openWorkflow(two.page);

    // Through the second client's UI...
    const t0 = Date.now();
    await two.page.fill("#add-name", "From client two");
    await two.page.click("#add-btn");
    await one.page.waitForSelector('#graph [data-node-id="from-client-two"]', { timeout: 10_000 });
    timings.liveUiMs = Date.now() - t0;

    // ...and straight through the API.
    const doc = await serverDoc();
    const version = (await server.call("GET", `/api/v1/workflows/${wf}`, { key })).body.version;
    const i = doc.nodes.findIndex((n) => n.id === "n0042");
    const t1 = Date.now();
    const res = await server.call("POST", `/api/v1/workflows/${wf}/patches`, {
      key,
      json: { base_version: version, ops: [{ op: "replace", path: `/nodes/${i}/name`, value: "Renamed over the API" }] },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    await one.page.waitForSelector('#graph [data-node-id="n0042"][data-name="Renamed over the API"]', { timeout: 10_000 });
    timings.liveApiMs = Date.now() - t1;
    await waitVersion(one.page, version + 1);
    await waitVersion(two.page, version + 1);
    const latest = await serverDoc();
    assertDrawn(await drawn(one.page), latest);
    assertDrawn(await drawn(two.page), latest);
  });

  it("tells the user about a conflict and reloads", async () => {
    // Another writer gets in between: just before client two's patch reaches the server, a
    // patch on the same base version is posted over the API, so client two's is stale.
    const { page } = two;
    const isPatchPost = (url) => url.pathname.endsWith(`/workflows/${wf}/patches`);
    let raced = null;
    await page.route(isPatchPost, async (route) => {
      if (route.request().method() === "POST" && !raced) {
        const { base_version } = route.request().postDataJSON();
        raced = await server.call("POST", `/api/v1/workflows/${wf}/patches`, {
          key,
          json: { base_version, ops: [{ op: "replace", path: "/metadata/revision", value: -1 }] },
        });
        raced.base = base_version;
      }
      await route.continue();
    });
    await page.fill("#add-name", "Stale edit");
    await page.click("#add-btn");
    await page.waitForFunction(() => /changed .*while you edited/.test(document.querySelector("#edit-status")?.textContent ?? ""));
    await page.waitForFunction(() => /^Reloaded: /.test(document.querySelector("#materialize-status")?.textContent ?? ""));
    assert.equal(raced.status, 201, JSON.stringify(raced.body));
    await waitVersion(page, raced.base + 1);
    const doc = await serverDoc();
    assert.ok(!doc.nodes.some((n) => n.id === "stale-edit"), "the stale edit was not applied");
    assert.equal(doc.metadata.revision, -1);
    assertDrawn(await drawn(page), doc);
    await page.unroute(isPatchPost);
  });

  it("shows past versions with the history slider", async () => {
    const { page } = one;
    for (const at of [0, 250]) {
      await page.$eval("#history-slider", (el, v) => {
        el.value = String(v);
        el.dispatchEvent(new Event("input", { bubbles: true }));
      }, at);
      await page.waitForFunction((v) => {
        const l = document.querySelector("#history-label");
        return l?.dataset.version === String(v) && /materialized in/.test(l.textContent);
      }, at);
      assertDrawn(await drawn(page), await serverDoc(at));
      assert.match(await page.textContent("#history-label"), new RegExp(`^Version ${at}\\b`));
      assert.ok(await page.isDisabled("#add-btn"), "past versions are read-only");
    }
    await page.screenshot({ path: join(mkOut(), "history.png") });
    await page.click("#history-latest");
    assertDrawn(await drawn(page), await serverDoc());
  });

  it("lists plugins, or says the plugin API is not there yet", async () => {
    const { page } = one;
    await page.goto(server.url + "/ui/#/plugins");
    await page.waitForSelector("#plugin-table, #plugins-notice .notice, #plugin-list p");
    await page.screenshot({ path: join(mkOut(), "plugins.png") });
    const res = await server.call("GET", "/api/v1/plugins", { key });
    if (res.status === 404) assert.match(await page.textContent("#plugins-notice"), /not available on this server yet/);
    else assert.equal(res.status, 200);
  });

  it("saves a screenshot of the workflow and had no page errors", async () => {
    const { page } = one;
    await page.goto(server.url + `/ui/#/workflows/${wf}`);
    await page.waitForSelector("#live-state.live");
    await selectNode(page, "n0005");
    await page.screenshot({ path: join(mkOut(), "workflow.png") });
    assert.deepEqual(problems, [], "no page errors, console errors or failed workers");
  });
});

function mkOut() {
  mkdirSync(OUT, { recursive: true });
  return OUT;
}

async function selectNode(page, id) {
  await page.fill("#find-node", id);
  await page.press("#find-node", "Enter");
  await page.waitForFunction((i) => document.querySelector("#selected-meta")?.textContent.startsWith(`id ${i} `), id);
}

/** A write key of the admin's workspace, minted like a user would; the admin token otherwise. */
async function writeKey(server) {
  const res = await server.call("POST", "/api/v1/keys", { json: { role: "write", label: "browser tests" } });
  return res.status === 201 ? res.body.key : server.admin;
}

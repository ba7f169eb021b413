// DevTools inspection end to end: what a person sees of Tidesync in the
// browser — raw IndexedDB values, Performance panel entries, the console hook,
// levelled logs — and www/inspector.html driving a client from another page
// through BroadcastChannel alone. Screenshots go to docs/img/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { startTestServer } from "./support/server.mjs";
import { startTidesyncServer } from "./support/tidesync-server.mjs";
import { useServerAndBrowser, waitInPage } from "./support/browser.mjs";

const env = useServerAndBrowser(startTestServer);

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function openHarness(context, options, consoleSink) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  if (consoleSink) page.on("console", (message) => consoleSink.push(message));
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate((o) => window.openClient(o), options);
  return page;
}

/** Reads every object store of `database` in the page with the IndexedDB API. */
function readRawDatabase(page, database) {
  return page.evaluate(async (name) => {
    const request = (r) => new Promise((ok, fail) => { r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
    const db = await request(indexedDB.open(name));
    const stores = {};
    const tx = db.transaction([...db.objectStoreNames], "readonly");
    for (const store of db.objectStoreNames) {
      const values = await request(tx.objectStore(store).getAll());
      // What DevTools would show: anything not a plain object/array/primitive.
      const oddities = [];
      const walk = (value, path) => {
        if (value === null || ["string", "number", "boolean"].includes(typeof value)) return;
        if (Array.isArray(value)) return value.forEach((v, i) => walk(v, `${path}[${i}]`));
        if (Object.getPrototypeOf(value) !== Object.prototype) {
          oddities.push(`${path}: ${Object.prototype.toString.call(value)}`);
          return;
        }
        for (const [k, v] of Object.entries(value)) walk(v, `${path}.${k}`);
      };
      values.forEach((v, i) => walk(v, `${store}[${i}]`));
      stores[store] = { values, oddities, keyPath: tx.objectStore(store).keyPath };
    }
    db.close();
    return stores;
  }, database);
}

test("IndexedDB holds plain objects with ISO dates, readable in DevTools → Application", async () => {
  const context = await env.browser.newContext();
  const name = `idb-${Date.now()}`;
  env.server.script("/api/dt-idb/bad", [{ status: 422, body: { error: "title is required" } }]);
  const page = await openHarness(context, { name, logLevel: "silent" });
  await page.evaluate(() => window.client.register("rejected", { url: "/api/dt-idb/bad", data: { title: "" } }));
  await waitInPage(page, () => window.eventsNamed("sync:failed").length === 1);
  await context.setOffline(true);
  await page.evaluate(() => window.client.register("note-1", {
    url: "/api/dt-idb/notes", data: { title: "Buy milk", tags: ["home"], count: 2 },
    headers: { "X-Trace": "1" }, priority: "high", orderingKey: "notes",
  }));
  await page.evaluate(() => window.client.register("upload-1", {
    url: "/api/dt-idb/upload", body: new Blob([new Uint8Array([1, 2, 3])]), priority: "low",
  }));

  const stores = await readRawDatabase(page, `tidesync:${name}`);
  assert.deepEqual(Object.keys(stores).sort(), ["failed", "meta", "records", "tasks"]);
  // The one byte array is the binary request body, which is bytes by nature.
  for (const [store, { oddities }] of Object.entries(stores)) {
    const expected = store === "tasks" ? ["tasks[1].request.body.value: [object Uint8Array]"] : [];
    assert.deepEqual(oddities, expected, `${store}: no Dates, Maps, class instances or other byte arrays`);
  }
  const [task, upload] = stores.tasks.values;
  assert.equal(upload.id, "upload-1");
  assert.equal(upload.request.body.type, "bytes");
  assert.equal(stores.tasks.keyPath, "id");
  assert.equal(task.id, "note-1");
  assert.equal(task.priority, "high");
  assert.equal(task.orderingKey, "notes");
  assert.match(task.createdAt, ISO);
  assert.equal(task.request.method, "POST");
  assert.equal(task.request.url, "/api/dt-idb/notes");
  assert.equal(task.request.headers["X-Trace"] ?? task.request.headers["x-trace"], "1");
  assert.deepEqual(task.request.body, { type: "json", value: { title: "Buy milk", tags: ["home"], count: 2 } },
    "the JSON body is stored as an object, not as a string or bytes");

  const [dead] = stores.failed.values;
  assert.equal(dead.id, "rejected");
  assert.match(dead.failedAt, ISO);
  assert.equal(typeof dead.reason, "string");
  assert.equal(dead.task.errors.length, 1);
  assert.equal(dead.task.errors[0].class, "validation");
  assert.equal(dead.task.errors[0].status, 422);
  assert.match(dead.task.errors[0].at, ISO);
  assert.ok(stores.meta.values.every((entry) => typeof entry.key === "string" && "value" in entry), "meta is {key, value}");
  await context.close();
});

test("performance.measure('tidesync:flush') entries carry the flush's task counts and show in a performance trace", async () => {
  const context = await env.browser.newContext();
  const name = `perf-${Date.now()}`;
  env.server.script("/api/dt-perf/bad", [{ status: 422 }]);
  const page = await openHarness(context, { name, logLevel: "silent", autoFlush: false });
  await page.evaluate(() => Promise.all([
    window.client.register("a", { url: "/api/dt-perf/ok", data: { n: 1 } }),
    window.client.register("b", { url: "/api/dt-perf/ok", data: { n: 2 } }),
    window.client.register("c", { url: "/api/dt-perf/bad", data: { n: 3 } }),
  ]));
  // Record a trace as the Performance panel does: user timings land in it.
  await env.browser.startTracing(page, { categories: ["blink.user_timing"] });
  const report = await page.evaluate(() => window.client.flush());
  const trace = JSON.parse((await env.browser.stopTracing()).toString());
  assert.equal(report.sent, 3);
  const traced = trace.traceEvents.filter((e) => e.name === "tidesync:flush");
  assert.ok(traced.length >= 1, "the flush is in the trace the Performance panel shows");
  assert.ok(traced.every((e) => e.cat.includes("blink.user_timing")));
  const entries = await page.evaluate(() => performance.getEntriesByName("tidesync:flush").map((e) =>
    ({ entryType: e.entryType, duration: e.duration, startTime: e.startTime, detail: e.detail })));
  assert.ok(entries.length >= 1, "a measure per flush");
  const last = entries.at(-1);
  assert.equal(last.entryType, "measure");
  assert.ok(last.duration >= 0 && last.startTime > 0);
  assert.deepEqual(last.detail, { client: name, sent: 3, completed: 2, failed: 1, retried: 0, remaining: 0 });
  await context.close();
});

test("replication cycles appear as tidesync:push and tidesync:pull measures with counts (reference server)", async () => {
  const reference = await startTidesyncServer({ entityTypes: ["end_user"] });
  const context = await env.browser.newContext();
  try {
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e.message));
    await page.goto(`${reference.url}/healthz`); // any page of the server's origin
    const name = `perf-sync-${Date.now()}`;
    await env.browser.startTracing(page, { categories: ["blink.user_timing"] });
    const seen = await page.evaluate(async ({ name, token }) => {
      const tidesync = await import("/pkg/tidesync.js");
      await tidesync.default();
      const client = await tidesync.SyncClient.open({
        name, serverUrl: location.origin, token, entityTypes: ["end_user"], logLevel: "silent",
        autoFlush: false, // the mutations wait for sync() instead of leaving on their own
        live: false, // and no poked pull adds measures of its own
      });
      await client.put("end_user", { id: "ada", name: "Ada" });
      await client.put("end_user", { id: "grace", name: "Grace" });
      const report = await client.sync();
      const entries = (entry) => performance.getEntriesByName(entry).map((e) =>
        ({ entryType: e.entryType, duration: e.duration, detail: e.detail }));
      const result = { report, push: entries("tidesync:push"), pull: entries("tidesync:pull") };
      await client.close();
      return result;
    }, { name, token: reference.token("devtools") });
    const trace = JSON.parse((await env.browser.stopTracing()).toString());
    const traced = new Set(trace.traceEvents.map((e) => e.name).filter((n) => n.startsWith("tidesync:")));
    assert.deepEqual([...traced].sort(), ["tidesync:flush", "tidesync:pull", "tidesync:push"], "all three in a Performance trace");
    assert.ok(seen.report.pulled >= 1, `the records come back on pull: ${JSON.stringify(seen.report)}`);
    assert.ok(seen.push.length >= 1, "a push measure");
    assert.ok(seen.pull.length >= 1, "a pull measure");
    for (const entry of [...seen.push, ...seen.pull]) {
      assert.equal(entry.entryType, "measure");
      assert.ok(entry.duration >= 0);
      assert.equal(entry.detail.client, name, "detail names the client");
    }
    for (const entry of seen.push) assert.equal(typeof entry.detail.mutations, "number");
    const pushed = seen.push.reduce((sum, e) => sum + e.detail.mutations, 0);
    assert.equal(pushed, seen.report.pushed, `push detail counts what was pushed: ${JSON.stringify(seen.push)}`);
    const pulled = seen.pull.reduce((sum, e) => sum + e.detail.pulled, 0);
    assert.equal(pulled, seen.report.pulled, `pull detail counts the records: ${JSON.stringify(seen.pull)}`);
  } finally {
    await context.close();
    await reference.close();
  }
});

test("globalThis.__TIDESYNC__ lists open clients for the console and forgets closed ones", async () => {
  const context = await env.browser.newContext();
  const name = `hook-${Date.now()}`;
  env.server.script("/api/dt-hook/bad", [{ status: 422 }]);
  const page = await openHarness(context, { name, logLevel: "silent" });
  await page.evaluate(() => window.client.register("gone-wrong", { url: "/api/dt-hook/bad", data: {} }));
  await waitInPage(page, () => window.eventsNamed("sync:failed").length === 1);
  await context.setOffline(true);
  await page.evaluate(() => window.client.register("waiting", { url: "/api/dt-hook/ok", data: {}, priority: "low" }));

  const seen = await page.evaluate(async (n) => {
    const hook = globalThis.__TIDESYNC__;
    const entry = hook.clients.get(n);
    return {
      version: hook.version, expectedVersion: window.tidesync.version(), isMap: hook.clients instanceof Map,
      names: [...hook.clients.keys()], status: entry.status(), tasks: entry.tasks(), metrics: entry.metrics(),
      health: entry.health(), failed: await entry.failed(), snapshot: await entry.snapshot(),
    };
  }, name);
  assert.equal(seen.version, seen.expectedVersion);
  assert.ok(seen.isMap);
  assert.deepEqual(seen.names, [name]);
  assert.equal(seen.status.pendingCount, 1);
  assert.equal(seen.status.failedCount, 1);
  assert.equal(seen.status.online, false);
  assert.deepEqual(seen.tasks.map((t) => [t.id, t.priority]), [["waiting", "low"]]);
  assert.equal(seen.metrics.failed, 1);
  assert.ok(["healthy", "degraded", "critical"].includes(seen.health.status));
  assert.deepEqual(seen.failed.map((f) => f.id), ["gone-wrong"]);
  assert.equal(seen.snapshot.type, "snapshot");
  assert.equal(seen.snapshot.queuedCounts.low, 1);

  await page.evaluate(() => window.client.close());
  assert.equal(await page.evaluate((n) => globalThis.__TIDESYNC__.clients.has(n), name), false, "closed clients leave the map");
  await context.close();
});

test("logLevel 'debug' logs [tidesync:<name>] lines with objects, 'info' only flush summaries, 'silent' nothing", async () => {
  const context = await env.browser.newContext();
  const verbose = [];
  const debugName = `log-debug-${Date.now()}`;
  const page = await openHarness(context, { name: debugName, logLevel: "debug" }, verbose);
  await page.evaluate(() => window.client.register("logged", { url: "/api/dt-log/ok", data: { n: 1 } }));
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 1);
  await page.waitForTimeout(100); // console events reach Playwright asynchronously
  const ours = verbose.filter((m) => m.text().startsWith(`[tidesync:${debugName}]`));
  const complete = ours.find((m) => m.text().startsWith(`[tidesync:${debugName}] sync:complete`));
  assert.ok(complete, `a sync:complete debug line among: ${ours.map((m) => m.text()).join(" | ")}`);
  assert.equal(complete.type(), "debug");
  const args = complete.args();
  assert.equal(args.length, 2, "message plus one structured argument");
  const detail = await args[1].jsonValue();
  assert.equal(typeof detail, "object", "the task is passed as an object, not flattened into the text");
  assert.equal(detail.id, "logged");
  assert.equal(detail.request.url, "/api/dt-log/ok");

  // At info: one line per flush that sent something, with its counts; no debug lines.
  const informative = [];
  const infoName = `log-info-${Date.now()}`;
  const info = await openHarness(context, { name: infoName, logLevel: "info" }, informative);
  await info.evaluate(() => window.client.register("counted", { url: "/api/dt-log/ok", data: { n: 2 } }));
  await waitInPage(info, () => window.eventsNamed("sync:complete").length === 1);
  await info.waitForTimeout(100);
  const infoLines = informative.filter((m) => m.text().startsWith(`[tidesync:${infoName}]`));
  assert.deepEqual([...new Set(infoLines.map((m) => m.type()))], ["info"], "nothing below info");
  const flushLine = infoLines.find((m) => m.text().startsWith(`[tidesync:${infoName}] flush`));
  assert.ok(flushLine, `a flush summary among: ${infoLines.map((m) => m.text()).join(" | ")}`);
  const summary = await flushLine.args()[1].jsonValue();
  assert.equal(summary.client, infoName);
  assert.equal(summary.sent, 1);
  assert.equal(summary.completed, 1);

  // The same activity plus a failure (a warn at the default level) in silence.
  const quiet = [];
  const silentName = `log-silent-${Date.now()}`;
  env.server.script("/api/dt-log/bad", [{ status: 422 }]);
  const silent = await openHarness(context, { name: silentName, logLevel: "silent" }, quiet);
  await silent.evaluate(() => Promise.all([
    window.client.register("quiet-ok", { url: "/api/dt-log/ok", data: {} }),
    window.client.register("quiet-bad", { url: "/api/dt-log/bad", data: {} }),
  ]));
  await waitInPage(silent, () => window.eventsNamed("sync:complete").length === 1 && window.eventsNamed("sync:failed").length === 1);
  await silent.waitForTimeout(100);
  assert.deepEqual(quiet.map((m) => m.text()).filter((t) => t.includes("[tidesync")), [], "silent means silent");

  // Contrast: the default level (warn) does report the failure, as a warning.
  const defaults = [];
  const warnName = `log-warn-${Date.now()}`;
  env.server.script("/api/dt-log/bad2", [{ status: 422 }]);
  const warn = await openHarness(context, { name: warnName }, defaults);
  await warn.evaluate(() => window.client.register("loud-bad", { url: "/api/dt-log/bad2", data: {} }));
  await waitInPage(warn, () => window.eventsNamed("sync:failed").length === 1);
  await warn.waitForTimeout(100);
  const warnings = defaults.filter((m) => m.text().startsWith(`[tidesync:${warnName}]`));
  assert.deepEqual(warnings.map((m) => m.type()), ["warning"], "one warning, no debug noise by default");
  assert.match(warnings[0].text(), /sync:failed/);
  await context.close();
});

test("www/inspector.html shows a client from another page and retries/discards its dead letters", async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const name = `inspect-${Date.now()}`;
  const app = await openHarness(context, {
    name, logLevel: "silent", concurrency: 2,
    retry: { baseDelay: 60000, maxDelay: 60000, maxRetries: 5, jitter: false },
  });

  const inspector = await context.newPage();
  inspector.on("pageerror", (e) => console.error("inspector error:", e.message));
  await inspector.goto(`${env.server.url}/inspector.html?name=${encodeURIComponent(name)}`);
  // The inspector has no access to the app's objects, only to the channel.
  assert.equal(await inspector.evaluate(() => globalThis.__TIDESYNC__), undefined);
  await inspector.waitForSelector('#link[data-state="live"]');

  // Delivered work, in waves so the sparklines have a history.
  for (let wave = 0; wave < 6; wave++) {
    await app.evaluate((w) => Promise.all(Array.from({ length: 3 + w }, (_, i) =>
      window.client.register(`order-${w}-${i}`, { url: "/api/dt-insp/orders", data: { w, i } }))), wave);
    await waitInPage(app, (n) => window.client.getStatus().pendingCount === 0 && window.eventsNamed("sync:complete").length >= n,
      [3, 7, 12, 18, 25, 33][wave]);
    await app.waitForTimeout(180);
  }
  const delivered = 33;
  await waitInPage(inspector, (n) => document.getElementById("completed-count").textContent === String(n), delivered);

  // Two dead letters (422), and one task waiting on a long backoff after a 503.
  env.server.script("/api/dt-insp/invoices", [
    { status: 422, body: { error: "total must be positive" } },
    { status: 422, body: { error: "currency missing" } },
  ]);
  env.server.script("/api/dt-insp/flaky", [{ status: 503 }]);
  await app.evaluate(async () => {
    await window.client.register("invoice-17", { url: "/api/dt-insp/invoices", data: { total: -3 }, priority: "high" });
    await window.client.register("invoice-18", { url: "/api/dt-insp/invoices", data: { total: 4 }, priority: "high" });
    await window.client.register("profile-sync", { url: "/api/dt-insp/flaky", method: "PUT", data: { bio: "…" }, priority: "normal" });
  });
  await waitInPage(app, () => window.eventsNamed("sync:failed").length === 2 && window.eventsNamed("sync:retry").length === 1);

  // Work that is in flight (held at the network layer) and queued behind it.
  const held = [];
  let releasing = false;
  await app.route("**/api/dt-insp/uploads", (route) => (releasing ? route.continue() : held.push(route)));
  await app.evaluate(async () => {
    const jobs = [["photo-1", "high"], ["photo-2", "high"], ["photo-3", "high"], ["thumb-1", "normal"],
                  ["thumb-2", "normal"], ["analytics-1", "low"], ["analytics-2", "low"], ["analytics-3", "low"]];
    await Promise.all(jobs.map(([id, priority]) => window.client.register(id, id === "photo-3"
      ? { url: "/api/dt-insp/uploads", body: new Blob([new Uint8Array([0xff, 0xd8, 0xff, 0xe0])], { type: "image/jpeg" }), priority }
      : { url: "/api/dt-insp/uploads", data: { id }, priority })));
  });
  await waitInPage(app, () => window.client.getStatus().inFlightCount === 2);

  const text = (id) => inspector.evaluate((i) => document.getElementById(i).textContent, id);
  await waitInPage(inspector, () => document.getElementById("inflight-count").textContent === "2"
    && document.getElementById("failed-count").textContent === "2"
    && document.getElementById("queued-count").textContent === "7");
  assert.equal(await text("completed-count"), String(delivered));
  assert.equal(await text("count-high"), "1", "photo-3 waits: photo-1 and photo-2 are in flight");
  assert.equal(await text("count-normal"), "3", "thumb-1, thumb-2 and the backed-off profile-sync");
  assert.equal(await text("count-low"), "3");
  assert.equal(await text("online"), "online");
  assert.equal(await text("circuit"), "closed");
  const inFlightIds = await inspector.$$eval("#inflight-rows tr[data-id]", (rows) => rows.map((r) => r.dataset.id).sort());
  assert.deepEqual(inFlightIds, ["photo-1", "photo-2"]);
  const lowIds = await inspector.$$eval("#queue-low tr[data-id]", (rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(lowIds, ["analytics-1", "analytics-2", "analytics-3"], "queue order within a priority");
  const backedOff = await inspector.$eval('#queue-normal tr[data-id="profile-sync"]', (row) => row.textContent);
  assert.match(backedOff, /retryable 503/, "the queued task shows its last error");
  assert.match(backedOff, /in \d+(\.\d)? s/, "and when it will be tried again");
  const failedRow = await inspector.$eval('#failed-rows tr[data-id="invoice-17"]', (row) => row.textContent);
  assert.match(failedRow, /validation 422/, "the failed task shows its error");
  assert.match(failedRow, /POST \/api\/dt-insp\/invoices/);
  const sparkPoints = await inspector.$eval("#spark-throughput polyline", (line) => line.getAttribute("points").split(" ").length);
  assert.ok(sparkPoints >= 3, `the throughput sparkline has a history (${sparkPoints} points)`);

  mkdirSync("docs/img", { recursive: true });
  await inspector.screenshot({ path: "docs/img/inspector.png", fullPage: true });

  // The IndexedDB tab: a read-only view of the raw stores, as DevTools shows them.
  await inspector.click("#tab-idb");
  await inspector.waitForSelector('#idb-stores [data-store="tasks"]');
  const idbSummary = await text("idb-summary");
  assert.match(idbSummary, new RegExp(`tidesync:${name}`));
  assert.match(idbSummary, /tasks: 9/, "8 uploads + profile-sync");
  assert.match(idbSummary, /failed: 2/);
  const taskValues = await inspector.$eval('#idb-stores [data-store="tasks"]', (card) => card.textContent);
  assert.match(taskValues, /createdAt: "\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"/, "ISO dates");
  assert.doesNotMatch(taskValues, /⚠/, "no Date objects or class instances flagged");
  assert.match(taskValues, /Uint8Array\(4 bytes\) ff d8 ff e0/, "a binary body shows as its bytes");
  await inspector.setViewportSize({ width: 1280, height: 1200 });
  await inspector.screenshot({ path: "docs/img/indexeddb.png", fullPage: false });
  await inspector.setViewportSize({ width: 1280, height: 900 });
  await inspector.click("#tab-outbox");

  // Release the held requests: everything queued is delivered.
  releasing = true;
  for (const route of held.splice(0)) await route.continue();
  await waitInPage(inspector, () => document.getElementById("inflight-count").textContent === "0"
    && document.getElementById("queued-count").textContent === "1"); // profile-sync waits out its backoff
  assert.equal(await text("completed-count"), String(delivered + 8));

  // Retry a dead letter from the inspector; the server now answers 201.
  env.server.script("/api/dt-insp/invoices", [{ status: 201 }]);
  const before = env.server.received("/api/dt-insp/invoices").length;
  await inspector.click('#failed-rows button[data-action="retry"][data-id="invoice-17"]');
  await waitInPage(inspector, () => document.getElementById("failed-count").textContent === "1"
    && !document.querySelector('#failed-rows tr[data-id="invoice-17"]'));
  await waitInPage(app, () => window.eventsNamed("sync:complete").some((e) => e.args[0].id === "invoice-17"));
  await waitInPage(inspector, (n) => document.getElementById("completed-count").textContent === String(n), delivered + 9);
  const resent = env.server.received("/api/dt-insp/invoices").slice(before);
  assert.deepEqual(resent.map((r) => r.body), [{ total: -3 }], "the retried task is sent once more");
  assert.equal(await app.evaluate(() => window.client.getTaskStatus("invoice-17").then((s) => s.state)), "complete");

  // Discard the other one.
  await inspector.click('#failed-rows button[data-action="discard"][data-id="invoice-18"]');
  await waitInPage(inspector, () => document.getElementById("failed-count").textContent === "0"
    && document.querySelector("#failed-rows").textContent.includes("no failed tasks"));
  assert.deepEqual(await app.evaluate(() => window.client.listFailed()), [], "gone from the dead letters");
  assert.equal(env.server.received("/api/dt-insp/invoices").length, before + 1, "a discarded task is not sent");
  assert.match(await text("command-result"), /invoice-18 discarded/);

  // Connectivity and closing show up too.
  await context.setOffline(true);
  await waitInPage(inspector, () => document.getElementById("online").textContent === "offline");
  await context.setOffline(false);
  await app.evaluate(() => window.client.close());
  await inspector.waitForSelector('#link[data-state="closed"]');
  await context.close();
});

test("the inspector sees a client living in a worker, next to the page's own instance", async () => {
  const context = await env.browser.newContext();
  const name = `worker-${Date.now()}`;
  const app = await openHarness(context, { name, logLevel: "silent" });
  const inspector = await context.newPage();
  inspector.on("pageerror", (e) => console.error("inspector error:", e.message));
  await inspector.goto(`${env.server.url}/inspector.html?name=${encodeURIComponent(name)}`);
  await inspector.waitForSelector('#link[data-state="live"]');

  await app.evaluate(async (n) => {
    window.worker = new Worker(`/pages/devtools-worker.mjs?name=${encodeURIComponent(n)}`, { type: "module" });
    window.workerMessages = [];
    await new Promise((ok, fail) => {
      window.worker.onmessage = ({ data }) => { window.workerMessages.push(data); if (data === "ready") ok(); };
      window.worker.onerror = (e) => fail(new Error(e.message));
    });
  }, name);
  // Two contexts run the same client: the inspector offers both.
  await waitInPage(inspector, () => document.querySelectorAll("#instance option").length === 2);
  const scopes = await inspector.$$eval("#instance option", (options) => options.map((o) => o.textContent.split(" ")[0]).sort());
  assert.deepEqual(scopes, ["window", "worker"]);

  // Work done in the worker shows up when its instance is selected.
  await app.evaluate(() => new Promise((ok) => {
    window.worker.addEventListener("message", ({ data }) => data?.registered && ok());
    window.worker.postMessage({ register: ["from-worker", { url: "/api/dt-worker/ok", data: { where: "worker" } }] });
  }));
  const workerInstance = await inspector.$$eval("#instance option", (options) =>
    options.find((o) => o.textContent.startsWith("worker")).value);
  await inspector.selectOption("#instance", workerInstance);
  await waitInPage(inspector, () => document.getElementById("link").textContent === "live · worker"
    && document.getElementById("completed-count").textContent === "1");
  assert.deepEqual(env.server.received("/api/dt-worker/ok").map((r) => r.body), [{ where: "worker" }]);
  await context.close();
});

test("the inspector notices the app page leaving and follows the client into the reloaded page", async () => {
  const context = await env.browser.newContext();
  const name = `reload-insp-${Date.now()}`;
  // The endpoint is unreachable (network error) until `reachable`: the task stays queued, retried every 300 ms.
  const options = { name, logLevel: "silent", retry: { baseDelay: 300, maxDelay: 300, jitter: false },
                    circuitBreaker: { failureThreshold: 100000 } };
  let reachable = false;
  const app = await openHarness(context, options);
  await app.route("**/api/dt-reload/**", (route) => (reachable ? route.continue() : route.abort("internetdisconnected")));
  const inspector = await context.newPage();
  await inspector.goto(`${env.server.url}/inspector.html?name=${encodeURIComponent(name)}`);
  await inspector.waitForSelector('#link[data-state="live"]');
  await app.evaluate(() => window.client.register("survivor", { url: "/api/dt-reload/ok", data: {} }));
  const waiting = () => document.querySelector('tr[data-id="survivor"]') !== null
    && Number(document.getElementById("queued-count").textContent) + Number(document.getElementById("inflight-count").textContent) === 1;
  await waitInPage(inspector, waiting);

  await app.goto("about:blank"); // pagehide, without close()
  await inspector.waitForSelector('#link[data-state="closed"]');

  await app.goto(`${env.server.url}/pages/harness.html`);
  await app.waitForFunction(() => window.harnessReady === true);
  await app.evaluate((o) => window.openClient(o), options);
  await inspector.waitForSelector('#link[data-state="live"]');
  await waitInPage(inspector, waiting);
  assert.equal(await inspector.$eval("#instance", (select) => select.hidden), true, "the old instance is dropped");
  assert.equal(await inspector.$$eval("#instance option", (o) => o.length), 1);

  reachable = true;
  await waitInPage(inspector, () => document.getElementById("queued-count").textContent === "0"
    && document.getElementById("completed-count").textContent === "1");
  assert.equal(env.server.received("/api/dt-reload/ok").length, 1);
  await context.close();
});

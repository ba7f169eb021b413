// The same pkg/ in a module service worker and in a dedicated worker: the
// example of www/sw-example/ driven in Chromium, with the network switched off
// and on, pages closed, and the worker's `sync` event fired through the
// Chrome DevTools Protocol (ServiceWorker.dispatchSyncEvent).
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "./support/server.mjs";
import { useServerAndBrowser } from "./support/browser.mjs";

const env = useServerAndBrowser(startTestServer);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` in Node until it is truthy, or fails with `message`. */
async function until(predicate, message, timeout = 20000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(50);
  }
  assert.fail(`timed out after ${timeout} ms: ${message}`);
}

/** Opens the example page with its tasks going to `endpoint` on the test server. */
async function openExample(context, endpoint) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${env.server.url}/sw-example/?endpoint=${encodeURIComponent(endpoint)}`);
  await page.waitForFunction(() => window.app?.ready === true, undefined, { timeout: 20000 });
  return page;
}

/**
 * A CDP session on a blank page of the same context (so it outlives the app's
 * page), with the ServiceWorker domain enabled and the example's registration.
 */
async function serviceWorkerSession(context) {
  const blank = await context.newPage();
  const cdp = await context.newCDPSession(blank);
  const registrations = new Map();
  cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations: list }) => {
    for (const r of list) registrations.set(r.scopeURL, r);
  });
  await cdp.send("ServiceWorker.enable");
  const scope = `${env.server.url}/sw-example/`;
  await until(() => registrations.has(scope), `a service worker registration for ${scope}`);
  return { blank, cdp, registrationId: registrations.get(scope).registrationId };
}

/** Bodies received at `path`, asserting that each id arrived exactly once. */
function assertEachOnce(path, ids) {
  const received = env.server.received(path).map((r) => r.body.id);
  assert.deepEqual([...received].sort(), [...ids].sort(), `each task delivered exactly once at ${path}`);
}

test("service worker: tasks queued offline are delivered by the worker's sync event (CDP dispatchSyncEvent) with no page of the app open", async () => {
  const context = await env.browser.newContext();
  const path = "/api/sw/dispatch";
  const page = await openExample(context, path);
  const { blank, cdp, registrationId } = await serviceWorkerSession(context);

  await context.setOffline(true);
  // Queued without requestBackgroundSync(), so that the event fired below is
  // the only thing that can wake the worker (Chromium's own trigger is the
  // next test).
  const ids = await page.evaluate(async (url) => {
    const ids = [];
    for (let i = 0; i < 20; i++) {
      const id = `dispatch-${i}`;
      await window.app.client.register(id, { url, data: { id }, priority: i % 2 ? "low" : "high" });
      ids.push(id);
    }
    return ids;
  }, path);
  assert.equal(await page.evaluate(() => window.app.client.getStatus().pendingCount), 20);
  await page.close();
  await context.setOffline(false);
  await sleep(1000);
  assert.equal(env.server.received(path).length, 0, "nothing is sent before the sync event");
  assert.deepEqual(context.pages().map((p) => p.url()), ["about:blank"], "no page of the app is open");

  await cdp.send("ServiceWorker.dispatchSyncEvent", {
    origin: env.server.url, registrationId, tag: "tidesync", lastChance: false,
  });
  await until(() => env.server.received(path).length >= 20, "the worker delivers the 20 tasks");
  await sleep(300);
  assertEachOnce(path, ids);
  assert.deepEqual(context.pages().map((p) => p.url()), ["about:blank"], "still no page of the app open");

  // Back on the page: the shared database is empty, nothing is sent again.
  const again = await openExample(context, path);
  assert.equal(await again.evaluate(() => window.app.client.getStatus().pendingCount), 0);
  assert.deepEqual(await again.evaluate(() => window.app.client.listQueued()), []);
  await sleep(300);
  assert.equal(env.server.received(path).length, 20);
  await blank.close();
  await context.close();
});

test("service worker: a 503 during the sync event is retried on the worker's own backoff timer, no page open", async () => {
  const context = await env.browser.newContext();
  const path = "/api/sw/retry";
  env.server.script(path, [{ status: 503, headers: { "retry-after": "1" } }]); // retry in 1 s
  const page = await openExample(context, path);
  const { blank, cdp, registrationId } = await serviceWorkerSession(context);
  await context.setOffline(true);
  await page.evaluate((url) => window.app.client.register("retry-1", { url, data: { id: "retry-1" } }), path);
  await page.close();
  await context.setOffline(false);
  await sleep(500);
  assert.equal(env.server.received(path).length, 0);

  const started = Date.now();
  await cdp.send("ServiceWorker.dispatchSyncEvent", { origin: env.server.url, registrationId, tag: "tidesync", lastChance: false });
  await until(() => env.server.received(path).length >= 2, "503, then the retry from the worker's timer", 30000);
  const [first, second] = env.server.received(path);
  assert.equal(first.headers["idempotency-key"], second.headers["idempotency-key"], "the retry is the same task");
  assert.ok(second.at - first.at >= 900, `the retry waited for the 1 s timer (${second.at - first.at} ms)`);
  assert.ok(Date.now() - started < 30000);
  assert.deepEqual(context.pages().map((p) => p.url()), ["about:blank"], "no page of the app open");
  await sleep(300);
  assert.equal(env.server.received(path).length, 2, "delivered once after the retry");
  await blank.close();
  await context.close();
});

test("service worker: requestBackgroundSync() registers the tag offline and Chromium fires sync itself when the network returns, page closed", async () => {
  const context = await env.browser.newContext();
  const path = "/api/sw/background";
  const page = await openExample(context, path);
  assert.equal(await page.evaluate(() => window.app.hasBackgroundSync), true, "Chromium has Background Sync");
  const keepAlive = await context.newPage(); // a blank page keeps the context open

  await context.setOffline(true);
  const saved = [];
  for (let i = 0; i < 5; i++) saved.push(await page.evaluate((i) => window.app.saveNote(`note ${i}`), i));
  assert.ok(saved.every((s) => s.registered === true), "requestBackgroundSync() resolved true");
  const tags = await page.evaluate(async () => (await navigator.serviceWorker.ready).sync.getTags());
  assert.deepEqual(tags, ["tidesync"], "the sync tag is registered while offline");
  await page.close();
  await sleep(1000);
  assert.equal(env.server.received(path).length, 0, "nothing leaves while offline");

  const back = Date.now();
  await context.setOffline(false);
  await until(() => env.server.received(path).length >= 5, "the browser's sync event delivers the 5 notes");
  const firstDelivery = env.server.received(path)[0].at - back;
  assert.ok(firstDelivery < 1000, `reconnection to first delivery well under a second (${firstDelivery} ms)`);
  await sleep(300);
  assertEachOnce(path, saved.map((s) => s.id));
  assert.equal(env.server.received(path)[0].body.text, "note 0");
  assert.deepEqual(context.pages().map((p) => p.url()), ["about:blank"], "delivered with no page of the app open");
  await keepAlive.close();
  await context.close();
});

test("without Background Sync (as in Firefox and Safari): requestBackgroundSync() resolves false, the page flushes on online and on load", async () => {
  const context = await env.browser.newContext();
  // Remove the API the way those browsers lack it: no `sync` on the registration.
  await context.addInitScript(() => { delete ServiceWorkerRegistration.prototype.sync; });
  const path = "/api/sw/fallback";
  let page = await openExample(context, path);
  assert.equal(await page.evaluate(() => window.app.hasBackgroundSync), false);
  assert.match(await page.textContent("#bgsync"), /missing/);

  // Queued offline, then the network returns with the page open: `online` flushes.
  await context.setOffline(true);
  const first = await page.evaluate(() => window.app.saveNote("while open"));
  assert.equal(first.registered, false, "requestBackgroundSync() resolves false");
  await sleep(300);
  assert.equal(env.server.received(path).length, 0);
  await context.setOffline(false);
  await until(() => env.server.received(path).length >= 1, "the online event flushes");

  // Queued offline, page closed, network back: nothing is sent until the page loads again.
  await context.setOffline(true);
  const second = await page.evaluate(() => window.app.saveNote("before closing"));
  await page.close();
  await context.setOffline(false);
  await sleep(1000);
  assert.equal(env.server.received(path).length, 1, "no Background Sync: nothing is sent while no page is open");
  page = await openExample(context, path);
  await until(() => env.server.received(path).length >= 2, "the next load flushes");
  await sleep(300);
  assertEachOnce(path, [first.id, second.id]);
  await context.close();
});

test("service worker: a page and its worker flushing the same client at once send each task exactly once (Web Locks)", async () => {
  const context = await env.browser.newContext();
  const path = "/api/sw/both";
  const page = await openExample(context, path);
  // Open the worker's client first, and check what its global scope offers.
  const hello = await page.evaluate(() => window.app.askWorker("status"));
  assert.equal(hello.error, undefined, JSON.stringify(hello.error));
  assert.deepEqual(hello.scope, { window: false, indexedDB: true, fetch: true, setTimeout: true, locks: true });

  await context.setOffline(true);
  const ids = await page.evaluate(async (url) => {
    const ids = Array.from({ length: 60 }, (_, i) => `both-${i}`);
    await Promise.all(ids.map((id) => window.app.client.register(id, { url, data: { id } })));
    return ids;
  }, path);
  assert.equal(env.server.received(path).length, 0, "nothing leaves while offline");

  // Hold the flush lock from the test, so that every flush of the page and of
  // the worker is asked for while all 60 tasks are still queued, then let go.
  const LOCK = "tidesync:sw-example:flush";
  await page.evaluate((name) => new Promise((granted) => {
    navigator.locks.request(name, () => new Promise((release) => { window.releaseLock = release; granted(); }));
  }), LOCK);
  // The worker asks first (still offline: its flush waits for the lock, not the network).
  await page.evaluate(async (name) => {
    window.workerFlush = window.app.askWorker("flush");
    for (let i = 0; i < 500; i++) {
      const { pending } = await navigator.locks.query();
      if (pending.some((l) => l.name === name)) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error("the worker's flush never asked for the lock");
  }, LOCK);
  await context.setOffline(false); // the `online` event: the page's auto-flush asks for the lock too
  const run = await page.evaluate(async (name) => {
    const flushes = [
      window.app.client.flush(),
      window.workerFlush,
    ];
    let waiting;
    for (let i = 0; i < 1000; i++) {
      const { pending } = await navigator.locks.query();
      waiting = pending.filter((l) => l.name === name);
      if (new Set(waiting.map((l) => l.clientId)).size >= 2 && waiting.length >= 2) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    window.releaseLock();
    const [pageReport, worker] = await Promise.all(flushes);
    return { waiting: waiting.length, clients: new Set(waiting.map((l) => l.clientId)).size, pageReport, worker };
  }, LOCK);
  assert.equal(run.worker.error, undefined, JSON.stringify(run.worker.error));
  assert.ok(run.clients >= 2 && run.waiting >= 2,
    `flushes of the page and of the worker were waiting for the lock together (${run.waiting} requests from ${run.clients} clients)`);
  // Locks are granted in request order: the worker's flush sends everything;
  // the page's (which had the 60 tasks in memory) re-reads the queue and finds it empty.
  assert.equal(run.worker.report.sent, 60, JSON.stringify(run.worker.report));
  assert.equal(run.pageReport.sent, 0, JSON.stringify(run.pageReport));
  await until(() => env.server.received(path).length >= 60, "the 60 tasks are delivered");
  await sleep(500);
  assertEachOnce(path, ids);
  const after = await page.evaluate(async () => ({
    page: window.app.client.getStatus(),
    worker: (await window.app.askWorker("status")).status,
  }));
  assert.equal(after.page.pendingCount, 0);
  assert.equal(after.worker.pendingCount, 0);
  // Each client counts what it delivered itself: together, each task once.
  assert.equal(after.page.totalSynced + after.worker.totalSynced, 60,
    `page delivered ${after.page.totalSynced}, worker ${after.worker.totalSynced}`);
  await context.close();
});

test("dedicated worker: the package loads in a module worker and delivers a task, retrying on a timer after a 503", async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const path = "/api/worker/task";
  env.server.script(path, [{ status: 503 }]);
  const name = `worker-${Date.now()}`;
  const result = await page.evaluate(({ name, url }) => new Promise((resolve, reject) => {
    const worker = new Worker("/pages/dedicated-worker.js", { type: "module" });
    worker.onerror = (e) => reject(new Error(`worker error: ${e.message}`));
    worker.onmessage = (event) => {
      if (event.data.ready) worker.postMessage({ name, url, retry: { baseDelay: 100, jitter: false } });
      else resolve(event.data);
    };
  }), { name, url: path });
  assert.equal(result.ok, true, JSON.stringify(result.error));
  assert.deepEqual(result.scope, { window: false, document: false, indexedDB: true, locks: true });
  assert.equal(result.complete.id, "worker-task");
  assert.equal(result.complete.status, 201);
  assert.deepEqual(result.complete.body.received, { from: "dedicated worker" });
  assert.equal(result.retries.length, 1, "one retry after the 503");
  assert.equal(result.retries[0].class, "retryable");
  assert.equal(result.status.pendingCount, 0);
  const received = env.server.received(path);
  assert.equal(received.length, 2, "503 then 201");
  assert.ok(received[0].headers["idempotency-key"], "an Idempotency-Key is sent");
  assert.equal(received[0].headers["idempotency-key"], received[1].headers["idempotency-key"],
    "the retry reuses the Idempotency-Key");
  // The worker's database is the page's too: visible to the page, and empty.
  const databases = await page.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
  assert.ok(databases.includes(`tidesync:${name}`), `IndexedDB has tidesync:${name}: ${databases}`);
  await context.close();
});

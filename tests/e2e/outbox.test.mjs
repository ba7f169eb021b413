// The outbox end to end: real page, real IndexedDB, real HTTP to a server on
// 127.0.0.1, the network switched off and on by Chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "./support/server.mjs";
import { useServerAndBrowser, waitInPage } from "./support/browser.mjs";

const env = useServerAndBrowser(startTestServer);

async function openHarness(context, options) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate((o) => window.openClient(o), options);
  return page;
}

const countEvents = (page, name) => page.evaluate((n) => window.eventsNamed(n).length, name);

test("300 tasks registered offline survive a reload and reach the server exactly once, high priority first", async () => {
  const context = await env.browser.newContext();
  const name = `reload-${Date.now()}`;
  const options = { name, concurrency: 4, logLevel: "silent" };
  let page = await openHarness(context, options);

  await context.setOffline(true);
  await page.evaluate(() => {
    const priorities = ["low", "normal", "high"];
    const pending = [];
    for (let i = 0; i < 300; i++) {
      const priority = priorities[i % 3];
      pending.push(window.client.register(`task-${i}`, {
        url: "/api/collect/reload", data: { taskId: `task-${i}`, priority }, priority,
      }));
    }
    return Promise.all(pending);
  });
  assert.equal(await page.evaluate(() => window.client.getStatus().pendingCount), 300);
  const metrics = await page.evaluate(() => window.client.getMetrics());
  assert.ok(metrics.registerTransactions < 10, `group commit: ${metrics.registerTransactions} transactions for 300 tasks`);
  assert.equal(env.server.received("/api/collect/reload").length, 0, "nothing leaves while offline");

  // Reload: leave the page (possible offline), come back online, load it again.
  await page.goto("about:blank");
  await context.setOffline(false);
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate((o) => window.openClient(o), options);

  await waitInPage(page, () => window.client.getStatus().pendingCount === 0, undefined, 30000);
  const received = env.server.received("/api/collect/reload");
  const ids = received.map((r) => r.body.taskId);
  assert.equal(ids.length, 300, "every task delivered");
  assert.equal(new Set(ids).size, 300, "none delivered twice");
  assert.equal(new Set(received.map((r) => r.headers["idempotency-key"])).size, 300, "each carries its own Idempotency-Key");
  const order = received.map((r) => r.body.priority);
  const lastHigh = order.lastIndexOf("high");
  const firstLow = order.indexOf("low");
  assert.ok(lastHigh < firstLow + 4, `all high before any low within the concurrency limit (last high ${lastHigh}, first low ${firstLow})`);
  assert.ok(order.lastIndexOf("normal") < firstLow + 4, "normal before low");
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 300);
  await context.close();
});

test("going online replays the queue by itself, without a reload, a flush() or a worker restart", async () => {
  const context = await env.browser.newContext();
  const page = await openHarness(context, { name: `reconnect-${Date.now()}`, logLevel: "silent" });
  await context.setOffline(true);
  await page.evaluate(() => window.client.register("while-offline", { url: "/api/collect/reconnect", data: { n: 1 } }));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(env.server.received("/api/collect/reconnect").length, 0);
  const back = Date.now();
  await context.setOffline(false);
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 1);
  const delivered = env.server.received("/api/collect/reconnect")[0].at;
  console.log(`# reconnection to first delivery: ${delivered - back} ms`);
  assert.ok(delivered >= back);
  await context.close();
});

test("503 twice then 200 is retried with growing delays, then completes", async () => {
  const context = await env.browser.newContext();
  env.server.script("/api/flaky", [{ status: 503 }, { status: 503 }]);
  const page = await openHarness(context, {
    name: `flaky-${Date.now()}`, logLevel: "silent",
    retry: { baseDelay: 100, maxDelay: 5000, backoffMultiplier: 2, jitter: false },
  });
  await page.evaluate(() => window.client.register("flaky", { url: "/api/flaky", data: { n: 1 } }));
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 1);
  const retries = await page.evaluate(() => window.eventsNamed("sync:retry").map((e) => e.args[1]));
  assert.deepEqual(retries.map((r) => r.delay), [100, 200], "delays grow");
  assert.deepEqual(retries.map((r) => r.error.status), [503, 503]);
  const arrivals = env.server.received("/api/flaky").map((r) => r.at);
  assert.equal(arrivals.length, 3);
  assert.ok(arrivals[2] - arrivals[1] >= arrivals[1] - arrivals[0], "second wait at least as long as the first");
  const [, response] = await page.evaluate(() => window.eventsNamed("sync:complete")[0].args);
  assert.equal(response.status, 201);
  assert.equal(response.body.ok, true, "the app gets the server's parsed answer");
  await context.close();
});

test("a 422 is a dead letter: sync:failed, listed in listFailed(), never retried", async () => {
  const context = await env.browser.newContext();
  env.server.script("/api/invalid", [{ status: 422, body: { error: "name is required" } }]);
  const page = await openHarness(context, { name: `invalid-${Date.now()}`, logLevel: "silent" });
  await page.evaluate(() => window.client.register("bad", { url: "/api/invalid", data: {} }));
  await waitInPage(page, () => window.eventsNamed("sync:failed").length === 1);
  const failed = await page.evaluate(() => window.client.listFailed());
  assert.equal(failed.length, 1);
  assert.equal(failed[0].id, "bad");
  assert.equal(failed[0].task.errors[0].status, 422);
  await page.evaluate(() => window.client.flush());
  assert.equal(env.server.received("/api/invalid").length, 1, "never retried");
  const status = await page.evaluate(() => window.client.getTaskStatus("bad"));
  assert.equal(status.state, "failed");
  await context.close();
});

test("a 401 pauses with auth:required and resumes after setToken", async () => {
  const context = await env.browser.newContext();
  env.server.acceptToken("good");
  const page = await openHarness(context, { name: `auth-${Date.now()}`, token: "expired", logLevel: "silent" });
  await page.evaluate(() => window.client.register("secret", { url: "/api/auth/save", data: { x: 1 } }));
  await waitInPage(page, () => window.eventsNamed("auth:required").length === 1);
  assert.equal(await page.evaluate(() => window.client.getStatus().authRequired), true);
  assert.equal(await countEvents(page, "sync:complete"), 0);
  await page.evaluate(() => window.client.setToken("good"));
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 1);
  const sent = env.server.received("/api/auth/save");
  assert.equal(sent.at(-1).headers.authorization, "Bearer good");
  assert.equal(await countEvents(page, "auth:required"), 1, "no 401 loop");
  await context.close();
});

test("binary, Blob and FormData bodies are stored and replayed byte for byte, across a reload", async () => {
  const context = await env.browser.newContext();
  const options = { name: `bytes-${Date.now()}`, logLevel: "silent" };
  let page = await openHarness(context, options);
  await context.setOffline(true);
  await page.evaluate(async () => {
    const bytes = new Uint8Array(256).map((_, i) => 255 - i);
    await window.client.register("bytes", { url: "/api/collect/bytes/raw", body: bytes, headers: { "Content-Type": "application/octet-stream" } });
    await window.client.register("blob", { url: "/api/collect/bytes/blob", body: new Blob(["hello ", "blob"], { type: "text/x-greeting" }) });
    const form = new FormData();
    form.append("caption", "a photo");
    form.append("file", new Blob([new Uint8Array([0, 1, 2, 3, 254, 255])], { type: "image/png" }), "photo.png");
    await window.client.register("form", { url: "/api/collect/bytes/form", body: form });
  });
  await page.goto("about:blank");
  await context.setOffline(false);
  page = await openHarness(context, options);
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 3);
  const [raw] = env.server.received("/api/collect/bytes/raw");
  assert.deepEqual([...raw.raw], Array.from({ length: 256 }, (_, i) => 255 - i));
  assert.equal(raw.headers["content-type"], "application/octet-stream");
  const [blob] = env.server.received("/api/collect/bytes/blob");
  assert.equal(blob.raw.toString(), "hello blob");
  assert.equal(blob.headers["content-type"], "text/x-greeting");
  const [form] = env.server.received("/api/collect/bytes/form");
  assert.match(form.headers["content-type"], /^multipart\/form-data; boundary=/);
  assert.ok(form.raw.includes(Buffer.from([0, 1, 2, 3, 254, 255])), "the file's bytes are intact");
  assert.match(form.raw.toString("latin1"), /name="caption"\r\n\r\na photo/);
  await context.close();
});

test("a full storage quota fails the registration loudly with storage-quota and keeps what was stored", async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  // Chromium applies a quota override to an origin whose storage is not yet in use.
  const cdp = await context.newCDPSession(page);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin: env.server.url, quotaSize: 1024 * 1024 });
  await page.evaluate((o) => window.openClient(o), { name: `quota-${Date.now()}`, logLevel: "silent", autoFlush: false });
  await page.evaluate(() => window.client.register("small", { url: "/api/collect/quota", data: { n: 1 } }));
  const error = await page.evaluate(async () => {
    try {
      // Random bytes: Chromium compresses IndexedDB values, so repeated text would fit.
      const body = new Uint8Array(4 * 1024 * 1024);
      for (let i = 0; i < body.length; i += 65536) crypto.getRandomValues(body.subarray(i, i + 65536));
      await window.client.register("huge", { url: "/api/collect/quota", body });
      return null;
    } catch (e) {
      return { name: e.name, code: e.code, message: e.message };
    }
  });
  assert.ok(error, "the oversized registration was refused");
  assert.equal(error.name, "TidesyncError");
  assert.equal(error.code, "storage-quota");
  assert.match(error.message, /persist/);
  const queued = await page.evaluate(() => window.client.listQueued().map((t) => t.id));
  assert.deepEqual(queued, ["small"], "the earlier task is intact and nothing half-written");
  const estimate = await page.evaluate(() => window.client.getStorageEstimate());
  assert.ok(estimate.usage > 0 && estimate.quota > 0, `storage is reported: ${JSON.stringify(estimate)}`);
  assert.equal(typeof (await page.evaluate(() => window.client.requestPersistentStorage())), "boolean");
  await context.close();
});

test("a listener that throws is logged and stops neither the engine nor the other listeners", async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate(async () => {
    await window.openClient({ name: `throwing-${Date.now()}`, logLevel: "error" });
    window.client.on("sync:complete", () => { throw new Error("app bug in a listener"); });
    window.seen = [];
    window.client.on("sync:complete", (task) => window.seen.push(task.id));
    for (const id of ["one", "two", "three"]) await window.client.register(id, { url: "/api/collect/throwing", data: { id } });
  });
  await waitInPage(page, () => window.seen.length === 3);
  assert.equal(env.server.received("/api/collect/throwing").length, 3);
  assert.ok(errors.some((e) => e.includes("[tidesync:") && e.includes("sync:complete")), `logged: ${errors.join(" | ")}`);
  assert.equal((await page.evaluate(() => window.client.getTaskStatus("two"))).state, "complete");
  await context.close();
});

test("bad options throw a TidesyncError naming the field", async () => {
  const context = await env.browser.newContext();
  const page = await openHarness(context, { name: `errors-${Date.now()}`, logLevel: "silent" });
  const errors = await page.evaluate(async () => {
    const caught = async (f) => { try { await f(); return null; } catch (e) { return { name: e.name, code: e.code, message: e.message }; } };
    return {
      priority: await caught(() => window.client.register("x", { url: "/a", priority: "urgent" })),
      url: await caught(() => window.client.register("x", { data: {} })),
      unknown: await caught(() => window.tidesync.SyncClient.open({ name: "x", retires: 3 })),
      retryType: await caught(() => window.tidesync.SyncClient.open({ name: "x", retry: { maxRetries: "5" } })),
      event: await caught(() => window.client.on("sync:done", () => {})),
    };
  });
  assert.equal(errors.priority.name, "TidesyncError");
  assert.equal(errors.priority.code, "invalid-task");
  assert.match(errors.priority.message, /priority/);
  assert.match(errors.url.message, /url/);
  assert.equal(errors.unknown.code, "invalid-options");
  assert.match(errors.unknown.message, /retires/);
  assert.match(errors.retryType.message, /retry\.maxRetries/);
  assert.equal(errors.event.code, "invalid-event");
  assert.equal(await page.evaluate(() => window.client.getStatus().pendingCount), 0, "nothing half-registered");
  await context.close();
});

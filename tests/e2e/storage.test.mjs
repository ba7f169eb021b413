// Storage loss and quota in Chromium: site data cleared under a running
// client (CDP Storage.clearDataForOrigin) is reported as storage:evicted,
// the queue the client held is written back and delivered; a database
// missing when the client opens, though this browser had opened it, is
// reported too; getHealth() carries usage and quota and warns past 80 %
// (CDP Storage.overrideQuotaForOrigin).
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "./support/server.mjs";
import { useServerAndBrowser, waitInPage } from "./support/browser.mjs";

const env = useServerAndBrowser(startTestServer);

async function harness(context) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  return page;
}

test("site data cleared under a running app: storage:evicted, a health issue, and the queue written back and delivered once", async () => {
  const context = await env.browser.newContext();
  const page = await harness(context);
  const name = `evicted-${Date.now()}`;
  env.server.script("/api/storage/bad", [{ status: 422 }]);
  await page.evaluate((name) => window.openClient({ name }), name);
  await page.evaluate(async () => {
    await window.client.register("bad", { url: "/api/storage/bad", data: {} });
    await window.client.flush();
  });
  await context.setOffline(true);
  await page.evaluate(async () => {
    await window.client.register("keep-1", { url: "/api/storage/a", data: { n: 1 } });
    await window.client.register("keep-2", { url: "/api/storage/b", data: { n: 2 }, priority: "high" });
  });
  const before = await page.evaluate(() => window.client.listQueued());

  const cdp = await context.newCDPSession(page);
  await cdp.send("Storage.clearDataForOrigin", { origin: env.server.url, storageTypes: "all" });
  await waitInPage(page, () => window.eventsNamed("storage:evicted").length === 1);
  const report = await page.evaluate(async (name) => {
    const [event] = window.eventsNamed("storage:evicted");
    // Read the database as DevTools would: the tasks are back.
    const stored = await new Promise((resolve, reject) => {
      const open = indexedDB.open(`tidesync:${name}`);
      open.onsuccess = () => {
        const all = open.result.transaction("tasks").objectStore("tasks").getAll();
        all.onsuccess = () => { open.result.close(); resolve(all.result); };
        all.onerror = () => reject(all.error);
      };
      open.onerror = () => reject(open.error);
    });
    return { event: event.args[0], stored, health: window.client.getHealth(), status: window.client.getStatus() };
  }, name);
  assert.equal(report.event.seen, "while-open");
  assert.equal(report.event.restoredTasks, 2);
  assert.equal(report.event.lostFailedTasks, 1);
  assert.match(report.event.detectedAt, /^\d{4}-\d\d-\d\dT/);
  assert.deepEqual(report.stored.map((t) => t.id).sort(), ["keep-1", "keep-2"]);
  for (const task of before) {
    const stored = report.stored.find((t) => t.id === task.id);
    assert.equal(stored.idempotencyKey, task.idempotencyKey, "written back as it was");
    assert.equal(stored.seq, task.seq);
  }
  assert.equal(report.health.status, "degraded");
  assert.ok(report.health.issues.some((i) => i.includes("deleted while the client was open")), JSON.stringify(report.health));
  assert.ok(report.health.recommendations.some((r) => r.includes("requestPersistentStorage()")));
  assert.equal(report.status.failedCount, 0, "the dead letter went with the database");

  await context.setOffline(false);
  await page.evaluate(() => window.client.flush());
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 2);
  assert.deepEqual(env.server.received("/api/storage/").map((r) => r.path), ["/api/storage/bad", "/api/storage/b", "/api/storage/a"]);
  await context.close();
});

test("a database missing when the client opens, though this browser opened it before, is reported", async () => {
  const context = await env.browser.newContext();
  const page = await harness(context);
  const name = `missing-${Date.now()}`;
  const result = await page.evaluate(async (name) => {
    await window.openClient({ name });
    const first = window.eventsNamed("storage:evicted").length;
    await window.client.close();
    // What eviction does to an origin's storage (cookies stay).
    await new Promise((resolve, reject) => {
      const request = indexedDB.deleteDatabase(`tidesync:${name}`);
      request.onsuccess = resolve;
      request.onerror = () => reject(request.error);
    });
    await window.openClient({ name });
    await new Promise((resolve) => setTimeout(resolve, 50));
    return {
      first,
      events: window.eventsNamed("storage:evicted").map((e) => e.args[0]),
      health: window.client.getHealth(),
    };
  }, name);
  assert.equal(result.first, 0, "a first open reports nothing");
  assert.equal(result.events.length, 1);
  assert.equal(result.events[0].seen, "on-open");
  assert.ok(result.health.issues.some((i) => i.includes("missing when the client opened")), JSON.stringify(result.health));

  // A brand-new client in a fresh browser profile reports nothing.
  const other = await env.browser.newContext();
  const fresh = await harness(other);
  const events = await fresh.evaluate(async (name) => {
    await window.openClient({ name });
    await new Promise((resolve) => setTimeout(resolve, 50));
    return window.eventsNamed("storage:evicted").length;
  }, name);
  assert.equal(events, 0);
  await other.close();
  await context.close();
});

test("getHealth() carries the origin's usage and quota, measured by the browser", async () => {
  // The 80 % and 95 % rules are specified natively (tests/outbox_conditions.rs):
  // Chromium's Storage.overrideQuotaForOrigin does not change what
  // navigator.storage.estimate() reports, so a real page cannot be brought
  // near its quota here.
  const context = await env.browser.newContext();
  const page = await harness(context);
  await page.evaluate((name) => window.openClient({ name }), `quota-${Date.now()}`);
  await waitInPage(page, () => window.client.getHealth().storage !== null);
  const { health, estimate } = await page.evaluate(async () => ({
    health: window.client.getHealth(),
    estimate: await navigator.storage.estimate(),
  }));
  assert.ok(health.storage.usage > 0, JSON.stringify(health.storage));
  assert.equal(health.storage.quota, estimate.quota);
  assert.equal(health.storage.usageRatio, health.storage.usage / health.storage.quota);
  assert.equal(typeof health.storage.persisted, "boolean");
  assert.equal(health.status, "healthy");
  const direct = await page.evaluate(() => window.client.getStorageEstimate());
  assert.deepEqual(Object.keys(direct).sort(), ["persisted", "quota", "usage", "usageRatio"]);
  await context.close();
});

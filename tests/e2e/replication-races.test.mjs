// Replication when tabs race and answers arrive late (issue 17), end to
// end: two tabs on one database, the real reference server behind a proxy
// that answers a push seconds late, real IndexedDB in Chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "./support/server.mjs";
import { startTidesyncServer } from "./support/tidesync-server.mjs";
import { startLateProxy } from "./support/late-proxy.mjs";
import { launchBrowser } from "./support/browser.mjs";

let pages, browser;
before(async () => {
  pages = await startTestServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await pages?.close();
});

async function tab(context, options) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${pages.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate((o) => window.openClient(o), { logLevel: "silent", ...options });
  return page;
}

async function setUp() {
  const server = await startTidesyncServer();
  const proxy = await startLateProxy(server.url);
  const token = server.token(`races-${Math.random().toString(36).slice(2)}`);
  const context = await browser.newContext();
  const options = {
    name: `races-${Math.random().toString(36).slice(2)}`,
    serverUrl: proxy.url, token, entityTypes: ["notes"],
    retry: { baseDelay: 50, maxDelay: 500, jitter: false },
  };
  return {
    server, proxy, token, context, options,
    async close() {
      await context.close();
      await proxy.close();
      await server.close();
    },
  };
}

test("a write made while another tab's push is answered late is sent, and nothing stays pending", async () => {
  const env = await setUp();
  try {
    const x = await tab(env.context, env.options);
    const y = await tab(env.context, env.options);
    env.proxy.delayAnswers("/api/client/sync/push", 2500);
    await x.evaluate(() => window.client.put("notes", { id: "n1", title: "D1" }));
    const late = x.evaluate(() => window.client.flush());
    await new Promise((r) => setTimeout(r, 300)); // X's push is at the server, its answer held
    await y.evaluate(async () => {
      await window.client.pull();
      await window.client.put("notes", { id: "n1", title: "D2" });
    });
    await late;
    await y.evaluate(() => window.client.sync());
    await x.evaluate(() => window.client.sync());

    const [onServer] = (await env.server.snapshot(env.token)).notes;
    assert.equal(onServer.title, "D2", "the later write reached the server");
    for (const page of [x, y]) {
      const record = await page.evaluate(() => window.client.get("notes", "n1"));
      assert.deepEqual([record.title, record.syncStatus], ["D2", "synced"]);
      assert.equal(await page.evaluate(() => window.client.getStatus().pendingCount), 0);
    }
  } finally {
    await env.close();
  }
});

test("edits of one record across two tabs with a late answer end on the last edit", async () => {
  const env = await setUp();
  try {
    const x = await tab(env.context, env.options);
    const y = await tab(env.context, env.options);
    env.proxy.delayAnswers("/api/client/sync/push", 2000);
    await x.evaluate(() => window.client.put("notes", { id: "n1", title: "D1" }));
    const late = x.evaluate(() => window.client.flush());
    await new Promise((r) => setTimeout(r, 300));
    await y.evaluate(() => window.client.put("notes", { id: "n1", title: "D2" }));
    await new Promise((r) => setTimeout(r, 20));
    await x.evaluate(() => window.client.put("notes", { id: "n1", title: "E1" }));
    await late;
    for (let i = 0; i < 2; i++) {
      await x.evaluate(() => window.client.sync());
      await y.evaluate(() => window.client.sync());
    }

    const [onServer] = (await env.server.snapshot(env.token)).notes;
    assert.equal(onServer.title, "E1", `the last edit wins, server has ${onServer.title}`);
    for (const page of [x, y]) {
      const record = await page.evaluate(() => window.client.get("notes", "n1"));
      assert.deepEqual([record.title, record.syncStatus], ["E1", "synced"]);
    }
  } finally {
    await env.close();
  }
});

test("flush() with a plain request and a 300-mutation push in flight together resolves and sends everything", async () => {
  const env = await setUp();
  try {
    const page = await tab(env.context, { ...env.options, autoFlush: false });
    const report = await page.evaluate(async (endpoint) => {
      await Promise.all(Array.from({ length: 300 }, (_, i) =>
        window.client.put("notes", { id: `m${i}`, title: `note ${i}` })));
      await window.client.register("ping", { url: `${endpoint}/api/ping`, method: "POST", data: { n: 1 } });
      const flushed = await window.client.flush();
      return { flushed, status: window.client.getStatus() };
    }, pages.url);
    assert.equal(report.status.pendingCount, 0, JSON.stringify(report));
    assert.equal((await env.server.snapshot(env.token)).notes.length, 300);
  } finally {
    await env.close();
  }
});

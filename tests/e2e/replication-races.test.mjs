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

/** Devices in contexts of their own (separate IndexedDB), nothing automatic: each step is explicit. */
async function devices(env, count) {
  const list = [];
  for (let i = 0; i < count; i++) {
    const context = await browser.newContext();
    const page = await tab(context, { ...env.options, name: `device-${i}`, autoFlush: false, live: false });
    list.push({ context, page });
  }
  return list;
}
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
const put = (device, title) => device.page.evaluate((t) => window.client.put("notes", { id: "n1", title: t }), title);
const run = (device, method) => device.page.evaluate((m) => window.client[m](), method);

test("settling a conflict keeps the edit's own time: a later edit of another device still wins", async () => {
  const env = await setUp();
  const [a, b, c] = await devices(env, 3);
  try {
    await put(c, "v0");
    await run(c, "sync");
    for (const d of [a, b]) await run(d, "sync");
    await a.context.setOffline(true);
    await b.context.setOffline(true);
    await put(c, "C"); // first edit
    await run(c, "sync");
    await pause(100);
    await put(a, "A"); // second edit, offline
    await pause(500);
    await put(b, "B"); // last edit, offline
    await pause(1500);
    await a.context.setOffline(false);
    await run(a, "pull"); // A's edit meets C's copy on the pull and wins (it is later)
    await run(a, "sync");
    await b.context.setOffline(false);
    await run(b, "sync"); // B's edit is the last one made: it must win
    for (const d of [a, c]) await run(d, "sync");

    const [onServer] = (await env.server.snapshot(env.token)).notes;
    assert.equal(onServer.title, "B", "the last edit by edit time");
    for (const d of [a, b, c]) {
      assert.equal((await d.page.evaluate(() => window.client.get("notes", "n1"))).title, "B");
    }
  } finally {
    for (const d of [a, b, c]) await d.context.close();
    await env.close();
  }
});

test("a pull settles last-write-wins by edit times, not by when the server stored the other edit", async () => {
  const env = await setUp();
  const [a, b] = await devices(env, 2);
  try {
    await put(a, "v0");
    await run(a, "sync");
    await run(b, "sync");
    await a.context.setOffline(true);
    await b.context.setOffline(true);
    await put(b, "B"); // edited first…
    await pause(500);
    await put(a, "A"); // …edited last
    await pause(500);
    await b.context.setOffline(false);
    await run(b, "sync"); // B's edit reaches the server after A's edit was made
    await a.context.setOffline(false);
    await run(a, "pull"); // the conflict is settled here, on the pull
    await run(a, "sync");
    await run(b, "sync");

    const [onServer] = (await env.server.snapshot(env.token)).notes;
    assert.equal(onServer.title, "A", "A's edit is the later one");
    for (const d of [a, b]) {
      assert.equal((await d.page.evaluate(() => window.client.get("notes", "n1"))).title, "A");
    }
  } finally {
    for (const d of [a, b]) await d.context.close();
    await env.close();
  }
});

// Replication at a real user's volume with default options (issue 10):
// thousands of ordinary records written offline and pushed, an empty
// second device pulling them all with the default page size, a record with
// a 200 KB field both ways, and a push split after the server refuses it
// with 413. Against the reference server on SQLite and, when the test
// script provides one, on PostgreSQL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "./support/server.mjs";
import { startTidesyncServer } from "./support/tidesync-server.mjs";
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

const backends = [["SQLite", null]];
if (process.env.TIDESYNC_E2E_DATABASE_URL) backends.push(["PostgreSQL", process.env.TIDESYNC_E2E_DATABASE_URL]);

async function device(context, options) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${pages.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  // Default options: no batchSize, no pageSize.
  await page.evaluate((o) => window.openClient(o), { logLevel: "silent", ...options });
  return page;
}

const unique = (prefix) => `${prefix}-${Math.random().toString(36).slice(2)}`;

async function twoDevices(server) {
  const token = server.token(unique("volume"));
  const name = unique("volume");
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  // sync() by hand, measured: no live connection pulling ahead of it.
  const options = { serverUrl: server.url, token, entityTypes: ["end_user"], live: false };
  const a = await device(ctxA, { ...options, name });
  const b = await device(ctxB, { ...options, name });
  return { token, ctxA, a, b, close: async () => { await ctxA.close(); await ctxB.close(); } };
}

for (const [backend, db] of backends) {
  test(`${backend}: 5,000 records written offline all sync; an empty device pulls all 5,000 with the default page size`, async () => {
    const server = await startTidesyncServer({ db });
    const env = await twoDevices(server);
    try {
      await env.ctxA.setOffline(true);
      const written = await env.a.evaluate(async () => {
        const started = performance.now();
        await Promise.all(Array.from({ length: 5000 }, (_, i) => window.client.put("end_user", {
          id: `u${i}`, name: `User number ${i}`, email: `user${i}@example.com`,
          note: "an ordinary note of about forty characters.",
        })));
        return performance.now() - started;
      });
      await env.ctxA.setOffline(false);
      const pushed = await env.a.evaluate(async () => {
        const started = performance.now();
        const report = await window.client.sync();
        return { report, ms: performance.now() - started, status: window.client.getStatus(),
          failed: (await window.client.listFailed()).length };
      });
      assert.equal(pushed.status.pendingCount, 0, JSON.stringify(pushed));
      assert.equal(pushed.failed, 0);
      const onServer = (await server.snapshot(env.token, ["end_user"])).end_user;
      assert.equal(onServer.length, 5000);

      const pulled = await env.b.evaluate(async () => {
        const started = performance.now();
        const report = await window.client.sync();
        const records = await window.client.query("end_user");
        return { report, ms: performance.now() - started, count: records.length,
          synced: records.every((r) => r.syncStatus === "synced") };
      });
      assert.equal(pulled.count, 5000);
      assert.ok(pulled.synced);
      assert.ok(pulled.report.pages >= 5, `default pages of 1,000: ${JSON.stringify(pulled.report)}`);
      console.log(`# ${backend}: 5,000 puts offline ${written.toFixed(0)} ms; push ${pushed.ms.toFixed(0)} ms `
        + `(${(5000 / pushed.ms * 1000).toFixed(0)}/s); pull ${pulled.ms.toFixed(0)} ms (${(5000 / pulled.ms * 1000).toFixed(0)}/s)`);
    } finally {
      await env.close();
      await server.close();
    }
  });

  test(`${backend}: a record with a 200 KB text field syncs both ways`, async () => {
    const server = await startTidesyncServer({ db });
    const env = await twoDevices(server);
    try {
      const big = "x".repeat(200 * 1024);
      await env.a.evaluate(async (text) => {
        await window.client.put("end_user", { id: "big", name: "Big", note: text });
        await window.client.sync();
      }, big);
      const onB = await env.b.evaluate(async () => {
        await window.client.sync();
        return window.client.get("end_user", "big");
      });
      assert.equal(onB.note.length, big.length);
      await env.b.evaluate(async (text) => {
        await window.client.put("end_user", { id: "big", name: "Big", note: `${text}y` });
        await window.client.sync();
      }, big);
      const onA = await env.a.evaluate(async () => {
        await window.client.sync();
        return window.client.get("end_user", "big");
      });
      assert.equal(onA.note.length, big.length + 1);
      assert.equal(onA.syncStatus, "synced");
    } finally {
      await env.close();
      await server.close();
    }
  });

  test(`${backend}: a push the server refuses with 413 is split and lands`, async () => {
    // A server whose body limit is below one default batch (500 mutations).
    const server = await startTidesyncServer({ db, args: ["--max-body-bytes", "65536"] });
    const env = await twoDevices(server);
    try {
      const result = await env.a.evaluate(async () => {
        await Promise.all(Array.from({ length: 1200 }, (_, i) => window.client.put("end_user", {
          id: `s${i}`, name: `User ${i}`, email: `user${i}@example.com`, note: "split me",
        })));
        await window.client.sync();
        return { status: window.client.getStatus(), failed: (await window.client.listFailed()).length };
      });
      assert.equal(result.failed, 0, "nothing dead-lettered");
      assert.equal(result.status.pendingCount, 0);
      assert.equal((await server.snapshot(env.token, ["end_user"])).end_user.length, 1200);
    } finally {
      await env.close();
      await server.close();
    }
  });
}

test("a plain request's answer over 64 KiB reaches sync:complete cut to 64 KiB, as text", async () => {
  const context = await browser.newContext();
  try {
    const page = await device(context, { name: unique("cap") });
    pages.script("/api/huge", [{ status: 200, body: { blob: "z".repeat(300 * 1024) } }]);
    const body = await page.evaluate(async (url) => {
      await window.client.register("huge", { url, method: "POST", data: {} });
      await window.client.flush();
      const [complete] = window.eventsNamed("sync:complete");
      return complete.args[1].body;
    }, `${pages.url}/api/huge`);
    assert.equal(typeof body, "string");
    assert.equal(body.length, 64 * 1024);
  } finally {
    await context.close();
  }
});

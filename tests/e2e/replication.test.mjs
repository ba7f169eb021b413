// Replication end to end: real pages in Chromium, real IndexedDB, the real
// reference server (SQLite) on 127.0.0.1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "./support/server.mjs";
import { startTidesyncServer } from "./support/tidesync-server.mjs";
import { launchBrowser, waitInPage } from "./support/browser.mjs";

let pages, browser;
before(async () => {
  pages = await startTestServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await pages?.close();
});

async function device(context, options) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${pages.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate((o) => window.openClient(o), { logLevel: "silent", ...options });
  return page;
}

// These tests drive push and pull by hand (sync(), flush()): no live
// connection pulling on its own (tests/e2e/live.test.mjs has those).
const clientOptions = (server, token, extra = {}) => ({
  name: `rep-${Math.random().toString(36).slice(2)}`,
  serverUrl: server.url, token, entityTypes: ["notes"], live: false,
  retry: { baseDelay: 50, maxDelay: 500, jitter: false }, ...extra,
});

const byId = (records) => Object.fromEntries(records.map((r) => [r.id, { title: r.title, body: r.body }]));
const live = (records) => records.filter((r) => !r.isDeleted);

async function twoDevicesEditOffline(strategy) {
  const server = await startTidesyncServer({ strategy });
  const token = server.token("acme");
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await device(ctxA, clientOptions(server, token, { conflictStrategy: strategy }));
    const b = await device(ctxB, clientOptions(server, token, { conflictStrategy: strategy }));
    await a.evaluate(async () => {
      await window.client.put("notes", { id: "n1", title: "one", body: "first" });
      await window.client.put("notes", { id: "n2", title: "two", body: "second" });
      await window.client.sync();
    });
    await b.evaluate(() => window.client.sync());
    assert.equal((await b.evaluate(() => window.client.query("notes"))).length, 2, "B starts with A's notes");

    // Both devices go offline and edit; B edits n1 after A did. Then both
    // come online: A syncs first, then B, then A again.
    await ctxA.setOffline(true);
    await ctxB.setOffline(true);
    await a.evaluate(() => window.client.put("notes", { id: "n1", title: "A's title", body: "first" }));
    await new Promise((r) => setTimeout(r, 30));
    await b.evaluate(async () => {
      await window.client.delete("notes", "n2");
      await window.client.put("notes", { id: "n1", title: "one", body: "B's body" });
    });
    assert.equal((await a.evaluate(() => window.client.get("notes", "n1"))).syncStatus, "pending");
    await ctxA.setOffline(false);
    await ctxB.setOffline(false);
    await a.evaluate(() => window.client.sync());
    await b.evaluate(() => window.client.sync());
    await a.evaluate(() => window.client.sync());

    const serverNotes = byId(live((await server.snapshot(token)).notes));
    const notesA = byId(await a.evaluate(() => window.client.query("notes")));
    const notesB = byId(await b.evaluate(() => window.client.query("notes")));
    assert.deepEqual(notesA, serverNotes, "device A equals the server");
    assert.deepEqual(notesB, serverNotes, "device B equals the server");
    const statuses = await b.evaluate(async () => (await window.client.query("notes")).map((r) => r.syncStatus));
    assert.ok(statuses.every((s) => s === "synced"), `all synced: ${statuses}`);
    const conflicts = await b.evaluate(() => window.eventsNamed("sync:conflict").length);
    return { notes: serverNotes, conflicts };
  } finally {
    await ctxA.close();
    await ctxB.close();
    await server.close();
  }
}

test("two devices edit offline; last-write-wins keeps the later edit (by edit time, not arrival) and the delete", async () => {
  const { notes } = await twoDevicesEditOffline("last-write-wins");
  assert.deepEqual(notes, { n1: { title: "one", body: "B's body" } });
});

test("the same edits under server-wins keep the first edit the server saw", async () => {
  const { notes, conflicts } = await twoDevicesEditOffline("server-wins");
  assert.deepEqual(notes, { n1: { title: "A's title", body: "first" } });
  assert.ok(conflicts >= 1, "B saw a sync:conflict");
});

test("the same edits under merge keep both devices' fields", async () => {
  const { notes } = await twoDevicesEditOffline("merge");
  assert.deepEqual(notes, { n1: { title: "A's title", body: "B's body" } });
});

test("a push whose response is lost is retried and answered duplicate; the version moves once", async () => {
  const server = await startTidesyncServer({ testHooks: true });
  const token = server.token("lost");
  const context = await browser.newContext();
  try {
    const page = await device(context, clientOptions(server, token, { autoFlush: false }));
    await page.evaluate(() => window.client.put("notes", { id: "x", title: "hello" }));
    assert.equal((await server.dropNextPushResponse(token)).status, 200);
    await page.evaluate(() => window.client.flush());
    assert.equal(await page.evaluate(() => window.eventsNamed("sync:retry").length), 1, "the lost answer is retried");
    const remaining = await page.evaluate(async () => {
      for (let i = 0; i < 50; i++) {
        const report = await window.client.flush();
        if (report.remaining === 0) return 0;
        await new Promise((r) => setTimeout(r, 100));
      }
      return window.client.getStatus().pendingCount;
    });
    assert.equal(remaining, 0);
    const [complete] = await page.evaluate(() => window.eventsNamed("sync:complete").map((e) => e.args[1]));
    assert.equal(complete.body.status, "duplicate", "the server recognised the replay (the mutation's own result)");
    const notes = (await server.snapshot(token)).notes;
    assert.equal(notes.length, 1);
    assert.equal(notes[0].version, 1, "applied exactly once");
    const local = await page.evaluate(() => window.client.get("notes", "x"));
    assert.deepEqual([local.version, local.syncStatus], [1, "synced"]);
  } finally {
    await context.close();
    await server.close();
  }
});

test("closing the page in the middle of a 10,000-record pull resumes and ends with every record once", async () => {
  const server = await startTidesyncServer();
  const token = server.token("big");
  for (let batch = 0; batch < 10; batch++) {
    const mutations = Array.from({ length: 1000 }, (_, i) => ({
      mutationId: `seed-${batch}-${i}`, entityType: "notes", op: "upsert",
      id: `note-${batch * 1000 + i}`, baseVersion: 0, data: { title: `note ${batch * 1000 + i}` },
    }));
    const { status } = await server.call("/api/client/sync/push", token, { clientId: "seeder", mutations });
    assert.equal(status, 200);
  }
  const context = await browser.newContext();
  try {
    const options = clientOptions(server, token, { pageSize: 500 });
    let page = await device(context, options);
    await page.evaluate(() => { window.client.sync().catch(() => {}); });
    await waitInPage(page, () => window.eventsNamed("sync:progress").some((e) => e.args[0].phase === "pull" && e.args[0].done >= 2000));
    await page.close(); // the tab dies mid-pull
    page = await device(context, options);
    const report = await page.evaluate(() => window.client.sync());
    assert.ok(report.pulled < 10000, `resumed from the stored cursor (pulled ${report.pulled} after reopening)`);
    const notes = await page.evaluate(() => window.client.query("notes"));
    assert.equal(notes.length, 10000);
    assert.equal(new Set(notes.map((n) => n.id)).size, 10000, "none duplicated");
  } finally {
    await context.close();
    await server.close();
  }
});

test("a client with tenant B's token never sees tenant A's records", async () => {
  const server = await startTidesyncServer();
  const context = await browser.newContext();
  try {
    const a = await device(context, clientOptions(server, server.token("tenant-a")));
    await a.evaluate(async () => { await window.client.put("notes", { id: "secret", title: "A only" }); await window.client.sync(); });
    const b = await device(context, clientOptions(server, server.token("tenant-b")));
    await b.evaluate(() => window.client.sync());
    assert.deepEqual(await b.evaluate(() => window.client.query("notes")), []);
    assert.equal(await b.evaluate(() => window.client.get("notes", "secret")), null);
  } finally {
    await context.close();
    await server.close();
  }
});

test("verify() finds and repairs a record deleted from IndexedDB and one whose version was tampered with", async () => {
  const server = await startTidesyncServer();
  const token = server.token("verify");
  const context = await browser.newContext();
  try {
    const options = clientOptions(server, token);
    const page = await device(context, options);
    await page.evaluate(async () => {
      for (const id of ["a", "b", "c"]) await window.client.put("notes", { id, title: id });
      await window.client.sync();
    });
    const clean = await page.evaluate(() => window.client.verify());
    assert.deepEqual(clean.map((r) => r.repaired), [0]);
    await page.evaluate((db) => new Promise((resolve, reject) => {
      const open = indexedDB.open(db);
      open.onsuccess = () => {
        const tx = open.result.transaction("records", "readwrite");
        const records = tx.objectStore("records");
        records.delete(["notes", "a"]);
        const get = records.get(["notes", "b"]);
        get.onsuccess = () => records.put({ ...get.result, version: 99 });
        tx.oncomplete = () => { open.result.close(); resolve(); };
        tx.onerror = () => reject(tx.error);
      };
    }), `tidesync:${options.name}`);
    const [report] = await page.evaluate(() => window.client.verify());
    assert.equal(report.entityType, "notes");
    assert.equal(report.serverCount, 3);
    assert.equal(report.localCount, 2);
    assert.equal(report.repaired, 2);
    const notes = await page.evaluate(() => window.client.query("notes"));
    assert.deepEqual(notes.map((n) => [n.id, n.version]), [["a", 1], ["b", 1], ["c", 1]]);
    const [again] = await page.evaluate(() => window.client.verify());
    assert.equal(again.repaired, 0);
  } finally {
    await context.close();
    await server.close();
  }
});

// Live sync end to end: real pages in Chromium, real IndexedDB, the real
// reference server on 127.0.0.1 (SQLite, and PostgreSQL with several
// processes). Device A puts; device B's subscription fires with no sync()
// call. Tests assert behaviour; the latencies they print are figures, not
// pass marks (npm run bench measures them properly).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "./support/server.mjs";
import { startTidesyncServer } from "./support/tidesync-server.mjs";
import { startPostgres } from "./support/postgres.mjs";
import { startProxy } from "./support/proxy.mjs";
import { launchBrowser, waitInPage } from "./support/browser.mjs";

/** The bound is 1 s; a loaded machine gets margin. */
const WITHIN_MS = 5000;

let pages, browser, postgres;
before(async () => {
  pages = await startTestServer();
  browser = await launchBrowser();
  postgres = startPostgres();
});
after(async () => {
  await browser?.close();
  await pages?.close();
  postgres?.stop();
});

async function device(context, options) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${pages.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate((o) => window.openClient(o), { logLevel: "silent", ...options });
  return page;
}

const clientOptions = (serverUrl, token, extra = {}) => ({
  name: `live-${Math.random().toString(36).slice(2)}`,
  serverUrl, token, entityTypes: ["notes"],
  retry: { baseDelay: 50, maxDelay: 500, jitter: false }, ...extra,
});

/** Subscribes to notes; every snapshot is kept with when it arrived. */
const subscribeNotes = (page, query = {}) => page.evaluate((q) => {
  window.snapshots = [];
  window.unsubscribe = window.client.subscribe("notes", q, (records) => window.snapshots.push({ at: Date.now(), records }));
}, query);

const waitOpen = (page) => waitInPage(page, () => window.client.getLiveStatus().state === "open", undefined, 15000);

/** A puts a note; returns how long until B's subscription held it (ms). */
async function putAndWaitForSubscription(a, b, note) {
  const started = await a.evaluate(async (n) => {
    const at = Date.now();
    await window.client.put("notes", n);
    return at;
  }, note);
  await waitInPage(b, (id) => window.snapshots.some((s) => s.records.some((r) => r.id === id)), note.id, WITHIN_MS);
  const arrived = await b.evaluate((id) => window.snapshots.find((s) => s.records.some((r) => r.id === id)).at, note.id);
  return arrived - started;
}

/** Two devices in two browser contexts: A on `urlA`, B on `urlB`. */
async function twoDevices(urlA, urlB, token) {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const a = await device(ctxA, clientOptions(urlA, token));
  const b = await device(ctxB, clientOptions(urlB, token));
  await subscribeNotes(b);
  await Promise.all([waitOpen(a), waitOpen(b)]);
  return { a, b, close: async () => { await ctxA.close(); await ctxB.close(); } };
}

const noManualSync = (page) => page.evaluate(() => window.eventsNamed("sync:progress").length);

test("SQLite: device A puts, device B's subscription fires with no sync() call", async () => {
  const server = await startTidesyncServer();
  const token = server.token("live-sqlite");
  const { a, b, close } = await twoDevices(server.url, server.url, token);
  try {
    const first = await b.evaluate(() => window.snapshots[0]?.records.length);
    assert.equal(first, 0, "the subscription fired at once with the (empty) current result");
    const latencies = [];
    for (let i = 0; i < 3; i++) latencies.push(await putAndWaitForSubscription(a, b, { id: `n${i}`, title: `note ${i}` }));
    console.log(`  write on A → B's callback (SQLite): ${latencies.join(", ")} ms`);
    assert.equal(await noManualSync(b), 0, "B never ran sync()");
    const note = await b.evaluate(() => window.client.get("notes", "n2"));
    assert.deepEqual([note.title, note.syncStatus], ["note 2", "synced"]);
    const opened = await b.evaluate(() => window.eventsNamed("live:open").map((e) => e.args[0]));
    assert.deepEqual(opened, [{ leader: true }]);
  } finally {
    await close();
    await server.close();
  }
});

test("PostgreSQL: A and B on two server processes; B's subscription fires through LISTEN/NOTIFY", async (t) => {
  if (!postgres) return t.skip("PostgreSQL unavailable");
  const one = await startTidesyncServer({ db: postgres.url, args: ["--live-sweep-secs", "0"] });
  const two = await startTidesyncServer({ db: postgres.url, args: ["--live-sweep-secs", "0"] });
  const token = one.token(`live-pg-${Date.now()}`);
  const { a, b, close } = await twoDevices(one.url, two.url, token);
  try {
    const latencies = [];
    for (let i = 0; i < 3; i++) latencies.push(await putAndWaitForSubscription(a, b, { id: `p${i}`, title: `pg ${i}` }));
    console.log(`  write on A (process 1) → B's callback (process 2, PostgreSQL): ${latencies.join(", ")} ms`);
    assert.equal(await noManualSync(b), 0);
    assert.equal(await two.metric("tidesync_live_streams"), 1, "B's stream is on process 2");
  } finally {
    await close();
    await one.close();
    await two.close();
  }
});

test("killing a server process: its clients reconnect to the other one (behind a proxy) and miss nothing", async (t) => {
  if (!postgres) return t.skip("PostgreSQL unavailable");
  const one = await startTidesyncServer({ db: postgres.url, args: ["--live-sweep-secs", "0"] });
  const two = await startTidesyncServer({ db: postgres.url, args: ["--live-sweep-secs", "0"] });
  // B reaches the servers through a proxy that prefers process 2.
  const proxy = await startProxy([two.url, one.url]);
  const token = one.token(`live-kill-${Date.now()}`);
  const { a, b, close } = await twoDevices(one.url, proxy.url, token);
  try {
    assert.ok(await putAndWaitForSubscription(a, b, { id: "before", title: "before the kill" }) < WITHIN_MS);
    assert.equal(await two.metric("tidesync_live_streams"), 1, "B's stream is on process 2");
    await two.kill();
    // A writes while B is cut off and reconnecting.
    await a.evaluate(async () => {
      for (let i = 0; i < 5; i++) await window.client.put("notes", { id: `during-${i}`, title: `written during the outage ${i}` });
    });
    const want = ["before", ...Array.from({ length: 5 }, (_, i) => `during-${i}`)];
    await waitInPage(b, (ids) => {
      const last = window.snapshots.at(-1)?.records.map((r) => r.id) ?? [];
      return ids.every((id) => last.includes(id));
    }, want, 20000);
    await waitInPage(b, () => window.client.getLiveStatus().state === "open", undefined, 20000);
    const closedEvents = await b.evaluate(() => window.eventsNamed("live:closed").map((e) => e.args[0].reason));
    assert.ok(closedEvents.length >= 1, "B saw the connection close");
    assert.equal(await one.metric("tidesync_live_streams"), 2, "B reconnected to process 1 (A is there too)");
    const after = await putAndWaitForSubscription(a, b, { id: "after", title: "after the reconnection" });
    console.log(`  after the failover, write on A → B's callback: ${after} ms`);
    const server = (await one.snapshot(token)).notes.map((n) => n.id).sort();
    const local = (await b.evaluate(() => window.client.query("notes"))).map((n) => n.id).sort();
    assert.deepEqual(local, server, "B holds exactly what the server holds");
    assert.equal(await noManualSync(b), 0);
  } finally {
    await close();
    await proxy.close();
    await one.close();
    await two.close();
  }
});

test("one connection per database across tabs: the other tab follows it, takes over when it closes, and sees changes", async () => {
  const server = await startTidesyncServer();
  const token = server.token("live-tabs");
  const context = await browser.newContext();
  const other = await browser.newContext();
  try {
    const options = clientOptions(server.url, token);
    const first = await device(context, options);
    await waitOpen(first);
    const second = await device(context, options);
    await subscribeNotes(second);
    await waitInPage(second, () => window.client.getLiveStatus().state === "open");
    assert.deepEqual(
      [await first.evaluate(() => window.client.getLiveStatus().leader), await second.evaluate(() => window.client.getLiveStatus().leader)],
      [true, false],
    );
    assert.equal(await server.metric("tidesync_live_streams"), 1, "two tabs, one stream");
    // A write in the first tab reaches the second tab's subscription (BroadcastChannel).
    await first.evaluate(() => window.client.put("notes", { id: "local", title: "from the other tab" }));
    await waitInPage(second, () => window.snapshots.some((s) => s.records.some((r) => r.id === "local")));
    // Another device's write: the first tab pulls it, the second tab's subscription fires.
    const elsewhere = await device(other, clientOptions(server.url, token));
    await elsewhere.evaluate(() => window.client.put("notes", { id: "remote", title: "from another device" }));
    await waitInPage(second, () => window.snapshots.some((s) => s.records.some((r) => r.id === "remote")), undefined, WITHIN_MS);
    // The tab holding the connection goes away: the other takes it over.
    await first.close();
    await waitInPage(second, () => window.client.getLiveStatus().leader && window.client.getLiveStatus().state === "open", undefined, 15000);
    await elsewhere.evaluate(() => window.client.put("notes", { id: "later", title: "after the takeover" }));
    await waitInPage(second, () => window.snapshots.some((s) => s.records.some((r) => r.id === "later")), undefined, WITHIN_MS);
  } finally {
    await context.close();
    await other.close();
    await server.close();
  }
});

test("subscribe(): where, orderBy and limit; a callback only when the result changes; stable frozen snapshots; unsubscribe", async () => {
  const server = await startTidesyncServer();
  const context = await browser.newContext();
  try {
    const page = await device(context, clientOptions(server.url, server.token("live-query"), { live: false, autoFlush: false }));
    const result = await page.evaluate(async () => {
      const calls = [];
      const off = window.client.subscribe("notes", { where: { done: false }, orderBy: ["rank", "desc"], limit: 2 },
        (records) => calls.push(records));
      const settle = () => new Promise((r) => setTimeout(r, 150));
      await settle();
      await window.client.put("notes", { id: "a", done: false, rank: 1 });
      await settle();
      await window.client.put("notes", { id: "b", done: false, rank: 3 });
      await settle();
      await window.client.put("notes", { id: "c", done: true, rank: 9 }); // does not match: no call
      await settle();
      await window.client.put("notes", { id: "d", done: false, rank: 2 });
      await settle();
      await window.client.put("notes", { id: "a", done: false, rank: 0 }); // below the limit: no call
      await settle();
      const frozen = Object.isFrozen(calls.at(-1)) && Object.isFrozen(calls.at(-1)[0]);
      const fn = [];
      const offFn = window.client.subscribe("notes", { where: (n) => n.rank > 1 }, (records) => fn.push(records.map((r) => r.id)));
      const all = [];
      const offAll = window.client.subscribe("notes", (records) => all.push(records.length));
      await settle();
      off();
      offFn();
      await window.client.delete("notes", "b");
      await settle();
      offAll();
      await window.client.delete("notes", "d");
      await settle();
      let invalid = null;
      try { window.client.subscribe("notes", { orderBy: 42 }, () => {}); } catch (e) { invalid = [e.name, e.code, e.message]; }
      let unknown = null;
      try { window.client.subscribe("notez", () => {}); } catch (e) { unknown = e.code; }
      return { calls: calls.map((c) => c.map((r) => r.id)), frozen, fn, all, invalid, unknown };
    });
    assert.deepEqual(result.calls, [[], ["a"], ["b", "a"], ["b", "d"]]);
    assert.ok(result.frozen, "snapshots are frozen");
    assert.deepEqual(result.fn, [["b", "c", "d"]]);
    assert.deepEqual(result.all, [4, 3], "fired at once, then for the delete of b, not after unsubscribing");
    assert.deepEqual(result.invalid.slice(0, 2), ["TidesyncError", "invalid-query"]);
    assert.match(result.invalid[2], /orderBy/);
    assert.equal(result.unknown, "unknown-entity-type");
  } finally {
    await context.close();
    await server.close();
  }
});

test("live: false opens no stream; live needs serverUrl and entityTypes", async () => {
  const server = await startTidesyncServer();
  const context = await browser.newContext();
  try {
    const page = await device(context, clientOptions(server.url, server.token("live-off"), { live: false }));
    assert.deepEqual(await page.evaluate(() => window.client.getLiveStatus()), { state: "off", leader: false });
    assert.equal(await server.metric("tidesync_live_streams"), 0);
    const error = await page.evaluate(() => window.tidesync.SyncClient.open({ name: "x", live: true }).then(() => null, (e) => [e.code, e.message]));
    assert.equal(error[0], "invalid-options");
    assert.match(error[1], /`live` needs `serverUrl` and `entityTypes`/);
  } finally {
    await context.close();
    await server.close();
  }
});

test("the demo (www/) updates across windows and devices without a click", async () => {
  const server = await startTidesyncServer({ strategy: "merge" });
  const token = server.token("live-demo");
  const device = await browser.newContext();
  const other = await browser.newContext();
  try {
    const open = async (context) => {
      const page = await context.newPage();
      page.on("pageerror", (e) => console.error("demo page error:", e.message));
      await page.goto(`${server.url}/?token=${token}`);
      await waitInPage(page, () => document.getElementById("live").textContent === "live", undefined, 15000);
      return page;
    };
    const first = await open(device);
    const second = await open(device); // another window of the same browser
    const elsewhere = await open(other); // another device
    await first.fill("#title", "Written in the first window");
    await first.click("button[type=submit]");
    for (const page of [second, elsewhere]) {
      await waitInPage(page, () => [...document.querySelectorAll("#notes .title")].some((t) => t.textContent === "Written in the first window"),
        undefined, WITHIN_MS);
    }
    await elsewhere.locator("#notes li input[type=checkbox]").first().check();
    await waitInPage(first, () => document.querySelectorAll("#notes li.done").length === 1, undefined, WITHIN_MS);
    await waitInPage(second, () => document.querySelectorAll("#notes li.done").length === 1, undefined, WITHIN_MS);
  } finally {
    await device.close();
    await other.close();
    await server.close();
  }
});

test("a client given only getToken connects: the ticket is asked for with the token getToken returns", async () => {
  const server = await startTidesyncServer();
  const token = server.token("live-get-token");
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`${pages.url}/pages/harness.html`);
    await page.waitForFunction(() => window.harnessReady === true);
    await page.evaluate(async ({ url, token }) => {
      window.asked = 0;
      window.client = await window.tidesync.SyncClient.open({
        name: "get-token-only", serverUrl: url, entityTypes: ["notes"], logLevel: "silent",
        getToken: async () => { window.asked++; return token; },
      });
    }, { url: server.url, token });
    await waitOpen(page);
    assert.ok(await page.evaluate(() => window.asked) >= 1, "getToken was asked");
    assert.equal(await server.metric("tidesync_live_streams"), 1);
  } finally {
    await context.close();
    await server.close();
  }
});

// Storage faults under a running client (issue 11, item 4): the origin's
// quota exhausted mid-registration, a value corrupted by hand in IndexedDB,
// the database deleted (or the origin's storage cleared) under the client,
// the page killed in the middle of a transaction. Each must end in a clear
// TidesyncError, with no confirmed task lost, a corrupt entry moved to the
// dead letters with a reason, and the client usable again without a reload.
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
  await page.evaluate((o) => window.openClient(o), { logLevel: "silent", ...options });
  return page;
}

/** Runs `call` (a string naming a client method call) in the page; resolves {ok, value} or {ok:false, name, code, message}. */
function attempt(page, fn, arg) {
  return page.evaluate(async ([source, a]) => {
    try {
      // eslint-disable-next-line no-new-func
      const value = await new Function("client", "arg", `return (${source})(client, arg);`)(window.client, a);
      return { ok: true, value };
    } catch (error) {
      return { ok: false, name: error?.name, code: error?.code, message: String(error?.message ?? error) };
    }
  }, [fn.toString(), arg]);
}

/** The `tasks` of a client's database, read directly. */
const rawTasks = (page, name) => page.evaluate((db) => new Promise((resolve, reject) => {
  const open = indexedDB.open(`tidesync:${db}`);
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const request = open.result.transaction("tasks").objectStore("tasks").getAll();
    request.onsuccess = () => { open.result.close(); resolve(request.result.map((t) => t.id).sort()); };
    request.onerror = () => reject(request.error);
  };
}), name);

const assertTidesyncError = (outcome, code, what) => {
  assert.equal(outcome.ok, false, `${what} must fail`);
  assert.equal(outcome.name, "TidesyncError", `${what}: a TidesyncError, got ${outcome.name}: ${outcome.message}`);
  assert.equal(outcome.code, code, `${what}: code ${code}, got ${outcome.code}: ${outcome.message}`);
};

test("quota exhausted mid-registration: storage-quota, nothing of the refused write kept, confirmed tasks kept, usable again once space is back", async () => {
  const context = await env.browser.newContext();
  const name = `quota-${Date.now()}`;
  const blank = await context.newPage();
  const cdp = await context.newCDPSession(blank);
  // Chromium takes the quota into account for databases opened after the
  // override: set it first, with room for the database and a few tasks.
  await cdp.send("Storage.overrideQuotaForOrigin", { origin: env.server.url, quotaSize: 1024 * 1024 });
  const page = await openHarness(context, { name, autoFlush: false });
  try {
    const confirmed = [];
    for (let i = 0; i < 5; i++) {
      await page.evaluate((id) => window.client.register(id, { url: "/api/storage/quota", data: { id } }), `small-${i}`);
      confirmed.push(`small-${i}`);
    }
    let refused = null;
    for (let i = 0; i < 40 && !refused; i++) {
      const outcome = await attempt(page, (client, id) => {
        // Random, so that Chromium's compression of large values cannot shrink it.
        let data = "";
        for (let k = 0; k < 2; k++) data += btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(48 * 1024))));
        return client.register(id, { url: "/api/storage/quota", data: { id, data } });
      }, `big-${i}`);
      if (outcome.ok) confirmed.push(`big-${i}`);
      else refused = outcome;
    }
    assert.ok(refused, "the browser refused a write within 40 × 128 KiB past the quota");
    assertTidesyncError(refused, "storage-quota", "a registration past the quota");
    assert.match(refused.message, /space|quota|full/i, "the message says what is wrong");
    assert.deepEqual(await rawTasks(page, name), [...confirmed].sort(), "confirmed tasks kept, nothing of the refused one");

    // Space comes back (the app discarded data, the user freed disk).
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: env.server.url });
    const again = await attempt(page, (client) => client.register("after", { url: "/api/storage/quota", data: { id: "after" } }));
    assert.equal(again.ok, true, `usable again without a reload: ${again.code} ${again.message}`);
    const report = await page.evaluate(() => window.client.flush());
    assert.equal(report.remaining, 0);
    assert.deepEqual(env.server.received("/api/storage/quota").map((r) => r.body.id).sort(), [...confirmed, "after"].sort());
  } finally {
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: env.server.url }).catch(() => {});
    await context.close();
  }
});

test("a task corrupted by hand in IndexedDB goes to the dead letters with a reason; the others are delivered; no reload", async () => {
  const context = await env.browser.newContext();
  const name = `corrupt-${Date.now()}`;
  const page = await openHarness(context, { name, autoFlush: false });
  try {
    for (const id of ["a", "b", "c"]) {
      await page.evaluate((taskId) => window.client.register(taskId, { url: "/api/storage/corrupt", data: { id: taskId } }), id);
    }
    // Corrupt "b" under the running client: its request is a number, its seq a string.
    await page.evaluate((db) => new Promise((resolve, reject) => {
      const open = indexedDB.open(`tidesync:${db}`);
      open.onsuccess = () => {
        const tx = open.result.transaction("tasks", "readwrite");
        const store = tx.objectStore("tasks");
        const get = store.get("b");
        get.onsuccess = () => store.put({ ...get.result, request: 42, seq: "not a number" });
        tx.oncomplete = () => { open.result.close(); resolve(); };
        tx.onerror = () => reject(tx.error);
      };
    }), name);
    const flushed = await attempt(page, (client) => client.flush());
    assert.equal(flushed.ok, true, `flush goes on past the corrupt task: ${flushed.code} ${flushed.message}`);
    assert.deepEqual(env.server.received("/api/storage/corrupt").map((r) => r.body.id).sort(), ["a", "c"]);
    const failed = await page.evaluate(() => window.client.listFailed());
    assert.deepEqual(failed.map((f) => f.id), ["b"], "the corrupt task is a dead letter");
    assert.match(failed[0].reason, /corrupt|unreadable|invalid/i, `with a reason: ${failed[0].reason}`);
    assert.match(failed[0].reason, /"b"/, `the reason names the task: ${failed[0].reason}`);
    assert.match(failed[0].reason, /request/, `and what could not be read: ${failed[0].reason}`);
    assert.equal(failed[0].task.idempotencyKey.length > 0, true, "what could be read is kept");
    // Retrying would send a request that cannot be read: refused, clearly.
    const retried = await attempt(page, (client) => client.retryFailed("b"));
    assertTidesyncError(retried, "storage-corrupt", "retrying an unreadable task");
    assert.match(retried.message, /"b".*register it again/, retried.message);
    assert.equal((await page.evaluate(() => window.client.getStatus())).failedCount, 1);
    const again = await attempt(page, (client) => client.register("d", { url: "/api/storage/corrupt", data: { id: "d" } }));
    assert.equal(again.ok, true);
    const report = await page.evaluate(() => window.client.flush());
    assert.equal(report.remaining, 0);
    assert.deepEqual(env.server.received("/api/storage/corrupt").map((r) => r.body.id).sort(), ["a", "c", "d"]);
  } finally {
    await context.close();
  }
});

test("a client opened over a database holding a corrupt task opens, dead-letters it and keeps the rest (a corrupt record is not quarantined yet: see docs/storage-loss.md)", async () => {
  const context = await env.browser.newContext();
  const name = `corrupt-open-${Date.now()}`;
  let page = await openHarness(context, { name, autoFlush: false });
  try {
    await page.evaluate(() => window.client.register("good", { url: "/api/storage/corrupt-open", data: { id: "good" } }));
    await page.evaluate(() => window.client.register("bad", { url: "/api/storage/corrupt-open", data: { id: "bad" } }));
    await page.evaluate(() => window.client.close());
    await page.evaluate((db) => new Promise((resolve, reject) => {
      const open = indexedDB.open(`tidesync:${db}`);
      open.onsuccess = () => {
        const tx = open.result.transaction("tasks", "readwrite");
        tx.objectStore("tasks").put({ id: "bad", kind: "no such kind", priority: 7 });
        tx.oncomplete = () => { open.result.close(); resolve(); };
        tx.onerror = () => reject(tx.error);
      };
    }), name);
    await page.close();
    page = await context.newPage();
    await page.goto(`${env.server.url}/pages/harness.html`);
    await page.waitForFunction(() => window.harnessReady === true);
    const opened = await page.evaluate(async (o) => {
      try { await window.openClient(o); return { ok: true }; } catch (e) { return { ok: false, code: e.code, message: e.message }; }
    }, { name, autoFlush: false, logLevel: "silent" });
    assert.equal(opened.ok, true, `opens over a corrupt task: ${opened.code} ${opened.message}`);
    const failed = await page.evaluate(() => window.client.listFailed());
    assert.deepEqual(failed.map((f) => f.id), ["bad"]);
    assert.match(failed[0].reason, /^corrupt: the stored task "bad"/, failed[0].reason);
    assert.equal((await page.evaluate(() => window.client.getStatus())).pendingCount, 1, "the good task is queued");
    await page.evaluate(() => window.client.flush());
    assert.deepEqual(env.server.received("/api/storage/corrupt-open").map((r) => r.body.id), ["good"]);
  } finally {
    await context.close();
  }
});

test("the database deleted under a running client: a clear TidesyncError, then usable again without a reload", async () => {
  const context = await env.browser.newContext();
  const name = `deleted-${Date.now()}`;
  const page = await openHarness(context, { name, autoFlush: false });
  try {
    await page.evaluate(() => window.client.register("before", { url: "/api/storage/deleted", data: { id: "before" } }));
    // What "Clear site data" does: the origin's storage is wiped and open
    // connections are closed — here while registrations are being written.
    const inFlight = page.evaluate(async () => {
      const refusals = [];
      for (let group = 0; group < 40; group++) {
        await Promise.all(Array.from({ length: 20 }, (_, i) =>
          window.client.register(`during-${group}-${i}`, { url: "/api/storage/deleted", data: { id: `during-${group}-${i}`, pad: "p".repeat(2000) } })
            .catch((e) => refusals.push({ name: e?.name, code: e?.code, message: String(e?.message) }))));
      }
      return refusals;
    });
    await waitInPage(page, () => window.client.getStatus().pendingCount > 100);
    const cdp = await context.newCDPSession(page);
    await cdp.send("Storage.clearDataForOrigin", { origin: env.server.url, storageTypes: "indexeddb" });
    const refusals = await inFlight;
    assert.ok(refusals.length > 0, "registrations after the wipe are refused");
    for (const r of refusals) {
      assert.equal(r.name, "TidesyncError", `${r.name}: ${r.message}`);
      assert.notEqual(r.code, "storage-quota", `an aborted write is not a quota error: ${r.message}`);
      assert.doesNotMatch(r.message, /IdbError|JsValue\(|DomException \{/, `a message for people, not a Rust debug dump: ${r.message}`);
    }
    const after = await attempt(page, (client) => client.register("after", { url: "/api/storage/deleted", data: { id: "after" } }));
    if (!after.ok) {
      assert.equal(after.name, "TidesyncError", `a TidesyncError, got ${after.name}: ${after.message}`);
      assert.equal(after.code, "storage-unavailable", after.message);
    }
    // Either way the next call works: the client reopens its database.
    const retried = await attempt(page, (client) => client.register("again", { url: "/api/storage/deleted", data: { id: "again" } }));
    assert.equal(retried.ok, true, `usable again: ${retried.code} ${retried.message}`);
    await page.evaluate(() => window.client.flush());
    const ids = env.server.received("/api/storage/deleted").map((r) => r.body.id);
    assert.ok(ids.includes("again"), `delivered after the wipe: ${ids}`);
  } finally {
    await context.close();
  }
});

test("indexedDB.deleteDatabase() from the app while the client is open is not blocked forever", async () => {
  const context = await env.browser.newContext();
  const name = `delete-db-${Date.now()}`;
  const page = await openHarness(context, { name, autoFlush: false });
  try {
    await page.evaluate(() => window.client.register("w", { url: "/api/storage/delete-db", data: { id: "w" } }));
    const outcome = await page.evaluate((db) => new Promise((resolve) => {
      const request = indexedDB.deleteDatabase(`tidesync:${db}`);
      let blocked = false;
      request.onblocked = () => { blocked = true; };
      request.onsuccess = () => resolve({ deleted: true, blocked });
      request.onerror = () => resolve({ deleted: false, error: String(request.error) });
      setTimeout(() => resolve({ deleted: false, blocked, timedOut: true }), 5000);
    }), name);
    assert.equal(outcome.deleted, true, `the delete goes through: ${JSON.stringify(outcome)}`);
    const after = await attempt(page, (client) => client.register("x", { url: "/api/storage/delete-db", data: { id: "x" } }));
    if (!after.ok) assert.equal(after.name, "TidesyncError", `${after.name}: ${after.message}`);
    const retried = await attempt(page, (client) => client.register("y", { url: "/api/storage/delete-db", data: { id: "y" } }));
    assert.equal(retried.ok, true, `usable again: ${retried.code} ${retried.message}`);
    // The loss is reported as the storage-loss work defines it, and the
    // task the client held is written back and delivered.
    await waitInPage(page, () => window.eventsNamed("storage:evicted").length === 1);
    const event = await page.evaluate(() => window.eventsNamed("storage:evicted")[0].args[0]);
    assert.equal(event.seen, "while-open");
    assert.ok((await rawTasks(page, name)).includes("w"), "the queued task written back");
    for (let i = 0; i < 5 && (await page.evaluate(() => window.client.flush())).remaining > 0; i++);
    const ids = env.server.received("/api/storage/delete-db").map((r) => r.body.id);
    for (const id of ["w", "y"]) assert.ok(ids.includes(id), `${id} delivered: ${ids}`);
    assert.equal(new Set(ids).size, ids.length, `each once: ${ids}`);
  } finally {
    await context.close();
  }
});

/**
 * Registers in groups of 20 until `kill` ends the page, then checks from a
 * new page that every task whose register() resolved was stored, once, and
 * that the reopened client sees and delivers each exactly once.
 */
async function killedMidRegistration(tag, kill) {
  const context = await env.browser.newContext();
  const name = `${tag}-${Date.now()}`;
  const url = `/api/storage/${tag}`;
  const confirmed = new Set();
  await context.exposeBinding("confirmTask", (_source, id) => confirmed.add(id));
  let page = await openHarness(context, { name, autoFlush: false });
  try {
    // Keep registering in groups until the page dies.
    page.evaluate(async (url) => {
      for (let i = 0; ; i++) {
        const ids = Array.from({ length: 20 }, (_, j) => `task-${i * 20 + j}`);
        await Promise.all(ids.map((id) => window.client.register(id, { url, data: { id, pad: "p".repeat(2000) } })
          .then(() => window.confirmTask(id))));
      }
    }, url).catch(() => {});
    await waitInPage(page, () => window.client.getStatus().pendingCount > 200, undefined, 30000);
    await kill(context, page);
    if (!page.isClosed()) await page.close();

    page = await openHarness(context, { name, autoFlush: false });
    const stored = await rawTasks(page, name);
    for (const id of confirmed) assert.ok(stored.includes(id), `confirmed ${id} survived`);
    assert.equal(new Set(stored).size, stored.length);
    const queued = await page.evaluate(() => window.client.getStatus().pendingCount);
    assert.equal(queued, stored.length, "the reopened client sees every stored task");
    await page.evaluate((url) => window.client.register("after", { url, data: { id: "after" } }), url);
    for (let i = 0; i < 20 && (await page.evaluate(() => window.client.flush())).remaining > 0; i++);
    const ids = env.server.received(url).map((r) => r.body.id);
    assert.equal(ids.length, stored.length + 1, "each stored task delivered once");
    assert.equal(new Set(ids).size, ids.length);
    console.log(`# ${tag}: ${confirmed.size} confirmed before the kill, ${stored.length} stored`);
  } finally {
    await context.close();
  }
}

test("the page killed in the middle of registering (CDP Page.crash): every confirmed task survives, once, and the reopened client works", async () => {
  await killedMidRegistration("crash", async (context, page) => {
    const crashed = page.waitForEvent("crash");
    const cdp = await context.newCDPSession(page);
    cdp.send("Page.crash").catch(() => {});
    await crashed;
  });
});

test("the tab closed in the middle of registering (CDP Target.closeTarget, no unload): every confirmed task survives, once", async () => {
  await killedMidRegistration("close-target", async (context, page) => {
    const cdp = await context.newCDPSession(page);
    const { targetInfo } = await cdp.send("Target.getTargetInfo");
    const closed = page.waitForEvent("close");
    const browser = await env.browser.newBrowserCDPSession();
    await browser.send("Target.closeTarget", { targetId: targetInfo.targetId });
    await closed;
    await browser.detach().catch(() => {});
  });
});

// Retention (maxRetentionTime) and dependent requests (dependsOn + values)
// in Chromium against a real HTTP server on 127.0.0.1: expired tasks become
// dead letters with reason "expired" and never reach the server; a request
// queued offline that depends on another reaches the server with the id the
// server created for its dependency, after a reload; a dependent of a failed
// task is a dead letter that says why; bad options name the field.
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

test("retention: requests not delivered within maxRetentionTime become dead letters with reason \"expired\" and never reach the server", async () => {
  const context = await env.browser.newContext();
  const page = await harness(context);
  const name = `retention-${Date.now()}`;
  await page.evaluate((name) => window.openClient({ name, maxRetentionTime: 1500, retry: { baseDelay: 200, maxDelay: 400, jitter: false } }), name);
  await context.setOffline(true);
  const queued = await page.evaluate(async () => {
    await window.client.register("short-1", { url: "/api/retention/a", data: { n: 1 } });
    await window.client.register("short-2", { url: "/api/retention/b", data: { n: 2 }, orderingKey: "k" });
    await window.client.register("long", { url: "/api/retention/c", data: { n: 3 }, maxRetentionTime: 600_000 });
    return window.client.listQueued();
  });
  const expiry = Object.fromEntries(queued.map((t) => [t.id, Date.parse(t.expiresAt) - Date.parse(t.createdAt)]));
  assert.deepEqual(expiry, { "short-1": 1500, "short-2": 1500, long: 600_000 }, "expiresAt is stored with each task");

  // Offline past the short limit. Expiry is decided when the client next
  // flushes (here: when the network returns), before anything is sent.
  await new Promise((resolve) => setTimeout(resolve, 1800));
  await context.setOffline(false);
  await page.evaluate(() => window.client.flush());
  await waitInPage(page, () => window.eventsNamed("sync:failed").length >= 2 && window.eventsNamed("sync:complete").length >= 1);
  const failed = await page.evaluate(async () => ({
    events: window.eventsNamed("sync:failed").map((e) => ({ id: e.args[0].id, class: e.args[1].class, reason: e.args[1].reason, message: e.args[1].message })),
    list: (await window.client.listFailed()).map((f) => ({ id: f.id, reason: f.reason })),
    pending: window.client.listQueued().map((t) => t.id),
  }));
  assert.deepEqual(failed.list.map((f) => f.id).sort(), ["short-1", "short-2"]);
  assert.ok(failed.list.every((f) => f.reason === "expired"), JSON.stringify(failed.list));
  for (const event of failed.events) {
    assert.equal(event.class, "expired");
    assert.equal(event.reason, "expired");
    assert.match(event.message, /not delivered within its retention time \(1500 ms\)/);
  }
  assert.deepEqual(failed.pending, [], "the task with its own, longer retention was delivered");
  const received = env.server.received("/api/retention/").map((r) => r.path);
  assert.deepEqual(received, ["/api/retention/c"], "expired tasks never reach the server");
  const health = await page.evaluate(() => window.client.getHealth());
  assert.ok(health.issues.some((i) => i.includes("2 task(s) in the dead letters")), JSON.stringify(health));
  await context.close();
});

test("dependent requests: queued offline, kept across a reload, sent after their dependency with the id the server created", async () => {
  const context = await env.browser.newContext();
  let page = await harness(context);
  const name = `deps-${Date.now()}`;
  await page.evaluate((name) => window.openClient({ name }), name);
  await context.setOffline(true);
  await page.evaluate(async () => {
    await window.client.register("create-note", { url: "/api/deps/notes", data: { title: "Trip" } });
    await window.client.register("attach-photo", {
      url: "/api/deps/notes/{{noteId}}/photos",
      method: "PUT",
      body: new Blob([new Uint8Array([1, 2, 3, 250])], { type: "image/png" }),
      headers: { "x-note": "{{noteId}}" },
      dependsOn: "create-note",
      values: { noteId: "body.serverId" },
    });
    await window.client.register("tag-note", {
      url: "/api/deps/tags",
      data: { note: "{{noteId}}", label: "note {{noteId}}", status: "{{created}}" },
      dependsOn: "create-note",
      values: { noteId: "body.serverId", created: "status" },
      priority: "high",
    });
    await window.client.close();
  });
  await page.close();
  await context.setOffline(false);
  page = await harness(context); // a reload: everything comes back from IndexedDB
  const stored = await page.evaluate(async (name) => {
    await window.openClient({ name, autoFlush: false });
    return window.client.listQueued();
  }, name);
  assert.deepEqual(stored.map((t) => t.id), ["tag-note", "create-note", "attach-photo"], "listed by priority, then seq");
  const tag = stored.find((t) => t.id === "tag-note");
  assert.deepEqual(tag.dependsOn, { task: "create-note", values: { noteId: "body.serverId", created: "status" } });
  assert.equal(tag.orderingKey, "create-note", "a dependent runs in its dependency's chain");

  await page.evaluate(() => window.client.flush());
  await waitInPage(page, () => window.eventsNamed("sync:complete").length === 3);
  const received = env.server.received("/api/deps/");
  assert.equal(received.length, 3, JSON.stringify(received.map((r) => r.path)));
  assert.equal(received[0].path, "/api/deps/notes", "the dependency goes first, whatever the priorities");
  const created = await page.evaluate(() => window.eventsNamed("sync:complete")[0].args[1].body.serverId);
  assert.match(created, /^srv-\d+$/);
  const photo = received.find((r) => r.method === "PUT");
  assert.equal(photo.path, `/api/deps/notes/${created}/photos`, "the URL carries the id the server created");
  assert.equal(photo.headers["x-note"], created);
  assert.deepEqual([...photo.raw], [1, 2, 3, 250], "the file is sent as it was");
  const tagged = received.find((r) => r.path === "/api/deps/tags");
  assert.deepEqual(tagged.body, { note: created, label: `note ${created}`, status: 201 });
  await context.close();
});

test("dependent requests: the dependent of a failed task is a dead letter that says why, and is never sent", async () => {
  const context = await env.browser.newContext();
  const page = await harness(context);
  env.server.script("/api/deps-fail/notes", [{ status: 422, body: { error: "title is required" } }]);
  await page.evaluate((name) => window.openClient({ name }), `deps-fail-${Date.now()}`);
  await context.setOffline(true);
  await page.evaluate(async () => {
    await window.client.register("create", { url: "/api/deps-fail/notes", data: {} });
    await window.client.register("attach", {
      url: "/api/deps-fail/notes/{{id}}/files", data: { x: 1 }, dependsOn: "create", values: { id: "body.id" },
    });
  });
  await context.setOffline(false);
  await page.evaluate(() => window.client.flush());
  await waitInPage(page, () => window.eventsNamed("sync:failed").length === 2);
  const failures = await page.evaluate(() => window.eventsNamed("sync:failed").map((e) => ({ id: e.args[0].id, ...e.args[1] })));
  assert.equal(failures[1].id, "attach");
  assert.equal(failures[1].class, "dependency");
  assert.match(failures[1].reason, /^dependency failed: the task it depends on, "create", failed \(rejected: /);
  assert.deepEqual(env.server.received("/api/deps-fail/").map((r) => r.path), ["/api/deps-fail/notes"]);
  await context.close();
});

test("retention and dependency options are validated: each error is a TidesyncError naming the field", async () => {
  const context = await env.browser.newContext();
  const page = await harness(context);
  const errors = await page.evaluate(async (name) => {
    const capture = async (f) => {
      try { await f(); return null; } catch (error) { return { name: error.name, code: error.code, message: error.message }; }
    };
    const out = [];
    out.push(await capture(() => window.tidesync.SyncClient.open({ name, maxRetentionTime: 0 })));
    await window.openClient({ name });
    const c = window.client;
    await c.register("base", { url: "/api/v/base", data: {} });
    out.push(await capture(() => c.register("a", { url: "/x", maxRetentionTime: -5 })));
    out.push(await capture(() => c.register("a", { url: "/x/{{id}}", dependsOn: "base", values: { id: "body.id" }, orderingKey: "k" })));
    out.push(await capture(() => c.register("a", { url: "/x", values: { id: "body.id" } })));
    out.push(await capture(() => c.register("a", { url: "/x/{{other}}", dependsOn: "base", values: { id: "body.id" } })));
    out.push(await capture(() => c.register("a", { url: "/x/{{id}}", dependsOn: "base", values: { id: "id" } })));
    out.push(await capture(() => c.register("a", { url: "/x", dependsOn: "a" })));
    out.push(await capture(() => c.register("a", { url: "/x/{{id}}", dependsOn: "nobody", values: { id: "body.id" } })));
    return out;
  }, `validate-${Date.now()}`);
  const expected = [
    ["invalid-options", "`maxRetentionTime`"],
    ["invalid-task", "`maxRetentionTime`"],
    ["invalid-task", "`dependsOn`"],
    ["invalid-task", "`values`"],
    ["invalid-task", "`url`"],
    ["invalid-task", "`values.id`"],
    ["invalid-task", "`dependsOn`"],
    ["invalid-task", "`dependsOn`"],
  ];
  errors.forEach((error, i) => {
    assert.equal(error?.name, "TidesyncError", `case ${i}: ${JSON.stringify(error)}`);
    assert.equal(error.code, expected[i][0], `case ${i}: ${error.message}`);
    assert.ok(error.message.includes(expected[i][1]), `case ${i}: ${error.message} names ${expected[i][1]}`);
  });
  await context.close();
});

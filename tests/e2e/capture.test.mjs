// Fetch capture (captureFailedRequests) in a module service worker: the
// example of docs/migrating-from-workbox.md driven in Chromium. A page posts
// FormData with a file and a JSON body with plain fetch() while offline; the
// worker queues them and answers 202; back online the worker replays them
// byte for byte, and the page's client hears the server's answers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { startTestServer } from "./support/server.mjs";
import { useServerAndBrowser } from "./support/browser.mjs";

const env = useServerAndBrowser(startTestServer);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(predicate, message, timeout = 20000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(50);
  }
  assert.fail(`timed out after ${timeout} ms: ${message}`);
}

async function openCapturePage(context) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${env.server.url}/pages/capture/`);
  await page.waitForFunction(() => window.ready === true, undefined, { timeout: 20000 });
  return page;
}

test("the migration guide shows the tested service worker word for word", () => {
  const guide = readFileSync("docs/migrating-from-workbox.md", "utf8");
  const worker = readFileSync("tests/e2e/pages/capture/sw.js", "utf8");
  const code = worker.slice(worker.indexOf("import init"));
  assert.ok(guide.includes(code.trim()), "docs/migrating-from-workbox.md contains tests/e2e/pages/capture/sw.js from its import on");
});

test("capture: FormData with a file and a JSON body posted offline are queued (202 + Tidesync-Task), replayed byte for byte once each, a retry keeps its Idempotency-Key, and the page hears the answers", async () => {
  const context = await env.browser.newContext();
  const page = await openCapturePage(context);
  env.server.script("/api/capture/notes", [{ status: 503, headers: { "retry-after": "1" } }]);

  await context.setOffline(true);
  const sent = await page.evaluate(async () => {
    const b64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)));
    // A file with bytes that are not UTF-8, and a text field.
    const file = new File([new Uint8Array([0, 1, 2, 0xfe, 0xff, 0x80, 13, 10, 45, 45])], "photo.bin",
      { type: "application/octet-stream" });
    const form = new FormData();
    form.append("caption", "Café ✓");
    form.append("photo", file);
    const upload = new Request("/api/capture/upload", { method: "POST", body: form });
    const notes = new Request("/api/capture/notes", {
      method: "POST", headers: { "content-type": "application/json", "x-trace": "t-1" },
      body: JSON.stringify({ title: "written offline", tags: ["ü", 1] }),
    });
    const out = [];
    for (const request of [upload, notes]) {
      // The exact bytes fetch() sends (the multipart boundary is fixed with the Request).
      const bytes = b64(await request.clone().arrayBuffer());
      const contentType = request.headers.get("content-type");
      const response = await fetch(request);
      out.push({ bytes, contentType, status: response.status, task: response.headers.get("tidesync-task"), body: await response.json() });
    }
    return out;
  });
  for (const answer of sent) {
    assert.equal(answer.status, 202, JSON.stringify(answer));
    assert.match(answer.task, /^capture:[0-9a-f-]{36}$/);
    assert.deepEqual(answer.body, { queued: true, taskId: answer.task });
  }
  await sleep(500);
  assert.equal(env.server.received("/api/capture/").length, 0, "nothing reached the server while offline");
  const queued = await page.evaluate(async () => {
    await window.client.flush(); // autoFlush is off and the network is down: this only reads the queue
    return window.client.listQueued();
  });
  assert.deepEqual(queued.map((t) => t.id).sort(), sent.map((s) => s.task).sort());
  assert.ok(queued.every((t) => t.orderingKey === "uploads"));

  await context.setOffline(false); // Chromium fires the worker's `sync` (registered when it queued)
  await until(() => env.server.received("/api/capture/notes").length >= 2 && env.server.received("/api/capture/upload").length >= 1,
    "the worker replays the upload, and the notes after a 503");
  await until(() => page.evaluate(() => window.outcomes.length >= 2), "the page's client hears both outcomes");
  await sleep(500);

  const [upload] = env.server.received("/api/capture/upload");
  assert.equal(env.server.received("/api/capture/upload").length, 1, "the upload is sent once");
  assert.equal(upload.raw.toString("base64"), sent[0].bytes, "the multipart body is byte-identical");
  assert.equal(upload.headers["content-type"], sent[0].contentType, "with its boundary");
  assert.ok(upload.headers["idempotency-key"]);

  const notes = env.server.received("/api/capture/notes");
  assert.equal(notes.length, 2, "503, then delivered once");
  for (const attempt of notes) {
    assert.equal(attempt.raw.toString("base64"), sent[1].bytes, "the JSON body is byte-identical");
    assert.equal(attempt.headers["content-type"], "application/json");
    assert.equal(attempt.headers["x-trace"], "t-1", "the app's own headers are replayed");
  }
  assert.equal(notes[0].headers["idempotency-key"], notes[1].headers["idempotency-key"], "the retry keeps its Idempotency-Key");

  const outcomes = await page.evaluate(() => window.outcomes);
  const byId = Object.fromEntries(outcomes.map((o) => [o.id, o]));
  assert.equal(outcomes.length, 2, JSON.stringify(outcomes));
  assert.equal(byId[sent[0].task].event, "sync:complete");
  assert.equal(byId[sent[0].task].response.status, 201);
  assert.equal(byId[sent[1].task].response.status, 201);
  assert.deepEqual(byId[sent[1].task].response.body.received, { title: "written offline", tags: ["ü", 1] },
    "the page gets the server's answer");
  assert.match(byId[sent[1].task].response.body.serverId, /^srv-\d+$/);
  assert.deepEqual(await page.evaluate(() => window.client.flush().then(() => window.client.getStatus().pendingCount)), 0);
  await context.close();
});

test("capture: online requests are the network's, unmatched ones pass through, and bad options are TidesyncErrors naming the field", async () => {
  const context = await env.browser.newContext();
  const page = await openCapturePage(context);
  const results = await page.evaluate(async () => {
    const online = await fetch("/api/capture/online", { method: "POST", body: "hello" });
    const other = await fetch("/other/path", { method: "POST", body: "x" }); // not under /api/: not captured
    return {
      online: { status: online.status, task: online.headers.get("tidesync-task"), body: await online.json() },
      other: { status: other.status, task: other.headers.get("tidesync-task") },
    };
  });
  assert.equal(results.online.status, 201, "answered by the server");
  assert.equal(results.online.task, null);
  assert.equal(results.online.body.received, "hello");
  assert.equal(results.other.status, 404, "passed through to the server");
  assert.equal(results.other.task, null);
  const online = env.server.received("/api/capture/online");
  assert.equal(online.length, 1);
  assert.ok(online[0].headers["idempotency-key"], "the first attempt carries the key its replays would");

  const errors = await page.evaluate(async () => {
    const request = () => new Request("/api/x", { method: "POST", body: "x" });
    const attempt = async (event, options) => {
      try { await window.client.captureFailedRequests(event, options); return null; }
      catch (error) { return { name: error.name, code: error.code, message: error.message }; }
    };
    return [
      await attempt(request(), { methods: ["GET"] }),
      await attempt(request(), { methods: "POST" }),
      await attempt(request(), { match: 42 }),
      await attempt(request(), { priority: "urgent" }),
      await attempt(request(), { orderingKey: 7 }),
      await attempt(request(), { retries: 3 }),
      await attempt({ url: "/api/x" }, {}),
    ];
  });
  const expected = ["options.methods", "options.methods", "options.match", "options.priority", "options.orderingKey", "options.retries", "event"];
  errors.forEach((error, i) => {
    assert.equal(error?.name, "TidesyncError", JSON.stringify(error));
    assert.equal(error.code, "invalid-options");
    assert.ok(error.message.includes(`\`${expected[i]}\``), `${error.message} names ${expected[i]}`);
  });
  await context.close();
});

test("capture in a page: a Request the network fails is queued and answered 202; its replay is the same request", async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  await page.goto(`${env.server.url}/pages/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate(() => window.openClient({ name: `capture-page-${Date.now()}` }));
  await context.setOffline(true);
  const answer = await page.evaluate(async () => {
    const response = await window.client.captureFailedRequests(
      new Request("/api/capture/page", { method: "PUT", headers: { "content-type": "text/plain" }, body: "plain text ✓" }),
      { match: "/api/capture/", priority: "high" });
    return { status: response.status, task: response.headers.get("tidesync-task"), queued: window.client.listQueued() };
  });
  assert.equal(answer.status, 202);
  assert.equal(answer.queued.length, 1);
  const [task] = answer.queued;
  assert.equal(task.id, answer.task);
  assert.equal(task.priority, "high");
  assert.equal(task.request.method, "PUT");
  assert.deepEqual(task.request.body, { type: "text", value: "plain text ✓" }, "text is stored as text, readable in DevTools");
  await context.setOffline(false);
  await until(() => env.server.received("/api/capture/page").length >= 1, "replayed when the network returns");
  const [replay] = env.server.received("/api/capture/page");
  assert.equal(replay.method, "PUT");
  assert.equal(replay.raw.toString("utf8"), "plain text ✓");
  await page.waitForFunction(() => window.eventsNamed("sync:complete").length === 1);
  await context.close();
});

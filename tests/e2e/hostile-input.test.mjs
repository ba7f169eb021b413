// Hostile input (issue #11, item 6): every public method and option of the
// package, fed wrong types, 10 MB strings, cyclic values, `__proto__` keys,
// getters and Proxy traps that throw, symbols, BigInts, NaN and Infinity,
// sparse arrays, frozen objects, class instances… Each call must either be
// accepted with its value kept exactly (what was stored reads back equal),
// or reject / throw a `TidesyncError` with the method's stable code and a
// message naming the field. Never another error, never a promise that does
// not settle, never a page error or a logged panic, and the client works
// afterwards (a normal register + flush succeeds).
//
// The catalogue of values is tried against every field of every method;
// then a seeded random pass combines several hostile fields per call. The
// seed is printed; `HOSTILE_SEED=<n> node --test tests/e2e/hostile-input.test.mjs`
// replays a run, `HOSTILE_ROUNDS=<n>` sets the random pass's length.
//
// The last tests force a Rust panic through a test-only export
// (`__panicForTest`, cargo feature `test-panic`, built into
// target/pkg-test-panic/ by `bash scripts/build.sh --test-panic`, never in
// pkg/): the panic is logged, every later call on every client rejects (or
// throws) code `closed`, and a promise in flight at the panic rejects too.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { startTestServer } from "./support/server.mjs";
import { startTidesyncServer } from "./support/tidesync-server.mjs";
import { launchBrowser } from "./support/browser.mjs";
import { serveFile } from "../../scripts/static.mjs";

const SEED = Number(process.env.HOSTILE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const ROUNDS = Number(process.env.HOSTILE_ROUNDS ?? 150);
console.log(`[hostile] seed ${SEED}, ${ROUNDS} random rounds (replay: HOSTILE_SEED=${SEED})`);

let pages, server, browser, panicPkg;
before(async () => {
  pages = await startTestServer();
  server = await startTidesyncServer();
  browser = await launchBrowser();
});
after(async () => {
  await panicPkg?.close();
  await browser?.close();
  await server?.close();
  await pages?.close();
});

/** A page with the package loaded; collects page errors and console errors. */
async function harness(url = `${pages.url}/pages/harness.html`) {
  const page = await browser.newPage();
  const errors = [];
  const consoleErrors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  await page.goto(url);
  await page.waitForFunction(() => window.harnessReady === true);
  return { page, errors, consoleErrors };
}

// Runs in the page. Everything it needs is defined inside (Playwright sends
// the function's source).
async function fuzz({ seed, rounds, apiUrl, serverUrl, token, only }) {
  const { SyncClient } = window.tidesync;
  let state = seed >>> 0;
  const rand = () => { // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = (list) => list[Math.floor(rand() * list.length)];

  // ----- the catalogue of hostile values -----
  const boom = () => { throw new Error("hostile trap"); };
  const traps = { get: boom, has: boom, ownKeys: boom, getPrototypeOf: boom, getOwnPropertyDescriptor: boom, apply: boom, construct: boom };
  const revocable = Proxy.revocable({}, {});
  revocable.revoke();
  const cyclic = { a: 1 };
  cyclic.self = cyclic;
  const cyclicArray = [1];
  cyclicArray.push(cyclicArray);
  let deep = {};
  for (let i = 0; i < 100000; i++) deep = { d: deep };
  class Thing { constructor() { this.a = 1; } }
  const HUGE = "x".repeat(10 * 1024 * 1024);
  const VALUES = [
    ["undefined", () => undefined], ["null", () => null], ["true", () => true], ["false", () => false],
    ["0", () => 0], ["-0", () => -0], ["-1", () => -1], ["1.5", () => 1.5], ["NaN", () => NaN],
    ["Infinity", () => Infinity], ["-Infinity", () => -Infinity], ["2**53+2", () => 2 ** 53 + 2],
    ["1e308", () => 1e308], ["-1e308", () => -1e308], ["''", () => ""], ["'x'", () => "x"],
    ["10 MB string", () => HUGE], ["lone surrogate", () => "a\uD800b"],
    ["'__proto__'", () => "__proto__"], ["'constructor'", () => "constructor"], ["'toString'", () => "toString"],
    ["symbol", () => Symbol("hostile")], ["bigint", () => 10n], ["[]", () => []], ["sparse array", () => [1, , 3]],
    ["holes", () => new Array(5)], ["huge sparse array", () => { const a = []; a.length = 2 ** 32 - 1; return a; }],
    ["cyclic object", () => cyclic], ["cyclic array", () => cyclicArray],
    ["__proto__ key", () => JSON.parse('{"__proto__": {"polluted": true}, "ok": 1}')],
    ["constructor key", () => ({ constructor: 1, title: "c" })],
    ["getter throws", () => Object.defineProperty({}, "title", { get: boom, enumerable: true })],
    ["throwing proxy", () => new Proxy({}, traps)], ["throwing array proxy", () => new Proxy([1, 2], traps)],
    ["throwing function proxy", () => new Proxy(function () {}, traps)], ["revoked proxy", () => revocable.proxy],
    ["frozen object", () => Object.freeze({ title: "frozen" })], ["frozen array", () => Object.freeze(["a"])],
    ["function", () => () => 1], ["Date", () => new Date(0)], ["Map", () => new Map([["a", 1]])],
    ["null-prototype object", () => Object.assign(Object.create(null), { title: "np" })],
    ["100,000 levels deep", () => deep], ["class instance", () => new Thing()], ["String object", () => new String("x")],
    ["[symbol]", () => [Symbol("x")]], ["{NaN}", () => ({ n: NaN })], ["{BigInt}", () => ({ n: 1n })],
    ["{undefined}", () => ({ u: undefined, title: "u" })], ["Uint8Array", () => new Uint8Array([1, 2])],
    ["{nested}", () => ({ a: { b: [1, "two", null, { c: true }] }, title: "n" })],
    ["{weird keys}", () => ({ "": 1, "a b": 2, "constructor": 3, "toString": 4, "😀": 5 })],
    ["thenable", () => ({ then: boom })],
  ];

  // ----- the harness -----
  const violations = [];
  const stats = { calls: 0, accepted: 0, rejected: 0, byCode: {} };
  const TIMEOUT = 20000;
  const describe = (e) => `${e?.name}: ${String(e?.message ?? e).slice(0, 300)}`;
  /** Canonical JSON (sorted keys), to compare what was stored with what was given. */
  const canon = (v) => JSON.stringify(v, (_k, x) =>
    x && typeof x === "object" && !Array.isArray(x) ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]])) : x);

  // `codes`: the TidesyncError codes the call may reject with; `fields`: the
  // message must name one of them; `check(result)`: an accepted call's
  // result, returns what is wrong or nothing.
  async function attempt(label, { codes, fields = [], check }, call) {
    stats.calls++;
    let ok, result, error;
    try {
      result = call();
      if (result instanceof Promise) {
        let timer;
        result = await Promise.race([result, new Promise((_, reject) => { timer = setTimeout(() => reject({ hung: true }), TIMEOUT); })])
          .finally(() => clearTimeout(timer));
      }
      ok = true;
    } catch (e) {
      ok = false;
      error = e;
    }
    if (ok) {
      stats.accepted++;
      let why = null;
      try { why = check ? await check(result) : null; } catch (e) { why = `its check threw ${describe(e)}`; }
      if (why) violations.push(`${label}: accepted, but ${why}`);
      return { ok, result };
    }
    stats.rejected++;
    if (error?.hung) {
      violations.push(`${label}: never settled`);
    } else if (!(error instanceof Error) || error.name !== "TidesyncError") {
      violations.push(`${label}: threw ${describe(error)}`);
    } else {
      stats.byCode[error.code] = (stats.byCode[error.code] ?? 0) + 1;
      if (!codes.includes(error.code)) violations.push(`${label}: code ${error.code}, expected ${codes.join(" | ")} (${error.message.slice(0, 200)})`);
      if (error.code.startsWith("invalid-") && fields.length && !fields.some((f) => error.message.includes(f))) {
        violations.push(`${label}: the message names none of ${fields.join(", ")}: ${error.message.slice(0, 300)}`);
      }
      if (/panicked|unreachable|RuntimeError/.test(error.message)) violations.push(`${label}: ${error.message.slice(0, 200)}`);
    }
    return { ok, error };
  }

  const isReport = (r) => r && ["sent", "completed", "failed", "retried", "remaining"].every((k) => Number.isInteger(r[k]))
    && (r.nextWakeupAt === undefined || r.nextWakeupAt === null || typeof r.nextWakeupAt === "string");
  const checkReport = (r) => (isReport(r) ? null : `the flush report is ${JSON.stringify(r)}`);

  let opened = 0;
  const open = async (extra = {}) => SyncClient.open({ name: `hostile-${seed}-${opened++}`, autoFlush: false, logLevel: "silent", retry: { maxRetries: 0 }, ...extra });
  const plain = await open();
  const replicated = await open({ serverUrl, token, entityTypes: ["notes"], live: false });

  /** A normal register + flush on `client` succeeds: the client still works. */
  async function stillWorks(client, label) {
    const id = `still-works-${stats.calls}`;
    await attempt(`${label}: a normal register afterwards`, { codes: [], check: (t) => (t?.id === id ? null : `it resolved ${JSON.stringify(t)?.slice(0, 200)}`) },
      () => client.register(id, { url: `${apiUrl}/api/still-works`, data: { ok: true } }));
    await attempt(`${label}: a normal flush afterwards`, { codes: [], check: checkReport }, () => client.flush());
    await attempt(`${label}: the normal task completed`, { codes: [], check: (s) => (s === null || s.state === "complete" ? null : `its status is ${JSON.stringify(s)}`) },
      () => client.getTaskStatus(id));
  }

  const setPath = (object, path, value) => {
    const keys = path.split(".");
    let at = object;
    for (const key of keys.slice(0, -1)) at = at[key] = { ...(at[key] ?? {}) };
    at[keys.at(-1)] = value;
    return object;
  };

  // ----- the methods, each with the fields a hostile value goes into -----
  // `make(value, field)` makes the call; `expect(field)` what a rejection
  // may be; `check(result, value, field)` an accepted call's result.
  const OPEN_FIELDS = ["(options)", "name", "serverUrl", "token", "getToken", "entityTypes", "retry", "retry.maxRetries",
    "retry.baseDelay", "retry.maxDelay", "retry.backoffMultiplier", "retry.jitter", "circuitBreaker",
    "circuitBreaker.failureThreshold", "circuitBreaker.cooldown", "conflictStrategy", "onConflict", "batchSize",
    "pageSize", "logLevel", "concurrency", "requestTimeout", "closeTimeout", "autoFlush", "live", "pullInterval",
    "maxRetentionTime", "retires"];
  const TASK_FIELDS = ["(id)", "(options)", "url", "method", "data", "data.nested", "body", "headers", "headers.X-Test",
    "priority", "orderingKey", "retryOnFailure", "maxRetentionTime", "dependsOn", "values", "retires"];
  const RECORD_FIELDS = ["(entityType)", "(record)", "id", "title", "nested.deeper"];
  const stored = (task) => task?.request?.body?.value;
  const methods = {
    open: {
      fields: OPEN_FIELDS,
      expect: (f) => ({ codes: ["invalid-options"], fields: f === "(options)" ? ["option", "`name`"] : [f] }),
      make: (v, f) => {
        if (f === "(options)") return SyncClient.open(v);
        const options = { name: `hostile-${seed}-${opened++}`, autoFlush: false, logLevel: "silent" };
        if (f === "name") delete options.name;
        return SyncClient.open(setPath(options, f, v));
      },
      check: async (client) => {
        if (!(client instanceof SyncClient)) return `it resolved ${typeof client}`;
        await client.close();
        return null;
      },
    },
    register: {
      fields: TASK_FIELDS,
      expect: (f) => ({
        codes: ["invalid-task"],
        fields: { "(id)": ["id"], "(options)": ["option", "`url`", "`body`"], "data.nested": ["data"], "headers.X-Test": ["headers"], values: ["values", "dependsOn"] }[f] ?? [f],
      }),
      make: (v, f) => {
        const options = { url: `${apiUrl}/api/hostile`, data: { n: 1 } };
        if (f === "(id)") return plain.register(v, options);
        if (f === "(options)") return plain.register("hostile-task", v);
        if (f === "body") delete options.data;
        if (f === "values") options.dependsOn = "hostile-earlier";
        return plain.register("hostile-task", setPath(options, f, v));
      },
      check: (task, v, f) => {
        if (!task || typeof task.id !== "string") return `it resolved ${JSON.stringify(task)?.slice(0, 200)}`;
        if (f === "data" && canon(stored(task)) !== canon(v ?? undefined)) return `data was stored as ${canon(stored(task))?.slice(0, 200)}`;
        if (f === "data.nested" && canon(stored(task)) !== canon({ n: 1, nested: v })) return `data was stored as ${canon(stored(task))?.slice(0, 200)}`;
        return null;
      },
    },
    put: {
      fields: RECORD_FIELDS,
      // A 10 MB record is valid; every subscription would then copy it
      // (record volume is tests/e2e/replication-volume.test.mjs's).
      skip: (v) => v === HUGE,
      expect: (f) => ({ codes: ["invalid-record", "unknown-entity-type"], fields: [{ "(entityType)": "entityType", "(record)": "record", "nested.deeper": "record.nested", id: "id" }[f] ?? `record.${f}`] }),
      make: (v, f) => {
        if (f === "(entityType)") return replicated.put(v, { title: "t" });
        if (f === "(record)") return replicated.put("notes", v);
        return replicated.put("notes", setPath({ title: "t" }, f, v));
      },
      check: async (record, v, f) => {
        const given = f === "(record)" ? v : f === "(entityType)" ? { title: "t" } : setPath({ title: "t" }, f, v);
        const reserved = ["id", "version", "updatedAt", "isDeleted", "syncStatus", "syncError", "changedAt"];
        const keep = (r) => Object.fromEntries(Object.entries(r).filter(([k]) => !reserved.includes(k)));
        if (canon(keep(record)) !== canon(keep(JSON.parse(JSON.stringify(given))))) return `it stored ${canon(keep(record)).slice(0, 200)}`;
        const back = await replicated.get("notes", record.id);
        if (canon(back) !== canon(record)) return `get() read back ${canon(back).slice(0, 200)}`;
        return null;
      },
    },
    get: {
      fields: ["(entityType)", "(id)"],
      expect: (f) => ({ codes: ["invalid-record", "unknown-entity-type"], fields: [f.slice(1, -1)] }),
      make: (v, f) => (f === "(id)" ? replicated.get("notes", v) : replicated.get(v, "x")),
      check: (r) => (r === null || typeof r?.id === "string" ? null : `it resolved ${JSON.stringify(r)}`),
    },
    delete: {
      fields: ["(entityType)", "(id)"],
      expect: (f) => ({ codes: ["invalid-record", "unknown-entity-type"], fields: [f.slice(1, -1)] }),
      make: (v, f) => (f === "(id)" ? replicated.delete("notes", v) : replicated.delete(v, "x")),
      check: (r) => (typeof r === "boolean" ? null : `it resolved ${JSON.stringify(r)}`),
    },
    query: {
      fields: ["(entityType)"],
      expect: () => ({ codes: ["invalid-record", "unknown-entity-type"], fields: ["entityType"] }),
      make: (v) => replicated.query(v),
      check: (r) => (Array.isArray(r) ? null : `it resolved ${JSON.stringify(r)}`),
    },
    subscribe: {
      fields: ["(entityType)", "(query)", "(callback)", "where", "orderBy", "limit"],
      expect: (f) => ({ codes: ["invalid-query", "invalid-record", "unknown-entity-type"], fields: [f.replace(/[()]/g, "")] }),
      make: (v, f) => {
        const cb = () => {};
        if (f === "(entityType)") return replicated.subscribe(v, {}, cb);
        if (f === "(query)") return replicated.subscribe("notes", v, cb);
        if (f === "(callback)") return replicated.subscribe("notes", {}, v);
        return replicated.subscribe("notes", { [f]: v }, cb);
      },
      check: (off) => {
        if (typeof off !== "function") return `it returned ${typeof off}`;
        off();
        return null;
      },
    },
    on: {
      fields: ["(event)", "(listener)"],
      expect: (f) => ({ codes: ["invalid-event"], fields: [f.slice(1, -1)] }),
      make: (v, f) => (f === "(event)" ? plain.on(v, () => {}) : plain.on("status", v)),
      check: (off, _v, _f) => {
        if (typeof off !== "function") return `it returned ${typeof off}`;
        off(Symbol("x"), 1n);
        return null;
      },
    },
    startPeriodicSync: {
      fields: ["(intervalMs)"],
      expect: () => ({ codes: ["invalid-options"], fields: ["intervalMs"] }),
      make: (v) => plain.startPeriodicSync(v),
      check: () => { plain.stopPeriodicSync(); return null; },
    },
    setToken: {
      fields: ["(token)"],
      expect: () => ({ codes: ["invalid-options"], fields: ["token"] }),
      make: (v) => plain.setToken(v),
    },
    getTaskStatus: { fields: ["(id)"], expect: () => ({ codes: ["invalid-task"], fields: ["id"] }), make: (v) => plain.getTaskStatus(v) },
    retryFailed: {
      fields: ["(id)"], expect: () => ({ codes: ["invalid-task"], fields: ["id"] }), make: (v) => plain.retryFailed(v),
      check: (r) => (typeof r === "boolean" ? null : `it resolved ${JSON.stringify(r)}`),
    },
    discardFailed: {
      fields: ["(id)"], expect: () => ({ codes: ["invalid-task"], fields: ["id"] }), make: (v) => plain.discardFailed(v),
      check: (r) => (typeof r === "boolean" ? null : `it resolved ${JSON.stringify(r)}`),
    },
    handleSyncEvent: {
      fields: ["(tag)"],
      expect: () => ({ codes: ["invalid-options", "sync-incomplete"], fields: ["tag", "remain"] }),
      make: (v) => plain.handleSyncEvent(v),
      check: checkReport,
    },
    requestBackgroundSync: {
      // A string tag waits for a service worker this page does not have:
      // only the refusals are tried.
      fields: ["(tag)"],
      skip: (v) => typeof v === "string" || v === undefined || v === null,
      expect: () => ({ codes: ["invalid-options"], fields: ["tag"] }),
      make: (v) => plain.requestBackgroundSync(v),
    },
    captureFailedRequests: {
      fields: ["(event)", "(options)", "match", "methods", "priority", "orderingKey", "retryOnFailure", "maxRetentionTime"],
      expect: (f) => ({ codes: ["invalid-options"], fields: [f.startsWith("(") ? f.slice(1, -1) : `options.${f}`] }),
      make: (v, f) => {
        const request = new Request(`${apiUrl}/api/capture`, { method: "POST", body: "x" });
        if (f === "(event)") return plain.captureFailedRequests(v);
        if (f === "(options)") return plain.captureFailedRequests({ request }, v);
        return plain.captureFailedRequests({ request }, { [f]: v });
      },
      check: (r) => (r instanceof Response ? null : `it resolved ${typeof r}`),
    },
    flush: { fields: ["(extra argument)"], expect: () => ({ codes: [] }), make: (v) => plain.flush(v, v), check: checkReport },
    "sync/pull/verify": {
      fields: ["(extra argument)"],
      expect: () => ({ codes: [] }),
      make: async (v) => {
        const s = await replicated.sync(v);
        const p = await replicated.pull(v);
        const r = await replicated.verify(v);
        return { s, p, r };
      },
      check: ({ s, p, r }) => (Number.isInteger(s?.pushed) && Number.isInteger(p?.pulled) && Array.isArray(r) ? null : "a report is malformed"),
    },
    "status getters": {
      fields: ["(extra argument)"],
      expect: () => ({ codes: [] }),
      make: (v) => [plain.getStatus(v), plain.getMetrics(v), plain.getHealth(v), plain.listQueued(v), replicated.getLiveStatus(v)],
      check: (all) => (all.every((x) => x && typeof x === "object") ? null : "a getter returned no object"),
    },
    devtools: {
      fields: ["(console hook)", "(channel message)"],
      expect: () => ({ codes: [] }),
      make: async (v, f) => {
        if (f === "(console hook)") {
          const hook = globalThis.__TIDESYNC__.clients.get(plain.name);
          return [hook.status(v), hook.metrics(v), hook.health(v), await hook.failed(v), await hook.snapshot(v)];
        }
        const channel = new BroadcastChannel(`tidesync:${plain.name}`);
        for (const message of [v, { type: v }, { type: "retryFailed", id: v }, { type: "discardFailed", id: v }, { type: "outcome", event: v, args: v }]) {
          try { channel.postMessage(message); } catch { /* not cloneable: the channel never sees it */ }
        }
        await new Promise((ok) => setTimeout(ok, 20));
        channel.close();
        return [];
      },
    },
  };

  const run = async (name, field, valueName, value) => {
    const method = methods[name];
    if (method.skip?.(value)) return;
    const label = `${name} ${field} = ${valueName}`;
    await attempt(label, { ...method.expect(field), check: method.check && ((r) => method.check(r, value, field)) }, () => method.make(value, field));
  };

  // 1. Every value of the catalogue into every field of every method.
  for (const name of Object.keys(methods)) {
    if (only && !only.includes(name)) continue;
    for (const field of methods[name].fields) {
      for (const [valueName, make] of VALUES) await run(name, field, valueName, make());
    }
    await stillWorks(plain, `after ${name}`);
  }
  // 2. Seeded random calls: several hostile fields at once.
  const names = Object.keys(methods).filter((n) => !only || only.includes(n));
  for (let round = 0; round < rounds; round++) {
    const name = pick(names);
    const method = methods[name];
    if (name === "open" || name === "register" || name === "put") {
      const chosen = [pick(method.fields), pick(method.fields), pick(method.fields)].filter((f) => !f.startsWith("("));
      const values = chosen.map(() => pick(name === "put" ? VALUES.filter(([n]) => n !== "10 MB string") : VALUES));
      const label = `round ${round}: ${name} ${chosen.map((f, i) => `${f} = ${values[i][0]}`).join(", ")}`;
      const base = name === "open" ? { name: `hostile-${seed}-${opened++}`, autoFlush: false, logLevel: "silent" }
        : name === "register" ? { url: `${apiUrl}/api/hostile`, data: { n: 1 } } : { title: "t" };
      chosen.forEach((f, i) => setPath(base, f, values[i][1]()));
      const call = name === "open" ? () => SyncClient.open(base)
        : name === "register" ? () => plain.register(`round-${round}`, base) : () => replicated.put("notes", base);
      const codes = { open: ["invalid-options"], register: ["invalid-task"], put: ["invalid-record"] }[name];
      const fields = chosen.map((f) => (name === "put" ? "record" : f.split(".")[0]));
      await attempt(label, { codes, fields: fields.length ? fields : [], check: name === "open" ? methods.open.check : null }, call);
    } else {
      const [valueName, make] = pick(VALUES);
      await run(name, pick(method.fields), `${valueName} (round ${round})`, make());
    }
  }
  await stillWorks(plain, "after the random rounds");
  await stillWorks(replicated, "the replicated client, at the end");
  await plain.close();
  await replicated.close();
  return { violations, stats };
}

test("hostile values into every public method: TidesyncError naming the field, or the value kept exactly", { timeout: 600_000 }, async () => {
  const { page, errors, consoleErrors } = await harness();
  const token = server.token("hostile");
  const { violations, stats } = await page.evaluate(fuzz, {
    seed: SEED, rounds: ROUNDS, apiUrl: pages.url, serverUrl: server.url, token,
    only: process.env.HOSTILE_ONLY?.split(","),
  });
  console.log(`[hostile] ${stats.calls} calls: ${stats.accepted} accepted, ${stats.rejected} rejected ${JSON.stringify(stats.byCode)}`);
  assert.deepEqual(violations, [], `seed ${SEED}: ${violations.length} violation(s)`);
  assert.deepEqual(errors, [], "no uncaught page error");
  assert.deepEqual(consoleErrors.filter((m) => /panicked|unreachable|RuntimeError/.test(m)), [], "no panic logged");
  assert.ok(stats.calls > 1000, `only ${stats.calls} calls were made`);
  await page.close();
});

test("flush() resolves a complete report (it used to resolve undefined when the report could not be converted)", async () => {
  const { page } = await harness();
  const report = await page.evaluate(async (apiUrl) => {
    const client = await window.tidesync.SyncClient.open({ name: "hostile-flush-report", autoFlush: false, logLevel: "silent" });
    await client.register("one", { url: `${apiUrl}/api/one`, data: { a: 1 } });
    const report = await client.flush();
    await client.close();
    return report;
  }, pages.url);
  assert.deepEqual(Object.keys(report).sort(), ["completed", "failed", "remaining", "retried", "sent"].concat("nextWakeupAt" in report ? ["nextWakeupAt"] : []).sort());
  assert.equal(report.sent, 1);
  assert.equal(report.completed, 1);
  await page.close();
});

// ----- a forced panic (test-only build) -----

async function panicPage() {
  if (!panicPkg) {
    execFileSync("bash", ["scripts/build.sh", "--test-panic"], { stdio: "inherit" });
    const html = `<!doctype html><script type="module">
      import init, * as tidesync from "/pkg/tidesync.js";
      await init();
      window.tidesync = tidesync;
      window.harnessReady = true;
    </script>`;
    const http = createServer((req, res) => {
      const path = new URL(req.url, "http://127.0.0.1").pathname;
      if (path.startsWith("/pkg/") && serveFile("target/pkg-test-panic", path.slice(5), res)) return;
      res.writeHead(200, { "content-type": "text/html" }).end(html);
    });
    await new Promise((ok) => http.listen(0, "127.0.0.1", ok));
    panicPkg = { url: `http://127.0.0.1:${http.address().port}/`, close: () => new Promise((ok) => http.close(ok)) };
  }
  return harness(panicPkg.url);
}

// Every entry point of two clients after the panic: each must reject or
// throw TidesyncError `closed`.
async function afterPanic(apiUrl) {
  const [a, b] = window.clients;
  const calls = {
    "SyncClient.open": () => window.tidesync.SyncClient.open({ name: "after-panic" }),
    "a.register": () => a.register("x", { url: `${apiUrl}/api/x` }),
    "b.register": () => b.register("y", { url: `${apiUrl}/api/y` }),
    "a.flush": () => a.flush(),
    "b.flush": () => b.flush(),
    "a.put": () => a.put("notes", { title: "t" }),
    "a.get": () => a.get("notes", "x"),
    "a.query": () => a.query("notes"),
    "a.sync": () => a.sync(),
    "b.getTaskStatus": () => b.getTaskStatus("x"),
    "b.listFailed": () => b.listFailed(),
    "b.close": () => b.close(),
    "a.on": () => a.on("status", () => {}),
    "a.getStatus": () => a.getStatus(),
    "b.getMetrics": () => b.getMetrics(),
    "b.setToken": () => b.setToken("t"),
    "a.subscribe": () => a.subscribe("notes", () => {}),
    "devtools status()": () => globalThis.__TIDESYNC__.clients.get(b.name).status(),
  };
  const outcomes = {};
  for (const [name, call] of Object.entries(calls)) {
    try {
      await call();
      outcomes[name] = "accepted";
    } catch (e) {
      outcomes[name] = e?.name === "TidesyncError" ? e.code : `${e?.name}: ${e?.message}`;
    }
  }
  return outcomes;
}

const allClosed = (outcomes) => Object.fromEntries(Object.keys(outcomes).map((k) => [k, "closed"]));

test("after a panic inside a task: logged once, the pending promise rejects, every later call rejects `closed`", { timeout: 600_000 }, async () => {
  const { page, errors, consoleErrors } = await panicPage();
  const pending = await page.evaluate(async () => {
    window.clients = [
      await window.tidesync.SyncClient.open({ name: "panic-a", autoFlush: false, logLevel: "silent" }),
      await window.tidesync.SyncClient.open({ name: "panic-b", autoFlush: false, logLevel: "silent" }),
    ];
    try {
      await window.tidesync.__panicForTest(true);
      return "resolved";
    } catch (e) {
      return e?.name === "TidesyncError" ? e.code : `${e?.name}: ${e?.message}`;
    }
  });
  assert.equal(pending, "closed", "the promise in flight at the panic rejects `closed`");
  const outcomes = await page.evaluate(afterPanic, pages.url);
  assert.deepEqual(outcomes, allClosed(outcomes));
  const panics = consoleErrors.filter((m) => m.includes("panicked at"));
  assert.equal(panics.length, 1, `one panic logged: ${JSON.stringify(consoleErrors)}`);
  assert.match(panics[0], /a panic for the test, inside a task/);
  assert.match(panics[0], /src\/api\/guard\.rs:\d+:\d+/, "the log names the location");
  assert.ok(errors.every((e) => /unreachable|RuntimeError/.test(e)), `only the trap itself is uncaught: ${errors}`);
  await page.close();
});

test("after a panic in a synchronous call: the caller gets the trap, every later call rejects `closed`", { timeout: 600_000 }, async () => {
  const { page, consoleErrors } = await panicPage();
  const thrown = await page.evaluate(async () => {
    window.clients = [
      await window.tidesync.SyncClient.open({ name: "panic-c", autoFlush: false, logLevel: "silent" }),
      await window.tidesync.SyncClient.open({ name: "panic-d", autoFlush: false, logLevel: "silent" }),
    ];
    try {
      window.tidesync.__panicForTest(false);
      return "returned";
    } catch (e) {
      return e?.constructor?.name;
    }
  });
  assert.equal(thrown, "RuntimeError", "the trap reaches the caller");
  const outcomes = await page.evaluate(afterPanic, pages.url);
  assert.deepEqual(outcomes, allClosed(outcomes));
  assert.equal(consoleErrors.filter((m) => m.includes("panicked at")).length, 1);
  await page.close();
});

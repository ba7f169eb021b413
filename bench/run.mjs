// Tidesync benchmarks in Debian's headless Chromium against a real HTTP server
// on 127.0.0.1, with Workbox Background Sync side by side when its bundle is
// there (bench/workbox/dist/queue.js, made by scripts/bench.sh).
//
// Benchmarks measure; they assert nothing about speed. Each timed
// measurement runs in a fresh browser context (a fresh IndexedDB) and reports
// the median of its runs. Prints a table and writes bench/results/latest.json.
//
//   node bench/run.mjs                       the standard set (6–8 minutes on 2 cores)
//   BENCH_RUNS=5 node bench/run.mjs          runs of each short measurement (default 3)
//   BENCH_LONG_RUNS=3 node bench/run.mjs     runs of each measurement of 10,000 tasks one
//                                            request or transaction at a time (default 1:
//                                            25 s to 2 min each)
//   BENCH_ONLY='replay\.1000' node bench/run.mjs  only the measurements whose id matches
//   BENCH_LIVE_SAMPLES=100 node bench/run.mjs  writes per live latency row (default 30;
//                                            bench/live.mjs)
//   BENCH_SMOKE=1 node bench/run.mjs         the smoke form `npm test` runs: every row at
//                                            200 items, one run, Workbox required; fails
//                                            unless every row produced a figure (it never
//                                            judges a speed); writes bench/results/smoke.json
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { execFileSync } from "node:child_process";
import { gzipSync } from "node:zlib";
import { startBenchServer } from "./server.mjs";
import { startTidesyncServer } from "../tests/e2e/support/tidesync-server.mjs";
import { liveRows } from "./live.mjs";
import { launchBrowser } from "../tests/e2e/support/browser.mjs";

const SMOKE = process.env.BENCH_SMOKE === "1";
/** Every size of the standard set becomes this one in the smoke form. */
const SMOKE_N = 200;
const RUNS = Number(process.env.BENCH_RUNS ?? (SMOKE ? 1 : 3));
const LONG_RUNS = Number(process.env.BENCH_LONG_RUNS ?? 1);
/** The sizes of one row kind: the standard ones, or the smoke size once. */
const sizes = (standard) => (SMOKE ? [...new Set(standard.map((n) => (n === 0 ? 0 : SMOKE_N)))] : standard);
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : null;
const selected = (id) => !ONLY || ONLY.test(id);
/** The server answers these paths this many ms late (a server across a network). */
const LATENCY_MS = 20;
const LATENCY_N = 200;
const WORKBOX = existsSync("bench/workbox/dist/queue.js");
if (SMOKE && !WORKBOX) throw new Error("the smoke bench needs Workbox's bundle (bench/workbox/dist/queue.js): run it through scripts/bench.sh");
const started = Date.now();

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const log = (...args) => console.error(`[bench +${((Date.now() - started) / 1000).toFixed(0)}s]`, ...args);

// Measure one build: a snapshot of pkg/ taken now, so a rebuild of pkg/
// during the run (scripts/build.sh swaps it) cannot mix two builds.
const pkgDir = mkdtempSync(join(tmpdir(), "tidesync-bench-pkg-"));
for (let attempt = 1; ; attempt++) {
  try {
    cpSync("pkg", pkgDir, { recursive: true });
    break;
  } catch (error) {
    if (attempt >= 20) throw error; // pkg/ is swapped in one rename: retry briefly
    await new Promise((ok) => setTimeout(ok, 250));
  }
}
process.on("exit", () => rmSync(pkgDir, { recursive: true, force: true }));
let commit = "unknown";
let srcChanged = null;
try {
  commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  srcChanged = execFileSync("git", ["status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"], { encoding: "utf8" }).trim().length > 0;
} catch { /* not a checkout */ }
const pkgBuiltAt = statSync(join(pkgDir, "tidesync_bg.wasm")).mtime.toISOString();
const server = await startBenchServer({ pkgDir });
const browser = await launchBrowser();
let pathSeq = 0;

async function openPage(kind) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => log(`${kind} page error:`, e.message));
  await page.goto(`${server.url}/bench/${kind}.html`);
  await page.waitForFunction(() => window.benchReady === true, undefined, { timeout: 30000 });
  return { context, page };
}

/** Polls CDP Runtime.getHeapUsage while `work` runs; returns [result, peak used bytes, baseline]. */
async function withHeapSampling(context, page, work) {
  const cdp = await context.newCDPSession(page);
  await cdp.send("HeapProfiler.collectGarbage");
  const baseline = (await cdp.send("Runtime.getHeapUsage")).usedSize;
  let peak = baseline;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      try {
        const { usedSize } = await cdp.send("Runtime.getHeapUsage");
        peak = Math.max(peak, usedSize);
      } catch { break; }
      await new Promise((ok) => setTimeout(ok, 50));
    }
  })();
  try {
    return [await work(), peak, baseline];
  } finally {
    sampling = false;
    await sampler;
    await cdp.detach().catch(() => {});
  }
}

const results = [];

/**
 * One measurement: `run(i)` returns {count, ms, extra}; the median rate is
 * count / seconds over the runs.
 */
async function measure(spec, runs, run) {
  if (!selected(spec.id)) return;
  const rates = [];
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const sample = await run(i);
    if (sample.value !== undefined) {
      // A figure that is not a rate (a time, a memory size).
      rates.push(sample.value);
      samples.push({ value: sample.value, ...sample.extra });
      log(`${spec.id} run ${i + 1}/${runs}: ${sample.value} ${spec.unit}`);
      continue;
    }
    const rate = sample.count / (sample.ms / 1000);
    rates.push(rate);
    samples.push({ ms: Math.round(sample.ms), rate: Math.round(rate), ...sample.extra });
    log(`${spec.id} run ${i + 1}/${runs}: ${sample.count} in ${Math.round(sample.ms)} ms = ${Math.round(rate)}/s`);
  }
  const byRate = samples.map((s, i) => [rates[i], s]).sort((a, b) => a[0] - b[0]);
  const medianSample = byRate[Math.floor((byRate.length - 1) / 2)][1];
  const figure = median(rates);
  results.push({ ...spec, runs, median: figure >= 100 ? Math.round(figure) : Math.round(figure * 10) / 10, unit: spec.unit, samples, medianSample });
}

// ---------- Tidesync ----------

async function tidesyncEnqueue(n, mode) {
  const { context, page } = await openPage("tidesync");
  try {
    const path = `/api/tidesync-enqueue-${++pathSeq}`;
    const r = await page.evaluate((a) => window.enqueue(a), { name: `enqueue-${pathSeq}`, n, mode, path });
    if (r.pending !== n) throw new Error(`expected ${n} queued, found ${r.pending}`);
    return { count: n, ms: r.ms, extra: { registerTransactions: r.registerTransactions, idbTransactions: r.idb } };
  } finally {
    await context.close();
  }
}

async function tidesyncReplay(n, concurrency, sampleHeap, latency = 0) {
  const { context, page } = await openPage("tidesync");
  try {
    const path = `/api/${latency ? `latency-${latency}/` : ""}tidesync-replay-${++pathSeq}`;
    const prepared = await page.evaluate((a) => window.prepareReplay(a), { name: `replay-${pathSeq}`, n, concurrency, path });
    if (prepared.pending !== n) throw new Error(`expected ${n} queued, found ${prepared.pending}`);
    if (server.count(path) !== 0) throw new Error("requests left before flush() (autoFlush: false)");
    const replay = () => page.evaluate(() => window.replay());
    let r, peak = null, baseline = null;
    if (sampleHeap) [r, peak, baseline] = await withHeapSampling(context, page, replay);
    else r = await replay();
    const delivered = server.count(path);
    if (delivered !== n || r.pending !== 0) throw new Error(`delivered ${delivered} of ${n}, ${r.pending} still queued`);
    return {
      count: n, ms: r.ms,
      extra: {
        flushes: r.flushes, idbTransactions: r.idb, averageRequestMs: Math.round(r.averageRequestMs * 10) / 10,
        wasmMemoryBytes: r.wasmMemoryBytes, ...(sampleHeap ? { peakJsHeapBytes: peak, baselineJsHeapBytes: baseline } : {}),
      },
    };
  } finally {
    await context.close();
  }
}

/**
 * Cold start: a page queues n tasks and closes; a fresh page (same browser
 * context, so the same IndexedDB) then times init() + SyncClient.open() and
 * the memory held with the queue loaded (JS heap after a forced GC).
 */
async function coldStart(n) {
  const context = await browser.newContext();
  try {
    const name = `cold-${++pathSeq}`;
    const load = async () => {
      const page = await context.newPage();
      page.on("pageerror", (e) => log(`cold page error:`, e.message));
      await page.goto(`${server.url}/bench/cold.html`);
      await page.waitForFunction(() => window.benchReady === true, undefined, { timeout: 30000 });
      return page;
    };
    const filler = await load();
    const filled = await filler.evaluate((a) => window.fill(a), { name, n, path: `/api/cold-${pathSeq}` });
    if (filled.pending !== n) throw new Error(`cold start: ${filled.pending} of ${n} queued`);
    await filler.close();
    const page = await load();
    const r = await page.evaluate((a) => window.coldOpen(a), { name });
    if (r.pending !== n) throw new Error(`cold start: the client opened with ${r.pending} of ${n} queued`);
    const cdp = await context.newCDPSession(page);
    await cdp.send("HeapProfiler.collectGarbage");
    const { usedSize } = await cdp.send("Runtime.getHeapUsage");
    await cdp.detach().catch(() => {});
    return { ms: r.ms, wasmMemoryBytes: r.wasmMemoryBytes, jsHeapBytes: usedSize, wasmMemoryAfterRegisteringBytes: filled.wasmMemoryBytes };
  } finally {
    await context.close();
  }
}

/** The browser's enqueue limit: plain IndexedDB puts of a task-shaped record, no SDK. */
async function idbLimit(n, mode) {
  const { context, page } = await openPage("tidesync");
  try {
    const r = await page.evaluate((a) => window.idbLimit(a), { name: `limit-${++pathSeq}`, n, mode, path: `/api/limit-${pathSeq}` });
    if (r.pending !== n) throw new Error(`IndexedDB limit: ${r.pending} of ${n} stored`);
    return { count: n, ms: r.ms, extra: { idbTransactions: r.idb } };
  } finally {
    await context.close();
  }
}

async function registerBehindBacklog(backlog, n) {
  const { context, page } = await openPage("tidesync");
  try {
    const path = `/api/tidesync-behind-${++pathSeq}`;
    const failPath = `/api/unavailable/backlog-${pathSeq}`;
    const r = await page.evaluate((a) => window.registerBehindBacklog(a), { name: `behind-${pathSeq}`, backlog, n, failPath, path });
    if (backlog > 0 && r.circuit !== "open") throw new Error(`the circuit did not open (${r.circuit})`);
    if (r.pending !== backlog + n) throw new Error(`expected ${backlog + n} queued, found ${r.pending}`);
    return { count: n, ms: r.ms, extra: { idbTransactions: r.idb, flushes: r.flushes } };
  } finally {
    await context.close();
  }
}

async function rawFetch(n, concurrency, latency = 0) {
  const { context, page } = await openPage("tidesync");
  try {
    const path = `/api/${latency ? `latency-${latency}/` : ""}raw-${++pathSeq}`;
    const r = await page.evaluate((a) => window.rawFetch(a), { n, concurrency, path });
    if (server.count(path) !== n) throw new Error(`raw fetch: ${server.count(path)} of ${n} arrived`);
    return { count: n, ms: r.ms, extra: {} };
  } finally {
    await context.close();
  }
}

// ---------- Workbox ----------

/** Enqueue in one tick (timed), then replay (timed): both measurements from one run. */
async function workboxRun(n, sampleHeap, latency = 0, kind = "workbox") {
  const { context, page } = await openPage(kind);
  try {
    const path = `/api/${latency ? `latency-${latency}/` : ""}workbox-${++pathSeq}`;
    const name = `queue-${pathSeq}`;
    const e = await page.evaluate((a) => window.enqueue(a), { name, n, mode: "tick", path });
    if (e.pending !== n) throw new Error(`Workbox: expected ${n} queued, found ${e.pending}`);
    if (server.count(path) !== 0) throw new Error("Workbox sent requests before replayRequests()");
    const replay = () => page.evaluate((a) => window.replay(a), { name });
    let r, peak = null, baseline = null;
    if (sampleHeap) [r, peak, baseline] = await withHeapSampling(context, page, replay);
    else r = await replay();
    const delivered = server.count(path);
    if (delivered !== n || r.pending !== 0) throw new Error(`Workbox delivered ${delivered} of ${n}, ${r.pending} still queued`);
    return { enqueue: e, replay: r, peak, baseline };
  } finally {
    await context.close();
  }
}

async function workboxEnqueueSequential(n, kind = "workbox") {
  const { context, page } = await openPage(kind);
  try {
    const path = `/api/workbox-seq-${++pathSeq}`;
    const e = await page.evaluate((a) => window.enqueue(a), { name: `seq-${pathSeq}`, n, mode: "sequential", path });
    if (e.pending !== n) throw new Error(`Workbox: expected ${n} queued, found ${e.pending}`);
    return { count: n, ms: e.ms, extra: { idbTransactions: e.idb } };
  } finally {
    await context.close();
  }
}

/**
 * Workbox's contexts: its Queue in a module service worker, as Workbox users
 * run it (bench/pages/workbox-sw.js), and in a window with the registration
 * shimmed (bench/pages/workbox.html; the only place its JS heap can be
 * sampled through the page's CDP session).
 */
const WORKBOX_KINDS = {
  sw: { page: "workbox-sw", prefix: "workbox-sw", sdk: "Workbox (service worker)" },
  window: { page: "workbox", prefix: "workbox", sdk: "Workbox (window)" },
};

/** Workbox's enqueue and replay come from the same runs: one measure() for each, fed from a shared list. */
async function workboxPair(n, runs, sampleHeap, latency = 0, where = WORKBOX_KINDS.window) {
  const enqueueId = latency ? null : `${where.prefix}.enqueue.tick.${n}`;
  const replayId = latency ? `${where.prefix}.replay.latency${latency}.${n}` : `${where.prefix}.replay.${n}`;
  if (!(enqueueId && selected(enqueueId)) && !selected(replayId)) return;
  const outcomes = [];
  for (let i = 0; i < runs; i++) outcomes.push(await workboxRun(n, sampleHeap, latency, where.page));
  if (enqueueId) {
    await measure({ id: enqueueId, sdk: where.sdk, what: "enqueue, one tick", n, concurrency: null, unit: "tasks/s" }, runs,
      async (i) => ({ count: n, ms: outcomes[i].enqueue.ms, extra: { idbTransactions: outcomes[i].enqueue.idb } }));
  }
  const what = latency ? `replay, server ${latency} ms away` : "replay";
  await measure({ id: replayId, sdk: where.sdk, what, n, concurrency: 1, unit: "requests/s" }, runs,
    async (i) => ({
      count: n, ms: outcomes[i].replay.ms,
      extra: { idbTransactions: outcomes[i].replay.idb, ...(sampleHeap ? { peakJsHeapBytes: outcomes[i].peak, baselineJsHeapBytes: outcomes[i].baseline } : {}) },
    }));
}

// ---------- replication, against the reference server (SQLite) ----------

async function replicationPush(reference, n) {
  const { context, page } = await openPage("tidesync");
  try {
    const token = reference.token(`bench-push-${++pathSeq}`);
    const r = await page.evaluate((a) => window.replicationPush(a), { name: `rep-push-${pathSeq}`, serverUrl: reference.url, token, n });
    if (r.pending !== 0 || r.pushed !== n) throw new Error(`pushed ${r.pushed} of ${n}, ${r.pending} pending`);
    return { count: n, ms: r.ms, extra: { putMs: Math.round(r.putMs) } };
  } finally {
    await context.close();
  }
}

/** Writes n records for a fresh tenant straight through the push endpoint; returns its token. */
async function seedTenant(reference, n) {
  const token = reference.token(`bench-pull-${++pathSeq}`);
  for (let start = 0; start < n; start += 1000) {
    const mutations = Array.from({ length: Math.min(1000, n - start) }, (_, k) => {
      const i = start + k;
      return { mutationId: `seed-${i}`, entityType: "end_user", op: "upsert", id: `u${i}`,
        data: { name: `User number ${i}`, email: `user${i}@example.com`, note: "an ordinary note of about forty characters." } };
    });
    const { status } = await reference.call("/api/client/sync/push", token, { clientId: "bench-seed", mutations });
    if (status !== 200) throw new Error(`seeding answered ${status}`);
  }
  return token;
}

async function replicationPull(reference, token, n) {
  const { context, page } = await openPage("tidesync");
  try {
    const pull = () => page.evaluate((a) => window.replicationPull(a), { name: `rep-pull-${++pathSeq}`, serverUrl: reference.url, token });
    const [r, peak, baseline] = await withHeapSampling(context, page, pull);
    if (r.pulled !== n) throw new Error(`pulled ${r.pulled} of ${n}`);
    return { count: n, ms: r.ms, extra: { pages: r.pages, peakJsHeapBytes: peak, baselineJsHeapBytes: baseline, wasmMemoryBytes: r.wasmMemoryBytes } };
  } finally {
    await context.close();
  }
}

// ---------- the set ----------

const machine = {
  loadAverageAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
  cores: cpus().length,
  cpu: cpus()[0]?.model?.trim() ?? "unknown",
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  chromium: browser.version(),
  node: process.version,
};
log(`Chromium ${machine.chromium}, ${machine.cores} cores; runs ${RUNS} (10,000-task replays: ${LONG_RUNS}); Workbox ${WORKBOX ? "bundled" : "absent"}`);

try {
  // The browser's limits for enqueue, measured in the same run as everything else.
  for (const n of sizes([1000, 10000])) {
    await measure({ id: `limit.idb.tick.${n}`, sdk: "IndexedDB", what: "limit: puts in one transaction, no SDK", n, concurrency: null, unit: "tasks/s" },
      RUNS, () => idbLimit(n, "tick"));
    await measure({ id: `limit.idb.sequential.${n}`, sdk: "IndexedDB", what: "limit: one transaction per put, awaited, no SDK", n, concurrency: null, unit: "tasks/s" },
      n >= 10000 ? LONG_RUNS : RUNS, () => idbLimit(n, "sequential"));
  }
  for (const n of sizes([1000, 10000])) {
    await measure({ id: `tidesync.enqueue.tick.${n}`, sdk: "Tidesync", what: "enqueue, one tick", n, concurrency: null, unit: "tasks/s" },
      RUNS, () => tidesyncEnqueue(n, "tick"));
  }
  for (const n of sizes([1000, 10000])) {
    await measure({ id: `tidesync.enqueue.sequential.${n}`, sdk: "Tidesync", what: "enqueue, awaited one by one", n, concurrency: null, unit: "tasks/s" },
      n >= 10000 ? LONG_RUNS : RUNS, () => tidesyncEnqueue(n, "sequential"));
  }
  for (const backlog of sizes([100, 1000, 10000])) {
    await measure({ id: `tidesync.enqueue.behind-open-circuit.${backlog}`, sdk: "Tidesync", what: `enqueue one by one, autoFlush, ${backlog.toLocaleString("en-US")} queued behind an open circuit`, n: 20, concurrency: null, unit: "tasks/s" },
      backlog >= 10000 ? LONG_RUNS : RUNS, () => registerBehindBacklog(backlog, 20));
  }
  // Cold start and memory with the queue loaded: one run feeds three rows.
  for (const n of sizes([0, 1000, 10000, 100000])) {
    const ids = [`tidesync.cold-start.${n}`, `tidesync.memory.wasm.${n}`, `tidesync.memory.js-heap.${n}`];
    if (!ids.some(selected)) continue;
    const runs = n >= 10000 ? LONG_RUNS : RUNS;
    const outcomes = [];
    for (let i = 0; i < runs; i++) outcomes.push(await coldStart(n));
    const MiB = (b) => Math.round((b / 2 ** 20) * 10) / 10;
    await measure({ id: ids[0], sdk: "Tidesync", what: "cold start: init() to an open client", n, concurrency: null, unit: "ms" }, runs,
      async (i) => ({ value: Math.round(outcomes[i].ms), extra: { wasmMemoryBytes: outcomes[i].wasmMemoryBytes } }));
    if (n === 0) continue;
    await measure({ id: ids[1], sdk: "Tidesync", what: "wasm memory with the queue loaded (cold open)", n, concurrency: null, unit: "MiB" }, runs,
      async (i) => ({ value: MiB(outcomes[i].wasmMemoryBytes), extra: { afterRegisteringMiB: MiB(outcomes[i].wasmMemoryAfterRegisteringBytes) } }));
    await measure({ id: ids[2], sdk: "Tidesync", what: "JS heap with the queue loaded (cold open, after GC)", n, concurrency: null, unit: "MiB" }, runs,
      async (i) => ({ value: MiB(outcomes[i].jsHeapBytes), extra: {} }));
  }
  for (const concurrency of [1, 4, 6]) {
    await measure({ id: `fetch.raw.${sizes([500])[0]}.c${concurrency}`, sdk: "fetch()", what: "plain fetch, no storage (ceiling)", n: sizes([500])[0], concurrency, unit: "requests/s" },
      RUNS, () => rawFetch(sizes([500])[0], concurrency));
  }
  for (const n of sizes([1000, 10000])) {
    for (const concurrency of [1, 4, 6]) {
      const heap = n === sizes([10000])[0] && concurrency === 4;
      await measure({ id: `tidesync.replay.${n}.c${concurrency}`, sdk: "Tidesync", what: "replay (flush)", n, concurrency, unit: "requests/s" },
        n >= 10000 ? LONG_RUNS : RUNS, () => tidesyncReplay(n, concurrency, heap));
    }
  }
  for (const concurrency of [1, 4, 6]) {
    await measure({ id: `fetch.raw.latency${LATENCY_MS}.${LATENCY_N}.c${concurrency}`, sdk: "fetch()", what: `plain fetch, no storage (ceiling), server ${LATENCY_MS} ms away`, n: LATENCY_N, concurrency, unit: "requests/s" },
      RUNS, () => rawFetch(LATENCY_N, concurrency, LATENCY_MS));
    await measure({ id: `tidesync.replay.latency${LATENCY_MS}.${LATENCY_N}.c${concurrency}`, sdk: "Tidesync", what: `replay, server ${LATENCY_MS} ms away`, n: LATENCY_N, concurrency, unit: "requests/s" },
      RUNS, () => tidesyncReplay(LATENCY_N, concurrency, false, LATENCY_MS));
  }
  if (selected("replication")) {
    const reference = await startTidesyncServer({ entityTypes: ["end_user"] });
    try {
      const pushN = sizes([10000])[0];
      await measure({ id: `replication.push.${pushN}`, sdk: "Tidesync", what: "put + sync(), reference server on SQLite", n: pushN, concurrency: null, unit: "mutations/s" },
        LONG_RUNS, () => replicationPush(reference, pushN));
      for (const n of sizes([10000, 100000])) {
        if (!selected(`replication.pull.${n}`)) continue;
        const token = await seedTenant(reference, n);
        await measure({ id: `replication.pull.${n}`, sdk: "Tidesync", what: "pull into an empty client, reference server on SQLite", n, concurrency: null, unit: "records/s" },
          LONG_RUNS, () => replicationPull(reference, token, n));
      }
    } finally {
      await reference.close();
    }
  }
  const liveStreams = SMOKE ? [1, 3] : undefined;
  if (["live.latency.", "live.memory.per-stream"].some(selected)) {
    results.push(...await liveRows({ openPage, log, ...(SMOKE ? { samples: 3, streams: liveStreams } : {}) }));
  }
  if (WORKBOX) {
    for (const where of [WORKBOX_KINDS.sw, WORKBOX_KINDS.window]) {
      await workboxPair(LATENCY_N, RUNS, false, LATENCY_MS, where);
      for (const n of sizes([1000, 10000])) {
        if (where === WORKBOX_KINDS.window && n >= 10000 && !SMOKE) continue; // the window's 10,000 runs below, with its heap
        await measure({ id: `${where.prefix}.enqueue.sequential.${n}`, sdk: where.sdk, what: "enqueue, awaited one by one", n, concurrency: null, unit: "tasks/s" },
          n >= 10000 ? LONG_RUNS : RUNS, () => workboxEnqueueSequential(n, where.page));
      }
      for (const n of sizes([1000, 10000])) {
        await workboxPair(n, n >= 10000 ? LONG_RUNS : RUNS, where === WORKBOX_KINDS.window && n === sizes([10000])[0], 0, where);
      }
    }
  }
} finally {
  await browser.close();
  await server.close();
}

// ---------- bundle size ----------

const bundle = {};
for (const file of ["tidesync_bg.wasm", "tidesync.js"]) {
  const bytes = readFileSync(join(pkgDir, file));
  bundle[`pkg/${file}`] = { bytes: bytes.length, gzipBytes: gzipSync(bytes, { level: 9 }).length };
}

// ---------- memory summary ----------

const heapOf = (id) => results.find((r) => r.id === id)?.medianSample;
const memory = {};
for (const [key, id] of [["tidesync", `tidesync.replay.${sizes([10000])[0]}.c4`], ["workbox", `workbox.replay.${sizes([10000])[0]}`]]) {
  const s = heapOf(id);
  if (s?.peakJsHeapBytes) {
    memory[key] = { measurement: id, peakJsHeapBytes: s.peakJsHeapBytes, baselineJsHeapBytes: s.baselineJsHeapBytes, wasmMemoryBytes: s.wasmMemoryBytes ?? null };
  }
}

// ---------- output ----------

const versionOf = (file) => {
  try {
    return JSON.parse(readFileSync(file, "utf8")).version;
  } catch {
    return null;
  }
};
const report = {
  date: new Date().toISOString(),
  command: SMOKE ? "BENCH_SMOKE=1 bash scripts/bench.sh (npm test)" : "npm run bench",
  smoke: SMOKE,
  commit,
  // pkg/ (a snapshot taken at the start) is measured as it is: built from
  // this commit, or from a work tree whose src/ differed from it (srcChanged).
  pkg: { builtAt: pkgBuiltAt, srcChanged },
  machine,
  settings: {
    runs: RUNS, longRuns: LONG_RUNS, payloadBytes: 64, latencyMs: LATENCY_MS,
    server: "bench/server.mjs on 127.0.0.1 (201 to every /api/* request; /api/latency-<ms>/ answered <ms> late)",
  },
  versions: {
    tidesync: versionOf(join(pkgDir, "package.json")),
    chromium: machine.chromium,
    node: process.version,
    playwrightCore: versionOf("node_modules/playwright-core/package.json"),
    workboxBackgroundSync: WORKBOX ? versionOf("bench/workbox/node_modules/workbox-background-sync/package.json") : null,
  },
  workbox: WORKBOX ? {
    package: "workbox-background-sync",
    version: versionOf("bench/workbox/node_modules/workbox-background-sync/package.json"),
    contexts: {
      "workbox-sw": "module service worker (bench/pages/workbox-sw.js), real self.registration.sync",
      workbox: "window (self.registration shimmed as {})",
    },
  } : null,
  results,
  memory,
  bundle,
  durationSeconds: Math.round((Date.now() - started) / 1000),
};
report.machine.loadAverageAtEnd = loadavg().map((l) => Math.round(l * 100) / 100);
const resultsFile = SMOKE ? "bench/results/smoke.json" : "bench/results/latest.json";
mkdirSync("bench/results", { recursive: true });
writeFileSync(resultsFile, JSON.stringify(report, null, 2) + "\n");

const MiB = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`;
const KiB = (b) => `${(b / 1024).toFixed(1)} KiB`;
const rows = [["measurement", "N", "in flight", "runs", "median", "unit", "notes"]];
for (const r of results) {
  const s = r.medianSample;
  const notes = [];
  if (s.registerTransactions !== undefined) notes.push(`${s.registerTransactions} register transactions`);
  if (s.flushes !== undefined && r.id.includes("behind")) notes.push(`${s.flushes} flushes`);
  if (s.idbTransactions) notes.push(`IDB tx ${s.idbTransactions.readwrite} rw + ${s.idbTransactions.readonly} ro`);
  if (s.averageRequestMs !== undefined) notes.push(`getMetrics().averageRequestMs ${s.averageRequestMs}`);
  if (s.peakJsHeapBytes) notes.push(`peak JS heap ${MiB(s.peakJsHeapBytes)} (from ${MiB(s.baselineJsHeapBytes)})`);
  if (s.wasmMemoryBytes) notes.push(`wasm memory ${MiB(s.wasmMemoryBytes)}`);
  if (s.afterRegisteringMiB !== undefined) notes.push(`${s.afterRegisteringMiB} MiB in the page that registered them`);
  if (s.p95Ms !== undefined) notes.push(`p95 ${s.p95Ms} ms, max ${s.maxMs} ms; server RSS ${MiB(s.serverRssBytes)}`);
  if (s.perStreamBytes !== undefined) notes.push(`server RSS ${MiB(s.rssWithOneBytes)} with one stream`);
  rows.push([`${r.sdk} ${r.what}`, r.n.toLocaleString("en-US"), r.concurrency ?? "–", r.runs, r.median.toLocaleString("en-US"), r.unit, notes.join("; ")]);
}
for (const [file, size] of Object.entries(bundle)) {
  rows.push([`bundle ${file}`, "–", "–", "–", KiB(size.gzipBytes), "gzip -9", `${KiB(size.bytes)} raw`]);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => String(row[c]).length)));
const line = (row) => row.map((cell, c) => (c === 4 ? String(cell).padStart(widths[c]) : String(cell).padEnd(widths[c]))).join("  ").trimEnd();
console.log(line(rows[0]));
console.log(widths.map((w) => "-".repeat(w)).join("  "));
for (const row of rows.slice(1)) console.log(line(row));
console.log(`\n${machine.cores} cores, ${machine.cpu}; Chromium ${machine.chromium}; load average ${machine.loadAverageAtStart[0]} at start, ${report.machine.loadAverageAtEnd[0]} at end; ${report.durationSeconds} s; ${resultsFile}`);
if (machine.loadAverageAtStart[0] > machine.cores / 2) {
  console.log("note: the machine was busy when the bench started (1-minute load average above half the cores): other processes shared the CPU, so rates are lower and noisier than on a quiet machine");
}

// The smoke form guards the harness, never a speed: every row must have
// produced a finite figure from real runs.
if (SMOKE) {
  const kinds = ["limit.idb.tick", "limit.idb.sequential", "tidesync.enqueue.tick", "tidesync.enqueue.sequential",
    "tidesync.enqueue.behind-open-circuit", "tidesync.cold-start", "tidesync.memory.wasm", "tidesync.memory.js-heap",
    "fetch.raw", "tidesync.replay", "replication.push", "replication.pull", "live.latency", "live.memory.per-stream",
    "workbox-sw.enqueue.tick", "workbox-sw.enqueue.sequential", "workbox-sw.replay", "workbox.enqueue.tick", "workbox.replay"];
  const broken = results.filter((r) => !Number.isFinite(r.median) || r.samples.length === 0 && !r.id.startsWith("live.memory"));
  const missing = kinds.filter((kind) => !results.some((r) => r.id.startsWith(kind)));
  if (broken.length || missing.length || ONLY) {
    console.error(`[bench] smoke: ${broken.map((r) => `${r.id} gave no figure`).concat(missing.map((k) => `no ${k} row`), ONLY ? ["BENCH_ONLY is set"] : []).join("; ")}`);
    process.exit(1);
  }
  console.error(`[bench] smoke: ${results.length} rows, every one with a figure`);
}

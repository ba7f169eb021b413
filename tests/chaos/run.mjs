// `npm run chaos`: the reliability run of issue 11. Three devices (browser
// contexts) with two tabs and a service worker each, one tenant, the fault
// proxy between them and the reference server; every actor runs its seeded
// script of register/put/delete/sync/flush/pull while devices go offline,
// tabs reload, close or crash mid-flush and workers are stopped. Then faults
// stop, every client syncs to quiescence, and the oracle (oracle.mjs) judges.
//
//   npm run chaos                         full run: 20,000 operations
//   npm run chaos -- --quick              about 1,000 operations (what npm test runs)
//   npm run chaos -- --seed 123 --ops 3000
//   npm run chaos -- --server-kills       SIGKILL the server during pushes, restart it on its database
//   npm run chaos -- --servers 2 --postgres postgres://…   two servers over one PostgreSQL
//   npm run chaos -- --postgres "$TIDESYNC_TEST_DATABASE_URL" --pg-restarts
//                                         crash and restart PostgreSQL mid-run (after
//                                         eval "$(bash scripts/postgres.sh start)")
//
// Prints the seed first and one summary line last; exits 1 on any violation.
// A JSON report with every violation goes to target/chaos/report-<seed>.json.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { startFaultProxy, FAULT_KINDS } from "./proxy.mjs";
import { startPageServer, referenceServers, serverSnapshot } from "./servers.mjs";
import { writeScripts, nextDeviceEvent, deviceEvents, ENTITY_TYPES } from "./script.mjs";
import { judge } from "./oracle.mjs";
import { randomSeed, stream } from "./rng.mjs";

const CHROMIUM_ARGS = [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--no-first-run", "--disable-quic",
];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for `promise` at most `ms`, whatever its outcome. */
const settle = (promise, ms) => Promise.race([promise.catch(() => {}), sleep(ms)]);

/** `promise`, or a rejection naming `label` after `ms`: nothing in a run may hang it. */
function withTimeout(promise, ms, label) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${label}: no answer in ${ms} ms`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function parseArgs(argv) {
  const options = {
    seed: null, ops: 20000, devices: 3, tabs: 2, requestTimeout: 1500, serverKills: false, pgRestarts: false,
    servers: 1, postgres: null, faults: true, quiesceSeconds: 120, verbose: false, report: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case "--seed": options.seed = Number(value()) >>> 0; break;
      case "--ops": options.ops = Number(value()); break;
      case "--quick": options.ops = 1000; break;
      case "--devices": options.devices = Number(value()); break;
      case "--tabs": options.tabs = Number(value()); break;
      case "--timeout": options.requestTimeout = Number(value()); break;
      case "--server-kills": options.serverKills = true; break;
      case "--pg-restarts": options.pgRestarts = true; break;
      case "--servers": options.servers = Number(value()); break;
      case "--postgres": options.postgres = value(); break;
      case "--no-faults": options.faults = false; break;
      case "--quiesce-seconds": options.quiesceSeconds = Number(value()); break;
      case "--verbose": options.verbose = true; break;
      case "--no-report": options.report = false; break;
      default: throw new Error(`unknown argument ${arg} (see the top of tests/chaos/run.mjs)`);
    }
  }
  if (!Number.isInteger(options.ops) || options.ops < 1) throw new Error("--ops must be a positive integer");
  if (options.servers > 1 && !options.postgres) throw new Error("--servers 2 needs --postgres <url>: one database for both");
  if (options.pgRestarts && (!options.postgres || !process.env.TIDESYNC_PGDATA)) {
    throw new Error("--pg-restarts needs --postgres <url> of the cluster scripts/postgres.sh started (eval \"$(bash scripts/postgres.sh start)\" exports TIDESYNC_PGDATA)");
  }
  return options;
}

/** What the runner knows of every operation it handed to an actor. */
function makeLedger() {
  const ops = new Map();
  return {
    ops,
    sent(op, actor, device, at) { ops.set(op.id, { op, actor, device, sentAt: at, endAt: null, result: null }); },
    ended(opId, at) { const o = ops.get(opId); if (o && !o.endAt) o.endAt = at; },
    result(entry) { const o = ops.get(entry?.opId); if (o && !o.result) o.result = entry; },
  };
}

/**
 * One device: a browser context with `tabs` tabs on the device page (which
 * registers the service worker), plus a blank control page whose CDP
 * session drives the worker.
 */
class Device {
  constructor(name, run) {
    this.name = name;
    this.run = run;
    this.tabs = [];
    this.swStops = 0;
    this.swStopped = null; // resolves when the worker is stopped
    this.resetSwStop();
  }

  resetSwStop() {
    this.swStopped = new Promise((resolve) => { this.signalSwStop = resolve; });
  }

  config(tab) {
    const { run } = this;
    return {
      name: `chaos-${this.name}`, serverUrl: run.proxy.url(this.name), token: run.token,
      entityTypes: ENTITY_TYPES, requestTimeout: run.options.requestTimeout,
      actor: `${this.name}/t${tab}`, swActor: `${this.name}/sw`, serviceWorker: true,
    };
  }

  async start(browser) {
    this.context = await browser.newContext();
    await this.context.exposeBinding("__chaosReport", (_source, entry) => this.run.ledger.result(entry));
    await this.context.exposeBinding("__chaosTrace", (_source, entry) => this.run.trace(this.name, entry));
    this.control = await this.context.newPage();
    this.cdp = await this.context.newCDPSession(this.control);
    this.registrations = new Map();
    this.cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations }) => {
      for (const r of registrations) this.registrations.set(r.scopeURL, r);
    });
    // The worker also dies when Chromium stops it or when a renderer it
    // shares is crashed (a tab's Page.crash can take the worker with it):
    // every stop of a running worker is a kill, observed as it is reported.
    const workerStatus = new Map();
    this.cdp.on("ServiceWorker.workerVersionUpdated", ({ versions }) => {
      for (const v of versions) {
        const before = workerStatus.get(v.versionId);
        workerStatus.set(v.versionId, v.runningStatus);
        if (before === "running" && v.runningStatus !== "running") {
          const now = Date.now();
          this.run.kills.push({ device: this.name, actor: `${this.name}/sw`, kind: "sw-stopped", at: now, doneAt: now, observed: true });
          this.run.counts.workerStops++;
        }
      }
    });
    await this.cdp.send("ServiceWorker.enable");
    for (let t = 1; t <= this.run.options.tabs; t++) {
      this.tabs[t] = { page: null, ready: null };
      await this.openTab(t);
      this.run.log(`[phase] ${this.name}/t${t} open`);
    }
    // The worker must be active before anything is sent to it.
    await this.tabs[1].page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  }

  /** (Re)opens tab `t`; `tabs[t].ready` resolves with the page once its client is open. */
  openTab(t, existing = null) {
    const slot = this.tabs[t];
    slot.ready = (async () => {
      for (let attempt = 1; ; attempt++) {
        const page = existing ?? await this.context.newPage();
        if (!existing) {
          page.on("pageerror", (e) => this.run.log(`[${this.name}/t${t}] page error: ${e.message}`));
          // A crash of another tab's renderer can take this one too.
          page.on("crash", () => {
            const now = Date.now();
            this.run.kills.push({ device: this.name, actor: `${this.name}/t${t}`, kind: "tab-crashed", at: now, doneAt: now, observed: true });
          });
        }
        existing = null;
        slot.page = page;
        try {
          if (page.url() === "about:blank") {
            await page.goto(`${this.run.pages.url}/chaos/device.html?config=${encodeURIComponent(JSON.stringify(this.config(t)))}`);
          } else {
            await page.reload();
          }
          await page.waitForFunction(() => window.chaosReady !== undefined, undefined, { timeout: 30000, polling: 50 });
          const error = await page.evaluate(() => window.chaosError ?? null);
          if (!error) return page;
          this.run.note("open-failed", `${this.name}/t${t}: ${error.code} ${error.message}`);
        } catch (error) {
          this.run.note("open-failed", `${this.name}/t${t}: ${error.message.split("\n")[0]}`);
        }
        if (attempt >= 5) throw new Error(`${this.name}/t${t} could not open its client 5 times`);
        // Its client may be running (a slow open): closing it is a kill.
        const kill = { device: this.name, actor: `${this.name}/t${t}`, kind: "reopen", at: Date.now(), doneAt: Infinity };
        this.run.kills.push(kill);
        await page.close().catch(() => {});
        kill.doneAt = Date.now();
        await sleep(500);
      }
    })();
    return slot.ready;
  }

  /** A tab ready to run operations (waits while it is being reloaded or reopened). */
  async tab(t) {
    return this.tabs[t].ready;
  }

  /** Any ready tab (the worker is reached through one). */
  async anyTab(preferred = 1) {
    return this.tab(preferred);
  }

  registrationId() {
    return this.registrations.get(`${this.run.pages.url}/chaos/`)?.registrationId;
  }
}

/** Runs one actor's chunks; a reload, close or crash abandons the chunk in progress. */
async function runActor(run, device, script) {
  const tab = script.worker ? 1 : Number(script.actor.split("/t")[1]);
  for (const chunk of script.chunks) {
    let page;
    try {
      page = await device.tab(tab);
    } catch (error) {
      run.note("actor-gave-up", `${script.actor}: ${error.message}`);
      return;
    }
    const sentAt = Date.now();
    for (const op of chunk.ops) run.ledger.sent(op, script.actor, device.name, sentAt);
    const work = script.worker
      ? page.evaluate((ops) => window.chaos.swRun(ops), chunk.ops)
      : page.evaluate((ops) => window.chaos.run(ops), chunk.ops);
    const stopped = script.worker ? device.swStopped.then(() => "worker stopped") : new Promise(() => {});
    const timeout = sleep(120000).then(() => "timed out");
    const outcome = await Promise.race([work.then(() => null, (e) => e.message.split("\n")[0]), stopped, timeout]);
    if (outcome) run.counts.interruptedChunks++;
    if (outcome === "timed out") run.note("chunk-timeout", `${script.actor}: a chunk ran for 120 s`);
    const endAt = Date.now();
    for (const op of chunk.ops) run.ledger.ended(op.id, endAt);
    await sleep(chunk.pauseMs);
  }
}

/** The device's seeded disturbances, until every actor is done. */
async function runDeviceEvents(run, device) {
  const rng = deviceEvents(run.seed, device.name);
  const origin = run.pages.url;
  while (!run.opsDone) {
    const event = nextDeviceEvent(rng, run.options.tabs);
    const until = Date.now() + event.waitMs;
    while (!run.opsDone && Date.now() < until) await sleep(100);
    if (run.opsDone) return;
    run.counts.events[event.kind] = (run.counts.events[event.kind] ?? 0) + 1;
    const slot = device.tabs[event.tab];
    run.log(`[event] ${device.name} ${event.kind} t${event.tab}`);
    try {
      await withTimeout(deviceEvent(run, device, event, slot, origin), 90000, `${device.name} ${event.kind}`);
    } catch (error) {
      run.note("event-failed", `${device.name} ${event.kind}: ${error.message.split("\n")[0]}`);
    }
  }
}

/** One disturbance of a device (see nextDeviceEvent). */
async function deviceEvent(run, device, event, slot, origin) {
  switch (event.kind) {
    case "offline":
      // Playwright applies the setting to every page, then to every service
      // worker; a worker stopped by "sw-stop" can leave that second step
      // unanswered, after the pages have their setting. So do not wait on it.
      await settle(device.context.setOffline(true), 3000);
      await sleep(event.offlineMs);
      await settle(device.context.setOffline(false), 3000);
      break;
    case "reload":
    case "close":
    case "crash": {
      const page = await slot.ready;
      // Start a flush, then kill the tab while it runs.
      await page.evaluate(() => { window.chaos.client.flush().catch(() => {}); }).catch(() => {});
      await sleep(event.midFlushMs);
      // A kill lasts from the order until the old page is surely gone (a
      // reload's old document lives until the new one commits): a request
      // sent meanwhile may be answered and never recorded.
      const kill = { device: device.name, actor: `${device.name}/t${event.tab}`, kind: event.kind, at: Date.now(), doneAt: Infinity };
      run.kills.push(kill);
      if (event.kind === "reload") {
        await device.openTab(event.tab, page).finally(() => { kill.doneAt = Date.now(); });
      } else {
        if (event.kind === "crash") {
          // Page.crash never answers (its target is gone): wait for the crash instead.
          const crashed = page.waitForEvent("crash", { timeout: 10000 }).catch(() => {});
          const cdp = await device.context.newCDPSession(page);
          cdp.send("Page.crash").catch(() => {});
          await crashed;
        }
        const closing = page.close().catch(() => {}).finally(() => { kill.doneAt = Date.now(); });
        slot.ready = closing.then(() => sleep(event.reopenMs)).then(() => device.openTab(event.tab));
        await slot.ready;
      }
      break;
    }
    case "sw-sync": {
      const registrationId = device.registrationId();
      if (registrationId) {
        await device.cdp.send("ServiceWorker.dispatchSyncEvent", { origin, registrationId, tag: "tidesync", lastChance: false });
      }
      break;
    }
    case "sw-stop":
      const kill = { device: device.name, actor: `${device.name}/sw`, kind: event.kind, at: Date.now(), doneAt: Infinity };
      run.kills.push(kill);
      await device.cdp.send("ServiceWorker.stopAllWorkers").finally(() => { kill.doneAt = Date.now(); });
      device.signalSwStop();
      device.resetSwStop();
      break;
  }
}

/** SIGKILLs the server during pushes (seeded), restarting it on the same database. */
function armServerKills(run) {
  const rng = stream(run.seed, "server-kills");
  let busy = false;
  let lastKill = Date.now();
  run.proxy.state.onPushForwarded = ({ device }) => {
    if (busy || run.opsDone || Date.now() - lastKill < 4000 || !rng.chance(0.08)) return;
    busy = true;
    lastKill = Date.now();
    (async () => {
      const index = run.upstreamOf.get(device);
      const victim = run.serverProcs[index];
      await sleep(rng.int(0, 5)); // while the push is in the server's hands
      await victim.kill();
      run.counts.serverKills++;
      run.kills.push({ device: "*", actor: `server${index}`, kind: "server-kill", at: Date.now(), doneAt: Date.now() });
      await sleep(rng.int(100, 1500));
      const restarted = await run.servers.start(`server ${index} (restart ${run.counts.serverKills})`);
      run.serverProcs[index] = restarted;
      for (const [d, i] of run.upstreamOf) if (i === index) run.proxy.setUpstream(d, restarted.url);
    })().catch((error) => run.note("server-restart-failed", error.message)).finally(() => { busy = false; });
  };
}

/**
 * Crashes PostgreSQL (immediate stop: every connection cut, crash recovery
 * at the next start) every 8–20 s (seeded) while operations run, and starts
 * it again on the same data 0.3–3 s later. Resolves once the operations are
 * done and the database is up.
 */
async function runPostgresRestarts(run) {
  const rng = stream(run.seed, "pg-restarts");
  const postgres = (command) => new Promise((resolve, reject) => {
    execFile("bash", ["scripts/postgres.sh", command], (error, _stdout, stderr) => {
      if (error) reject(new Error(`postgres.sh ${command}: ${stderr || error.message}`));
      else resolve();
    });
  });
  while (!run.opsDone) {
    const until = Date.now() + rng.int(8000, 20000);
    while (!run.opsDone && Date.now() < until) await sleep(100);
    if (run.opsDone) return;
    const at = Date.now();
    await postgres("crash");
    run.counts.pgRestarts++;
    await sleep(rng.int(300, 3000));
    await postgres("resume");
    run.kills.push({ device: "*", actor: "postgres", kind: "pg-restart", at, doneAt: Date.now() });
    run.log(`[event] PostgreSQL restarted (${Date.now() - at} ms down)`);
  }
}

/** Every device's database, statuses and records, read after quiescence. */
async function collect(run) {
  const out = [];
  for (const device of run.devices) {
    const first = await device.tab(1);
    const dump = await withTimeout(first.evaluate(() => window.chaos.dump()), 30000, `${device.name} dump`);
    const statuses = [];
    for (let t = 1; t <= run.options.tabs; t++) {
      const page = await device.tab(t);
      // A tab's status is its own view of the queue, refreshed by its flushes
      // (not while its circuit is open): give it up to 10 s of flushes to see
      // what the other tabs and the worker did.
      let status;
      for (let i = 0; i < 20; i++) {
        await withTimeout(page.evaluate(() => window.chaos.tryFlush()), 30000, `${device.name}/t${t} flush()`)
          .catch((e) => run.note("collect", e.message));
        status = await withTimeout(page.evaluate(() => window.chaos.status()), 10000, "status");
        if (status.pendingCount === 0 && status.inFlightCount === 0) break;
        await sleep(500);
      }
      statuses.push({ actor: `${device.name}/t${t}`, status });
    }
    const sw = await withTimeout(first.evaluate(() => window.chaos.swStatus()), 30000, `${device.name}/sw status`).catch((e) => ({ error: e.message }));
    statuses.push({ actor: `${device.name}/sw`, status: sw?.error ? null : sw });
    out.push({ name: device.name, dump, statuses });
  }
  return out;
}

/** Syncs every tab and worker until nothing is queued, every record is synced and the server stands still. */
async function quiesce(run) {
  const deadline = Date.now() + run.options.quiesceSeconds * 1000;
  let previous = null;
  let rounds = 0;
  while (Date.now() < deadline) {
    rounds++;
    await Promise.all(run.devices.map(async (device) => {
      for (let t = 1; t <= run.options.tabs; t++) {
        const page = await withTimeout(device.tab(t), 60000, `${device.name}/t${t} ready`);
        const outcome = await withTimeout(page.evaluate(() => window.chaos.trySync()), 30000, `${device.name}/t${t} sync()`)
          .catch((e) => ({ ok: false, message: e.message }));
        if (!outcome.ok) run.note("quiesce-sync-failed", `${device.name}/t${t}: ${outcome.code ?? ""} ${outcome.message}`);
      }
      const page = await device.tab(1);
      await withTimeout(page.evaluate(() => window.chaos.swRun([{ id: "quiesce", kind: "sync", await: true }])), 30000, `${device.name}/sw sync()`)
        .catch((e) => run.note("quiesce-sync-failed", `${device.name}/sw: ${e.message}`));
    }));
    const snapshot = JSON.stringify(await serverSnapshot(run.serverProcs[0].url, run.token, ENTITY_TYPES));
    let idle = true;
    for (const device of run.devices) {
      const dump = await withTimeout((await device.tab(1)).evaluate(() => window.chaos.dump()), 30000, `${device.name} dump`);
      if ((dump.tasks ?? []).length || (dump.records ?? []).some((r) => r.syncStatus !== "synced")) idle = false;
    }
    if (idle && snapshot === previous) return { rounds, quiet: true };
    previous = snapshot;
    await sleep(400);
  }
  return { rounds, quiet: false };
}

export async function runChaos(options) {
  const seed = options.seed ?? randomSeed();
  const started = Date.now();
  const run = {
    options, seed, ledger: makeLedger(), kills: [], opsDone: false, notes: [],
    counts: { interruptedChunks: 0, events: {}, serverKills: 0, workerStops: 0, pgRestarts: 0 },
    log: (line) => { if (options.verbose) console.log(line); },
    /** Outcomes of plain tasks as each realm heard them (see traceOutcomes), by task id. */
    traces: new Map(),
    traceSeen: new Set(),
    trace(device, entry) {
      const key = JSON.stringify(entry);
      if (this.traceSeen.has(key)) return; // the worker's entries reach every tab
      this.traceSeen.add(key);
      const list = this.traces.get(entry.id) ?? [];
      list.push({ device, ...entry });
      this.traces.set(entry.id, list);
    },
    note(kind, detail) { this.notes.push({ kind, detail, at: Date.now() - started }); this.log(`[${kind}] ${detail}`); },
  };
  const devices = Array.from({ length: options.devices }, (_, i) => `d${i + 1}`);
  // The proxy shares this process's event loop with the runner: how late it
  // got to a request tells how stale its timestamps can be.
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  console.log(`chaos: seed=${seed} ops=${options.ops} devices=${options.devices}x${options.tabs} tabs+sw servers=${options.servers}${options.postgres ? " (PostgreSQL)" : " (SQLite)"}${options.serverKills ? " server-kills" : ""}${options.pgRestarts ? " pg-restarts" : ""}${options.faults ? "" : " no-faults"}`);
  console.log(`chaos: replay with: npm run chaos -- --seed ${seed} --ops ${options.ops}${options.serverKills ? " --server-kills" : ""}${options.servers > 1 ? ` --servers ${options.servers}` : ""}${options.postgres ? " --postgres <url>" : ""}${options.pgRestarts ? " --pg-restarts" : ""}`);

  run.servers = referenceServers({ entityTypes: ENTITY_TYPES, databaseUrl: options.postgres });
  run.servers.onExit((label, code, signal, output) => {
    console.log(`chaos: ${label} exited by itself (${code ?? signal}); its last output:\n${output}`);
    run.note("server-exited", `${label}: ${code ?? signal}`);
  });
  let browser;
  try {
    if (options.pgRestarts) {
      // A crash must not lose acknowledged commits: the test cluster's
      // synchronous_commit=off would (seen: a push answered "applied",
      // gone after the crash, applied again on replay, a deleted record
      // back on the server).
      await new Promise((resolve, reject) => execFile("bash", ["scripts/postgres.sh", "durable"], (error, _o, stderr) =>
        error ? reject(new Error(`postgres.sh durable: ${stderr || error.message}`)) : resolve()));
    }
    run.serverProcs = [];
    for (let i = 0; i < options.servers; i++) run.serverProcs.push(await run.servers.start(`server ${i}`));
    run.token = run.servers.token("chaos");
    run.pages = await startPageServer();
    // Devices are spread over the servers round-robin.
    run.upstreamOf = new Map(devices.map((d, i) => [d, i % options.servers]));
    run.proxy = await startFaultProxy({
      seed, devices, requestTimeout: options.requestTimeout,
      upstream: Object.fromEntries(devices.map((d) => [d, run.serverProcs[run.upstreamOf.get(d)].url])),
    });
    run.proxy.setFaults(false); // no faults while the devices start
    if (options.serverKills) armServerKills(run);

    browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS, headless: true });
    browser.on("disconnected", () => { if (!run.closing) console.log("chaos: the browser disconnected (crashed?)"); });
    run.devices = devices.map((name) => new Device(name, run));
    for (const device of run.devices) {
      await withTimeout(device.start(browser), 90000, `starting device ${device.name}`);
      run.log(`[phase] device ${device.name} started`);
    }
    run.proxy.setFaults(options.faults);
    const chaosStarted = Date.now();

    const scripts = writeScripts({ seed, devices, tabsPerDevice: options.tabs, totalOps: options.ops });
    const byName = new Map(run.devices.map((d) => [d.name, d]));
    const eventLoops = run.devices.map((d) => runDeviceEvents(run, d));
    if (options.pgRestarts) {
      eventLoops.push(runPostgresRestarts(run).catch((error) => run.note("pg-restart-failed", error.message)));
    }
    const progress = setInterval(() => {
      const done = [...run.ledger.ops.values()].filter((o) => o.result).length;
      console.log(`chaos: ${((Date.now() - chaosStarted) / 1000).toFixed(0)} s: ${run.ledger.ops.size}/${options.ops} operations handed out, ${done} answered, faults ${Object.values(run.proxy.faults).reduce((a, b) => a + b, 0)}`);
    }, options.verbose ? 5000 : 30000);
    await Promise.all(scripts.map((s) => runActor(run, byName.get(s.device), s)));
    run.opsDone = true;
    clearInterval(progress);
    run.log("[phase] operations done; waiting for device events to end");
    await Promise.all(eventLoops);
    run.log("[phase] quiescence");
    const chaosSeconds = (Date.now() - chaosStarted) / 1000;

    run.proxy.setFaults(false);
    for (const d of run.devices) await settle(d.context.setOffline(false), 3000);
    run.log("[phase] every device online");
    const quiescence = await quiesce(run);
    run.log(`[phase] quiescence ${quiescence.quiet ? "reached" : "NOT reached"} after ${quiescence.rounds} rounds; collecting`);
    const collected = await collect(run);
    const server = await serverSnapshot(run.serverProcs[0].url, run.token, ENTITY_TYPES);
    const evidence = {
      ledger: run.ledger, proxy: run.proxy.state, devices: collected, server, kills: run.kills,
      traces: run.traces, requestTimeout: options.requestTimeout,
    };
    if (options.report) {
      // Everything the oracle judged, so that it can judge again offline
      // (node tests/chaos/rejudge.mjs <file>) without replaying the run.
      mkdirSync("target/chaos", { recursive: true });
      writeFileSync(`target/chaos/evidence-${seed}.json`, JSON.stringify({
        ...evidence, ledger: [...run.ledger.ops.values()], traces: [...run.traces], started,
        proxy: { deliveries: run.proxy.state.deliveries, pushes: run.proxy.state.pushes, stalls: run.proxy.state.stalls },
      }));
    }
    const { figures, violations, ambiguous } = judge(evidence);
    if (!quiescence.quiet) violations.push({ kind: "no-quiescence", rounds: quiescence.rounds });
    for (const v of violations) {
      if (v.kind !== "duplicate-after-answer" && v.kind !== "duplicate-unexplained") continue;
      // What each realm of the device made of the task, and what disturbed
      // the device around the deliveries (times in ms since the run began).
      v.trace = (run.traces.get(`t:${v.opId}`) ?? []).map((e) => ({ ...e, at: e.at - started }));
      v.first = { ...v.first, at: v.first.at - started, answeredAt: v.first.answeredAt - started };
      v.again = { ...v.again, at: v.again.at - started, answeredAt: v.again.answeredAt - started };
      v.kills = run.kills.filter((k) => k.device === v.device && Math.abs(k.at - started - v.first.at) < 10000).map((k) => ({ ...k, at: k.at - started, doneAt: k.doneAt - started }));
    }
    const duration = (Date.now() - started) / 1000;

    const faults = Object.entries(run.proxy.faults).filter(([, n]) => n > 0).map(([k, n]) => `${k}:${n}`).join(",");
    const duplicates = Object.entries(figures.duplicates).map(([k, n]) => `${k}:${n}`).join(",");
    const events = Object.entries(run.counts.events).map(([k, n]) => `${k}:${n}`).join(",");
    const byKind = {};
    for (const v of violations) byKind[v.kind] = (byKind[v.kind] ?? 0) + 1;
    const opErrors = {};
    for (const o of run.ledger.ops.values()) {
      if (o.result && !o.result.ok) {
        const key = `${o.op.kind}:${o.result.code ?? o.result.name}`;
        opErrors[key] = (opErrors[key] ?? 0) + 1;
      }
    }
    if (violations.length) {
      console.log(`chaos: ${violations.length} violation(s): ${JSON.stringify(byKind)}`);
      for (const v of violations.slice(0, 25)) console.log(`  ${JSON.stringify(v)}`);
    }
    if (run.notes.length) console.log(`chaos: notes: ${JSON.stringify(run.notes.reduce((m, n) => ({ ...m, [n.kind]: (m[n.kind] ?? 0) + 1 }), {}))}`);
    console.log(`chaos: events {${events}} server-kills=${run.counts.serverKills} pg-restarts=${run.counts.pgRestarts} worker-stops-seen=${run.counts.workerStops} upstream-down=${run.proxy.state.upstreamDown} server-5xx=${JSON.stringify(run.proxy.state.upstreamErrors)} interrupted-chunks=${run.counts.interruptedChunks} op-errors ${JSON.stringify(opErrors)} quiescence=${quiescence.rounds} rounds, chaos phase ${chaosSeconds.toFixed(1)} s, runner event loop delay p99 ${(loopDelay.percentile(99) / 1e6).toFixed(0)} ms max ${(loopDelay.max / 1e6).toFixed(0)} ms`);
    const summary = `chaos: seed=${seed} operations=${figures.operations} confirmed=${figures.confirmed} faults{${faults}} duplicates{${duplicates}} dead-letters=${figures.deadLetters}/${figures.expectedDeadLetters} lost=${figures.lost} diverged=${figures.diverged} stale=${figures.stale} stuck=${figures.stuck} violations=${violations.length} duration=${duration.toFixed(1)}s`;
    console.log(summary);
    if (options.report) {
      mkdirSync("target/chaos", { recursive: true });
      const file = `target/chaos/report-${seed}.json`;
      writeFileSync(file, JSON.stringify({ seed, options, figures, faults: run.proxy.faults, events: run.counts.events, notes: run.notes, kills: run.kills, violations, ambiguous, opErrors, duration }, null, 1));
      console.log(`chaos: report in ${file}`);
    }
    return { ok: violations.length === 0, seed, figures, violations, duration, faults: run.proxy.faults, summary };
  } finally {
    run.closing = true;
    await browser?.close().catch(() => {});
    await run.proxy?.close().catch(() => {});
    await run.pages?.close().catch(() => {});
    await run.servers.close().catch(() => {});
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    console.error(`chaos: ${error.message}`);
    process.exit(2);
  }
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(signal, () => console.log(`chaos: received ${signal} at ${new Date().toISOString()}`));
  }
  let result;
  try {
    result = await runChaos(options);
  } catch (error) {
    // The run itself broke (a device never opened, the server did not
    // start): as much a failure as a violation, and said in one line.
    console.log(`chaos: the run failed before the oracle could judge: ${error?.stack ?? error}`);
    process.exit(1);
  }
  process.exit(result.ok ? 0 : 1);
}

export { FAULT_KINDS };

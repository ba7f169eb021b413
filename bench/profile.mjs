// Where the time of an enqueue goes: records a Chrome performance trace (CDP
// Tracing through playwright-core's CDPSession) while the bench page registers
// N tasks, with a performance.measure around every register() call, then
// prints the renderer main thread's busy and idle time inside the measured
// window and the functions that took the most of it (self time from the
// trace's V8 CPU profile). Writes the raw trace to bench/results/ for
// chrome://tracing or the DevTools Performance panel.
//
//   node bench/profile.mjs                         1,000 registrations, awaited one by one
//   PROFILE_MODE=tick PROFILE_N=10000 node bench/profile.mjs   all at once
//   PROFILE_PKG=/tmp/pkg-names node bench/profile.mjs  a pkg/ whose wasm keeps its function
//                                                  names (wasm-bindgen --keep-debug, no wasm-opt)
//
// A profile, not a benchmark: tracing slows the page down, so only the
// proportions mean anything.
import { mkdirSync, writeFileSync } from "node:fs";
import { startBenchServer } from "./server.mjs";
import { launchBrowser } from "../tests/e2e/support/browser.mjs";

const N = Number(process.env.PROFILE_N ?? 1000);
const MODE = process.env.PROFILE_MODE ?? "sequential";
const PKG = process.env.PROFILE_PKG ?? "pkg";
const CATEGORIES = [
  "toplevel", "devtools.timeline", "v8.execute", "blink.user_timing", "IndexedDB",
  "disabled-by-default-devtools.timeline", "disabled-by-default-v8.cpu_profiler",
].join(",");

const server = await startBenchServer({ pkgDir: PKG });
const browser = await launchBrowser();
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.url}/bench/tidesync.html`);
  await page.waitForFunction(() => window.benchReady === true);
  const cdp = await context.newCDPSession(page);
  const chunks = [];
  const complete = new Promise((resolve) => cdp.once("Tracing.tracingComplete", resolve));
  await cdp.send("Tracing.start", { categories: CATEGORIES, transferMode: "ReturnAsStream" });
  const r = await page.evaluate((a) => window.enqueue(a), { name: "profile", n: N, mode: MODE, path: "/api/profile", measureEach: true });
  await cdp.send("Tracing.end");
  const { stream } = await complete;
  for (;;) {
    const { data, eof, base64Encoded } = await cdp.send("IO.read", { handle: stream, size: 1 << 20 });
    chunks.push(base64Encoded ? Buffer.from(data, "base64").toString("utf8") : data);
    if (eof) break;
  }
  await cdp.send("IO.close", { handle: stream });
  const text = chunks.join("");
  mkdirSync("bench/results", { recursive: true });
  const file = `bench/results/trace-enqueue-${MODE}-${N}.json`;
  writeFileSync(file, text);
  const events = JSON.parse(text).traceEvents ?? JSON.parse(text);
  console.log(`${N} registrations (${MODE}) in ${Math.round(r.ms)} ms under tracing (${Math.round(N / (r.ms / 1000))}/s); ${r.registerTransactions} register transactions; trace: ${file}`);
  summarise(events);
  await context.close();
} finally {
  await browser.close();
  await server.close();
}

function summarise(events) {
  const threadNames = new Map();
  for (const e of events) if (e.ph === "M" && e.name === "thread_name") threadNames.set(`${e.pid}:${e.tid}`, e.args.name);
  const whole = events.find((e) => e.cat?.includes("blink.user_timing") && e.name === "enqueue" && (e.ph === "b" || e.ph === "X"));
  const measures = events.filter((e) => e.cat?.includes("blink.user_timing") && e.name === "register" && e.ph === "b");
  const ends = events.filter((e) => e.cat?.includes("blink.user_timing") && e.name === "register" && e.ph === "e");
  if (!whole) { console.log("no 'enqueue' measure in the trace"); return; }
  const end = events.find((e) => e.cat?.includes("blink.user_timing") && e.name === "enqueue" && e.ph === "e")?.ts ?? whole.ts + whole.dur;
  const [t0, t1] = [whole.ts, end];
  const main = [...threadNames].find(([key, name]) => name === "CrRendererMain" && key.startsWith(`${whole.pid}:`))?.[0];
  const onMain = (e) => `${e.pid}:${e.tid}` === main;
  const tasks = events.filter((e) => onMain(e) && e.ph === "X" && (e.name === "RunTask" || e.name === "ThreadControllerImpl::RunTask") && e.ts >= t0 && e.ts <= t1);
  const busy = tasks.reduce((sum, e) => sum + (e.dur ?? 0), 0);
  const wall = t1 - t0;
  console.log(`measured window ${(wall / 1000).toFixed(0)} ms: renderer main thread busy ${(busy / 1000).toFixed(0)} ms (${Math.round((100 * busy) / wall)} %), ${tasks.length} tasks; idle (waiting on IndexedDB, the browser process) ${Math.round((100 * (wall - busy)) / wall)} %`);
  if (measures.length && ends.length) {
    const per = ends.map((e, i) => e.ts - (measures[i]?.ts ?? e.ts)).filter((d) => d >= 0).sort((a, b) => a - b);
    console.log(`per register(): median ${(per[per.length >> 1] / 1000).toFixed(2)} ms, p90 ${(per[Math.floor(per.length * 0.9)] / 1000).toFixed(2)} ms`);
  }
  // Named trace events on the main thread, by total duration (nested ones overlap their parents).
  const byName = new Map();
  for (const e of events) {
    if (!onMain(e) || e.ph !== "X" || e.ts < t0 || e.ts > t1) continue;
    byName.set(e.name, (byName.get(e.name) ?? 0) + (e.dur ?? 0));
  }
  console.log("main-thread trace events by total time (nested events overlap):");
  for (const [name, dur] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    console.log(`  ${(dur / 1000).toFixed(1).padStart(8)} ms  ${Math.round((100 * dur) / wall).toString().padStart(3)} %  ${name}`);
  }
  // Self time per function from the V8 CPU profile chunks of the main thread's isolate.
  const nodes = new Map();
  const self = new Map();
  for (const e of events) {
    if (e.name !== "ProfileChunk" || e.pid !== whole.pid) continue;
    const chunk = e.args?.data?.cpuProfile;
    const deltas = e.args?.data?.timeDeltas ?? [];
    for (const node of chunk?.nodes ?? []) nodes.set(node.id, node);
    let ts = 0;
    (chunk?.samples ?? []).forEach((id, i) => {
      ts += deltas[i] ?? 0;
      const frame = nodes.get(id)?.callFrame;
      if (!frame) return;
      const name = `${frame.functionName || "(anonymous)"} ${frame.url ? frame.url.split("/").pop() : ""}`.trim();
      self.set(name, (self.get(name) ?? 0) + (deltas[i] ?? 0));
    });
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  console.log(`CPU profile, self time by function (${(total / 1000).toFixed(0)} ms sampled):`);
  for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`  ${(us / 1000).toFixed(1).padStart(8)} ms  ${Math.round((100 * us) / total).toString().padStart(3)} %  ${name}`);
  }
}

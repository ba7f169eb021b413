// Live sync figures for `npm run bench`: how long a write on device A takes
// to reach a subscription callback on device B (two Chromium contexts, the
// reference server on SQLite in between, no sync() call), with 1, 100 and
// 1,000 live streams connected; and the server's resident memory per open
// stream. The streams beyond device B's are held by this Node process, all
// for the same tenant, so every poke fans out to all of them (the worst
// case for one tenant).
import { request } from "node:http";
import { readFileSync } from "node:fs";
import { startTidesyncServer } from "../tests/e2e/support/tidesync-server.mjs";

const SAMPLES = Number(process.env.BENCH_LIVE_SAMPLES ?? 30);
const STREAMS = [1, 100, 1000];

/** The server process's resident set (Linux /proc), in bytes. */
function rssBytes(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) * 1024 : null;
}

/** Opens one event stream; resolves once the server said `ready`. */
function openStream(url, token, counters) {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/api/client/sync/events`, {
      headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" }, agent: false,
    }, (res) => {
      if (res.statusCode !== 200) { reject(new Error(`stream answered ${res.statusCode}`)); res.resume(); return; }
      res.setEncoding("utf8");
      let ready = false;
      res.on("data", (text) => {
        counters.pokes += (text.match(/^event: poke$/gm) ?? []).length;
        if (!ready && text.includes("event: ready")) { ready = true; resolve(req); }
      });
      res.on("error", () => {});
    });
    req.on("error", reject);
    req.end();
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];

/**
 * Runs the live measurements (`samples` writes per row, one row per count in
 * `streams`; the bench's smoke form passes small ones); returns result rows in bench/run.mjs's shape
 * (`median` is the p50; the sample holds p95, max and the memory figures).
 */
export async function liveRows({ openPage, log, samples = SAMPLES, streams: streamCounts = STREAMS }) {
  const reference = await startTidesyncServer({
    entityTypes: ["end_user"],
    args: ["--max-connections", "4096", "--live-max-streams-per-token", "4096"],
  });
  const token = reference.token("bench-live");
  const writer = await openPage("tidesync");
  const reader = await openPage("tidesync");
  const background = [];
  const counters = { pokes: 0 };
  const rows = [];
  try {
    const device = (page, live) => page.evaluate((a) => window.liveDevice(a), {
      name: `live-${Math.random().toString(36).slice(2)}`, serverUrl: reference.url, token, live,
    });
    if (await device(reader.page, true) !== "open") throw new Error("device B's live connection did not open");
    await device(writer.page, false);
    let seq = 0;
    const sample = async () => {
      const id = `w${++seq}`;
      const at = await writer.page.evaluate((i) => window.livePut(i), id);
      const deadline = Date.now() + 10_000;
      for (;;) {
        const seen = await reader.page.evaluate((i) => window.liveSeenAt(i), id);
        if (seen !== null) return seen - at;
        if (Date.now() > deadline) throw new Error(`write ${id} did not reach device B within 10 s`);
        await new Promise((ok) => setTimeout(ok, 2));
      }
    };
    let rssOne = null;
    for (const streams of streamCounts) {
      while (background.length < streams - 1) {
        const batch = Math.min(100, streams - 1 - background.length);
        background.push(...await Promise.all(Array.from({ length: batch }, () => openStream(reference.url, token, counters))));
      }
      await new Promise((ok) => setTimeout(ok, 500));
      const rss = rssBytes(reference.pid);
      if (streams === 1) rssOne = rss;
      for (let i = 0; i < 3; i++) await sample(); // warm-up
      counters.pokes = 0;
      const latencies = [];
      for (let i = 0; i < samples; i++) {
        latencies.push(await sample());
        await new Promise((ok) => setTimeout(ok, 30));
      }
      latencies.sort((x, y) => x - y);
      const p50 = percentile(latencies, 0.5);
      const p95 = percentile(latencies, 0.95);
      const measured = {
        p50Ms: p50, p95Ms: p95, maxMs: latencies.at(-1), serverRssBytes: rss,
        backgroundPokesPerWrite: Math.round((counters.pokes / samples) * 10) / 10,
      };
      log(`live.latency.${streams}: p50 ${p50} ms, p95 ${p95} ms, max ${latencies.at(-1)} ms over ${samples} writes; server RSS ${(rss / 2 ** 20).toFixed(1)} MiB`);
      rows.push({
        id: `live.latency.${streams}`, sdk: "Tidesync",
        what: `write on device A → subscribe() callback on device B, ${streams.toLocaleString("en-US")} live stream(s) open, reference server on SQLite`,
        n: streams, concurrency: null, unit: "ms (p50)", runs: samples, median: p50,
        samples: latencies.map((ms) => ({ ms })), medianSample: measured,
      });
    }
    const last = streamCounts.at(-1);
    const perStream = (rssBytes(reference.pid) - rssOne) / (last - 1);
    log(`live.memory: ${(perStream / 1024).toFixed(1)} KiB of server RSS per open stream`);
    rows.push({
      id: "live.memory.per-stream", sdk: "tidesync-server",
      what: `resident memory per open live stream (RSS with ${last.toLocaleString("en-US")} streams minus with 1)`,
      n: last, concurrency: null, unit: "KiB/stream", runs: 1, median: Math.round((perStream / 1024) * 10) / 10,
      samples: [], medianSample: { rssWithOneBytes: rssOne, perStreamBytes: Math.round(perStream) },
    });
    return rows;
  } finally {
    for (const req of background) req.destroy();
    await writer.context.close();
    await reader.context.close();
    await reference.close();
  }
}

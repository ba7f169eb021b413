// The chaos suite's fault proxy: one HTTP listener per device on 127.0.0.1
// between the browser and the reference server, plus the counting endpoint
// that plain outbox requests (`/api/outbox/...`) are sent to.
//
// Every request but a CORS preflight gets a fate drawn from the device's
// seeded stream, in arrival order: passed through, or one of FAULT_KINDS.
// Dark stretches (the whole proxy refusing to answer) are seeded windows of
// time. The proxy records what reached the endpoint and the server and
// whether each answer reached the browser, which is what the oracle judges.
//
// Standalone: node tests/chaos/proxy.mjs --upstream http://127.0.0.1:8080 [--seed N] [--devices 3]
import { createServer, request as httpRequest, Agent } from "node:http";
import { stream, randomSeed } from "./rng.mjs";

/** What each fault kind does (docs/reliability.md has the table of what it exercises). */
export const FAULT_KINDS = {
  drop: "the connection is closed before the request is forwarded",
  "lost-answer": "the request is applied upstream, then the connection is closed instead of answering",
  delay: "the answer is held back, but for less than requestTimeout",
  late: "the answer is held back past requestTimeout (applied upstream; the client has given up)",
  "http-500": "500 with Retry-After, not forwarded",
  "http-503": "503 with Retry-After, not forwarded",
  "http-429": "429 with Retry-After (seconds or an HTTP date), not forwarded",
  truncate: "applied upstream; the answer's body is cut in the middle and the connection closed",
  "truncate-clean": "applied upstream; the answer ends cleanly after half its body (invalid JSON, right status)",
  dark: "the proxy is dark: the request hangs until the stretch ends, then the connection is closed",
};

/** Default weights of the fates (per request; "pass" is no fault). */
export const DEFAULT_WEIGHTS = {
  pass: 70, drop: 4, "lost-answer": 5, delay: 5, late: 3,
  "http-500": 2, "http-503": 2, "http-429": 2, truncate: 2, "truncate-clean": 2,
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const CORS = {
  "access-control-allow-origin": "*",
  "access-control-allow-headers": "authorization, content-type, idempotency-key, x-trace",
  "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE",
  "access-control-expose-headers": "location, etag, retry-after",
  "access-control-max-age": "600",
};

/**
 * Seeded dark stretches: `[start, end)` in ms after the proxy starts.
 * A stretch every `gap` (6–20 s), lasting 0.4–3 s.
 */
function darkWindows(seed, horizonMs = 6 * 3600_000) {
  const rng = stream(seed, "proxy:dark");
  const windows = [];
  let t = rng.int(3000, 12000);
  while (t < horizonMs) {
    const length = rng.int(400, 3000);
    windows.push([t, t + length]);
    t += length + rng.int(6000, 20000);
  }
  return windows;
}

/**
 * Starts the proxy. `devices`: names; `upstream`: the reference server's URL
 * (or a map device → URL); `requestTimeout`: the clients' timeout, so that
 * "delay" stays under it and "late" goes past it.
 */
export async function startFaultProxy({
  seed = randomSeed(), devices = ["d1"], upstream, requestTimeout = 1500,
  weights = DEFAULT_WEIGHTS, darkStretches = true,
} = {}) {
  const startedAt = Date.now();
  // The proxy shares the runner's event loop, which a busy machine stalls
  // for hundreds of ms: a request read after a stall may have been sent by
  // the browser any time during it. A 20 ms ticker records every stall, so
  // the oracle knows how uncertain each arrival time is (lagAround).
  const stalls = [];
  let lastTick = Date.now();
  const ticker = setInterval(() => {
    const now = Date.now();
    if (now - lastTick > 40) stalls.push({ at: now, ms: now - lastTick });
    lastTick = now;
  }, 20);
  ticker.unref?.();
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const windows = darkStretches ? darkWindows(seed) : [];
  const upstreams = new Map(devices.map((d) => [d, typeof upstream === "string" ? upstream : upstream?.[d]]));
  const faults = Object.fromEntries(Object.keys(FAULT_KINDS).map((k) => [k, 0]));
  const state = {
    faultsOn: true,
    /** Plain outbox requests that reached the counting endpoint, in arrival order. */
    deliveries: [],
    /** One entry per mutation in every push the server answered (or died on). */
    pushes: [],
    requests: 0,
    upstreamDown: 0,
    /** Answers of the server itself (not injected) with status 500 and up, by status. */
    upstreamErrors: {},
    /** Called with {device, path} once a push is on its way upstream. */
    onPushForwarded: null,
    /** Stalls of the proxy's event loop: {at: when it ended, ms: how long}. */
    stalls,
  };

  const darkUntil = (now) => {
    const t = now - startedAt;
    for (const [start, end] of windows) {
      if (t < start) return 0;
      if (t < end) return startedAt + end;
    }
    return 0;
  };

  async function readBody(req) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    return Buffer.concat(chunks);
  }

  function forward(device, req, body) {
    const base = upstreams.get(device);
    return new Promise((resolve, reject) => {
      const target = new URL(req.url, base);
      const headers = { ...req.headers, host: target.host, "content-length": body.length };
      delete headers.connection;
      const up = httpRequest(target, { method: req.method, headers, agent }, async (res) => {
        try {
          const data = await readBody(res);
          resolve({ status: res.statusCode, headers: res.headers, body: data });
        } catch (error) {
          reject(error);
        }
      });
      up.on("error", reject);
      up.end(body);
    });
  }

  /** Writes `answer` to the browser; resolves whether it was written completely. */
  function answer(res, { status, headers, body }) {
    return new Promise((resolve) => {
      if (res.destroyed || res.socket?.destroyed) return resolve(false);
      const out = { ...headers, ...CORS, "content-length": body.length };
      delete out["transfer-encoding"];
      delete out.connection;
      delete out["keep-alive"];
      res.on("finish", () => resolve(true));
      res.on("close", () => resolve(res.writableFinished));
      res.writeHead(status, out).end(body);
    });
  }

  function destroy(res) {
    res.socket?.destroy();
    return false;
  }

  /** Applies a fate that needs an upstream answer to `produce()`'s answer. */
  async function deliver(fate, holdMs, res, produce) {
    const upstreamAnswer = await produce();
    switch (fate) {
      case "lost-answer":
        return destroy(res);
      case "delay":
      case "late":
        await sleep(holdMs);
        return answer(res, upstreamAnswer);
      case "truncate": {
        const { status, headers, body } = upstreamAnswer;
        const out = { ...headers, ...CORS, "content-length": body.length };
        delete out["transfer-encoding"];
        res.writeHead(status, out);
        res.write(body.subarray(0, Math.floor(body.length / 2)));
        await sleep(20);
        return destroy(res);
      }
      case "truncate-clean": {
        const { status, headers, body } = upstreamAnswer;
        return answer(res, { status, headers, body: body.subarray(0, Math.floor(body.length / 2)) });
      }
      default:
        return answer(res, upstreamAnswer);
    }
  }

  /** The actor (tab or worker) whose page sent `req`: its Referer carries the page's config. */
  function senderOf(req) {
    try {
      return JSON.parse(new URL(req.headers.referer).searchParams.get("config")).actor ?? null;
    } catch {
      return null;
    }
  }

  function outboxAnswer(device, path, body, req) {
    let parsed = null;
    try { parsed = JSON.parse(body.toString("utf8")); } catch { /* not JSON */ }
    const delivery = {
      device, path, opId: parsed?.opId ?? null, key: req.headers["idempotency-key"] ?? null,
      at: Date.now(), answered: null, n: state.deliveries.length + 1, realm: senderOf(req),
    };
    state.deliveries.push(delivery);
    const poison = path.startsWith("/api/outbox/poison/");
    const status = poison ? 422 : 201;
    const json = poison
      ? { error: "poison: this endpoint refuses the request for good", opId: delivery.opId }
      : { ok: true, opId: delivery.opId, delivery: delivery.n };
    // The delivery's number goes in the ETag as well (a header the client
    // keeps), so that a completion names it even when the body is cut.
    const headers = { "content-type": "application/json", etag: `"delivery-${delivery.n}"` };
    return { delivery, answer: { status, headers, body: Buffer.from(JSON.stringify(json)) } };
  }

  function recordPush(device, requestBody, upstreamAnswer, fate) {
    let request = null;
    let response = null;
    try { request = JSON.parse(requestBody.toString("utf8")); } catch { return []; }
    try { response = upstreamAnswer ? JSON.parse(upstreamAnswer.body.toString("utf8")) : null; } catch { /* not JSON */ }
    const results = new Map((response?.results ?? []).map((r) => [r.mutationId, r]));
    const entries = [];
    for (const m of request?.mutations ?? []) {
      const result = results.get(m.mutationId);
      const entry = {
        device, upstream: upstreams.get(device), fate, at: Date.now(), clientId: request.clientId, mutationId: m.mutationId,
        entityType: m.entityType, id: m.id, op: m.op, v: m.data?.v ?? null, baseVersion: m.baseVersion,
        clientTimestamp: m.clientTimestamp, status: result?.status ?? (upstreamAnswer ? `http-${upstreamAnswer.status}` : "no-answer"),
        winner: result?.winner ?? null, version: result?.record?.version ?? null, answered: null,
      };
      state.pushes.push(entry);
      entries.push(entry);
    }
    return entries;
  }

  async function handle(device, rng, req, res) {
    const path = new URL(req.url, "http://proxy").pathname;
    if (req.method === "OPTIONS") {
      res.writeHead(204, CORS).end();
      return;
    }
    const body = await readBody(req);
    state.requests++;
    // One draw per request, in arrival order, whether or not faults are on,
    // so a seed's schedule does not depend on when faults were switched off.
    const drawn = rng.weighted(weights);
    const dark = darkUntil(Date.now());
    const fate = !state.faultsOn ? "pass" : dark ? "dark" : drawn;
    if (fate !== "pass") faults[fate]++;
    // "delay" stays well under the clients' timeout, "late" goes past it (by
    // up to a few seconds); neither lands near it, where who wins is a race.
    const holdMs = fate === "late"
      ? requestTimeout + rng.int(400, 3000)
      : rng.int(50, Math.max(60, requestTimeout - 600));

    if (fate === "dark") {
      await sleep(dark - Date.now());
      destroy(res);
      return;
    }
    if (fate === "drop") {
      destroy(res);
      return;
    }
    if (fate === "http-500" || fate === "http-503" || fate === "http-429") {
      const retryAfter = fate === "http-429" && rng.chance(0.5)
        ? new Date(Date.now() + 2000).toUTCString()
        : String(rng.int(1, 2));
      const status = Number(fate.slice(5));
      const json = { success: false, error: { code: "chaos", message: `${fate} injected by the fault proxy` } };
      await answer(res, { status, headers: { "content-type": "application/json", "retry-after": retryAfter }, body: Buffer.from(JSON.stringify(json)) });
      return;
    }
    if (path.startsWith("/api/outbox/")) {
      const { delivery, answer: reply } = outboxAnswer(device, path, body, req);
      delivery.fate = fate;
      delivery.answered = await deliver(fate, holdMs, res, async () => reply);
      delivery.answeredAt = Date.now();
      return;
    }
    const isPush = path.endsWith("/api/client/sync/push");
    let upstreamAnswer = null;
    let entries = [];
    const answered = await deliver(fate, holdMs, res, async () => {
      try {
        const pending = forward(device, req, body);
        if (isPush) state.onPushForwarded?.({ device, path });
        upstreamAnswer = await pending;
      } catch (error) {
        state.upstreamDown++;
        upstreamAnswer = null;
        if (isPush) entries = recordPush(device, body, null, fate);
        const json = { success: false, error: { code: "upstream", message: `upstream unreachable: ${error.code ?? error.message}` } };
        return { status: 502, headers: { "content-type": "application/json" }, body: Buffer.from(JSON.stringify(json)) };
      }
      if (upstreamAnswer.status >= 500) {
        state.upstreamErrors[upstreamAnswer.status] = (state.upstreamErrors[upstreamAnswer.status] ?? 0) + 1;
      }
      if (isPush) entries = recordPush(device, body, upstreamAnswer, fate);
      return upstreamAnswer;
    });
    for (const entry of entries) entry.answered = answered && fate !== "truncate-clean";
  }

  const listeners = new Map();
  for (const device of devices) {
    const rng = stream(seed, `proxy:${device}`);
    const server = createServer((req, res) => {
      handle(device, rng, req, res).catch((error) => {
        console.error(`[proxy ${device}] ${req.method} ${req.url}: ${error.stack ?? error}`);
        destroy(res);
      });
    });
    server.keepAliveTimeout = 5000;
    await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
    listeners.set(device, server);
  }

  return {
    seed,
    startedAt,
    /** The URL a device's clients use as `serverUrl`. */
    url: (device) => `http://127.0.0.1:${listeners.get(device).address().port}`,
    faults,
    state,
    windows,
    /** Switch faults (and dark stretches) off or on. */
    setFaults(on) { state.faultsOn = on; },
    /** Points a device at another server (after a restart, or a second server). */
    setUpstream(device, url) { upstreams.set(device, url); },
    close: async () => {
      clearInterval(ticker);
      agent.destroy();
      await Promise.all([...listeners.values()].map((s) => new Promise((ok) => { s.closeAllConnections?.(); s.close(ok); })));
    },
  };
}

// Standalone use, for replaying a seed by hand against a running server.
if (import.meta.url === `file://${process.argv[1]}`) {
  const args = Object.fromEntries(process.argv.slice(2).join(" ").split("--").filter(Boolean)
    .map((part) => part.trim().split(/\s+/)).map(([k, v]) => [k, v ?? true]));
  if (!args.upstream) {
    console.error("usage: node tests/chaos/proxy.mjs --upstream http://127.0.0.1:8080 [--seed N] [--devices 3] [--timeout 1500]");
    process.exit(2);
  }
  const devices = Array.from({ length: Number(args.devices ?? 1) }, (_, i) => `d${i + 1}`);
  const seed = args.seed ? Number(args.seed) : randomSeed();
  const proxy = await startFaultProxy({ seed, devices, upstream: args.upstream, requestTimeout: Number(args.timeout ?? 1500) });
  console.log(`chaos proxy: seed=${seed}`);
  for (const d of devices) console.log(`  ${d}: ${proxy.url(d)} → ${args.upstream}`);
  process.on("SIGINT", async () => {
    console.log(`faults: ${JSON.stringify(proxy.faults)}; outbox deliveries: ${proxy.state.deliveries.length}`);
    await proxy.close();
    process.exit(0);
  });
}

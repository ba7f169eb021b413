// The processes a chaos run needs besides the browser: a static server for
// the device pages and pkg/, and the reference server (target/debug/
// tidesync-server) on SQLite or PostgreSQL, which can be SIGKILLed and
// started again on the same database.
import { createServer } from "node:http";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveFile } from "../../scripts/static.mjs";

const BINARY = process.env.TIDESYNC_SERVER_BIN ?? "target/debug/tidesync-server";
const SECRET = "chaos-test-secret-at-least-32-bytes-long";

/** Serves /pkg/ (the built package) and /chaos/ (the device pages) on 127.0.0.1. */
export async function startPageServer() {
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://127.0.0.1").pathname;
    // Pages and the worker send their full URL as Referer, even to the
    // proxy's other port: its config names the sending actor (tab or worker).
    if (path.startsWith("/chaos/")) res.setHeader("referrer-policy", "unsafe-url");
    if (path.startsWith("/pkg/") && serveFile("pkg", path.slice(5), res)) return;
    if (path.startsWith("/chaos/") && serveFile("tests/chaos/pages", path.slice(7), res)) return;
    if (path === "/favicon.ico") { res.writeHead(204).end(); return; }
    res.writeHead(404).end("not found");
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((ok) => { server.closeAllConnections?.(); server.close(ok); }),
  };
}

/**
 * A private home for reference servers: a config registering `entityTypes`
 * with `strategy`, and a SQLite file unless `databaseUrl` (PostgreSQL) is
 * given. `start()` launches one more server process over that database.
 */
export function referenceServers({ entityTypes, strategy = "last-write-wins", databaseUrl = null }) {
  const dir = mkdtempSync(join(tmpdir(), "tidesync-chaos-"));
  const config = [`default_strategy = "${strategy}"`, ...entityTypes.map((t) => `[entities.${t}]`)].join("\n");
  writeFileSync(join(dir, "tidesync.toml"), config + "\n");
  const db = databaseUrl ?? `sqlite://${join(dir, "tidesync.db")}`;
  const env = { ...process.env, TIDESYNC_JWT_SECRET: SECRET, RUST_LOG: "warn" };
  const running = new Set();

  /** Called with (label, code, signal, outputTail) when a server exits on its own. */
  let onExit = null;

  async function start(label = "server") {
    const child = spawn(BINARY, [
      "--bind", "127.0.0.1:0", "--db", db, "--config", join(dir, "tidesync.toml"), "--rate-limit", "0",
      "--www", join(dir, "none"), "--pkg", join(dir, "none"),
    ], { env, stdio: ["ignore", "pipe", "pipe"] });
    running.add(child);
    let output = "";
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${label} did not start:\n${output}`)), 30000);
      const onData = (chunk) => {
        output += chunk;
        const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
        if (match) { clearTimeout(timer); resolve(match[1]); }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.once("exit", (code, signal) => { clearTimeout(timer); reject(new Error(`${label} exited ${code ?? signal}:\n${output}`)); });
    });
    child.removeAllListeners("exit");
    let expected = false;
    child.on("exit", (code, signal) => {
      running.delete(child);
      if (!expected) onExit?.(label, code, signal, tail.join(""));
    });
    // Keep reading its output so a chatty server never blocks on a full pipe.
    child.stdout.removeAllListeners("data");
    child.stderr.removeAllListeners("data");
    const tail = [];
    const keep = (chunk) => { tail.push(String(chunk)); if (tail.length > 50) tail.shift(); };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    return {
      url,
      pid: child.pid,
      output: () => tail.join(""),
      /** SIGKILL: no graceful shutdown, whatever was in flight is cut. */
      kill: () => new Promise((ok) => {
        expected = true;
        if (child.exitCode !== null || child.signalCode !== null) return ok();
        child.once("exit", ok);
        child.kill("SIGKILL");
      }),
      stop: () => new Promise((ok) => {
        expected = true;
        if (child.exitCode !== null || child.signalCode !== null) return ok();
        child.once("exit", ok);
        child.kill("SIGTERM");
      }),
    };
  }

  const token = (tenant, sub = "chaos") =>
    execFileSync(BINARY, ["token", "--tenant", tenant, "--sub", sub, "--ttl", "86400"], { env })
      .toString().trim().split(/\s+/).pop();

  return {
    db,
    start,
    onExit: (callback) => { onExit = callback; },
    token,
    /** Stops every server still running and removes the private directory. */
    close: async () => {
      onExit = null;
      await Promise.all([...running].map((child) => new Promise((ok) => {
        if (child.exitCode !== null || child.signalCode !== null) return ok();
        child.once("exit", ok);
        child.kill("SIGTERM");
      })));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every record of a tenant as the server holds it (tombstones included), by entity type. */
export async function serverSnapshot(url, token, types) {
  const out = Object.fromEntries(types.map((t) => [t, []]));
  let cursor = null;
  for (let page = 0; page < 10000; page++) {
    const res = await fetch(`${url}/api/client/sync/pull`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ cursor, entityTypes: types, limit: 1000 }),
    });
    if (res.status !== 200) throw new Error(`snapshot pull: HTTP ${res.status} ${await res.text()}`);
    const body = await res.json();
    for (const [type, records] of Object.entries(body.data)) out[type].push(...records);
    if (!body.hasMore) return out;
    cursor = body.cursor;
  }
  throw new Error("snapshot pull did not end");
}

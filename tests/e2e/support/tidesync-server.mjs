// Runs the real reference server (target/debug/tidesync-server, built by
// scripts/test.sh) on 127.0.0.1 with a private SQLite file and config, for
// end-to-end replication tests, or over a given database (`db`: a
// PostgreSQL URL shared by several processes). Tokens are minted by its
// `token` command. `testHooks: true` starts it with `--test-hooks` (lose a
// push answer on request), which needs a build with the `test-hooks` feature
// (as scripts/test.sh builds it).
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BINARY = process.env.TIDESYNC_SERVER_BIN ?? "target/debug/tidesync-server";
const SECRET = "e2e-test-secret-at-least-32-bytes-long";

export async function startTidesyncServer({
  strategy = "last-write-wins", entityTypes = ["notes", "end_user", "interactions"], args = [], db = null,
  testHooks = false,
} = {}) {
  // Serves www/ and pkg/ of this checkout, like `npm start`.
  const dir = mkdtempSync(join(tmpdir(), "tidesync-e2e-"));
  const config = [`default_strategy = "${strategy}"`, ...entityTypes.map((t) => `[entities.${t}]`)].join("\n");
  writeFileSync(join(dir, "tidesync.toml"), config + "\n");
  const env = { ...process.env, TIDESYNC_JWT_SECRET: SECRET, RUST_LOG: "warn" };
  const child = spawn(BINARY, [
    "--bind", "127.0.0.1:0", "--db", db ?? join(dir, "tidesync.db"), "--config", join(dir, "tidesync.toml"),
    ...(testHooks ? ["--test-hooks"] : []), "--rate-limit", "0", ...args,
  ], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise((ok) => child.once("exit", ok));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 20000);
    const onData = (chunk) => {
      output += chunk;
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    exited.then((code) => { clearTimeout(timer); reject(new Error(`server exited ${code}:\n${output}`)); });
  });
  const token = (tenant, sub = "e2e") =>
    execFileSync(BINARY, ["token", "--tenant", tenant, "--sub", sub], { env }).toString().trim().split(/\s+/).pop();
  const call = async (path, tokenValue, body) => {
    const res = await fetch(`${url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${tokenValue}` },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  let stopped = false;
  return {
    url,
    pid: child.pid,
    token,
    call,
    /** Every record of the tenant as the server holds it, by entity type. */
    async snapshot(tokenValue, types = entityTypes) {
      const out = Object.fromEntries(types.map((t) => [t, []]));
      let cursor = null;
      for (;;) {
        const { body } = await call("/api/client/sync/pull", tokenValue, { cursor, entityTypes: types, limit: 1000 });
        for (const [type, records] of Object.entries(body.data)) out[type].push(...records);
        if (!body.hasMore) return out;
        cursor = body.cursor;
      }
    },
    /** The value of a metric on /metrics (a gauge or counter without labels). */
    async metric(name) {
      const text = await fetch(`${url}/metrics`).then((r) => r.text());
      const line = text.split("\n").find((l) => l.startsWith(`${name} `));
      return line ? Number(line.split(" ")[1]) : null;
    },
    dropNextPushResponse: (tokenValue) => call("/__test/drop-next-push-response", tokenValue, {}),
    /** Kills the process at once (SIGKILL): no goodbye, connections just drop. */
    kill: async () => {
      stopped = true;
      child.kill("SIGKILL");
      await exited;
    },
    close: async () => {
      if (!stopped) {
        stopped = true;
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

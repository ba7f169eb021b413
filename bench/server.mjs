// A lean HTTP server on 127.0.0.1 for the benchmarks: serves pkg/, the bench
// pages and the Workbox bundle, and answers every request to /api/* with 201
// after reading its body, counting them per path (no bodies kept, so the
// server stays cheap next to the browser it measures). A path under
// /api/latency-<ms>/ is answered <ms> milliseconds late, like a server across
// a real network; one under /api/unavailable/ gets 503 (after its body is read).
import { createServer } from "node:http";
import { serveFile } from "../scripts/static.mjs";

/** `pkgDir`: where /pkg/ is served from (bench/run.mjs passes a snapshot of pkg/). */
export async function startBenchServer({ pkgDir = "pkg" } = {}) {
  const counts = new Map(); // path → requests received
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://127.0.0.1").pathname;
    if (path.startsWith("/api/")) {
      let bytes = 0;
      for await (const chunk of req) bytes += chunk.length;
      const latency = /^\/api\/latency-(\d+)\//.exec(path);
      if (latency) await new Promise((ok) => setTimeout(ok, Number(latency[1])));
      counts.set(path, (counts.get(path) ?? 0) + 1);
      if (path.startsWith("/api/unavailable/")) {
        res.writeHead(503, { "content-type": "application/json" }).end('{"error":"unavailable"}');
        return;
      }
      res.writeHead(201, { "content-type": "application/json" }).end(`{"ok":true,"bytes":${bytes}}`);
      return;
    }
    if (path.startsWith("/pkg/") && serveFile(pkgDir, path.slice(5), res)) return;
    if (path.startsWith("/bench/") && serveFile("bench/pages", path.slice(7), res)) return;
    if (path.startsWith("/workbox/") && serveFile("bench/workbox/dist", path.slice(9), res)) return;
    if (path === "/favicon.ico") { res.writeHead(204).end(); return; }
    res.writeHead(404).end("not found");
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    count: (path) => counts.get(path) ?? 0,
    close: () => new Promise((ok) => { server.closeAllConnections?.(); server.close(ok); }),
  };
}

// A real HTTP server on 127.0.0.1 for end-to-end tests: serves www/, pkg/ and
// the test pages, and offers endpoints whose answers a test scripts
// (503 twice then 200, 422, 401 until the right token) while it records every
// request in arrival order.
import { createServer } from "node:http";
import { serveFile } from "../../../scripts/static.mjs";

export async function startTestServer() {
  const requests = []; // {path, method, headers, body, at}
  const scripts = new Map(); // path → [{status, headers, body}]
  let acceptedToken = "good";

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    const path = url.pathname;
    // Browser tests run on wasm-bindgen-test-runner's own origin: allow them.
    res.setHeader("access-control-allow-origin", "*");
    res.setHeader("access-control-allow-headers", "*, authorization");
    res.setHeader("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE");
    res.setHeader("access-control-expose-headers", "location, etag, retry-after");
    if (req.method === "OPTIONS") {
      res.writeHead(204).end();
      return;
    }
    if (path === "/__requests") {
      const prefix = url.searchParams.get("prefix") ?? "/";
      const list = requests.filter((r) => r.path.startsWith(prefix)).map(({ path, method, body, headers }) =>
        ({ path, method, body, idempotencyKey: headers["idempotency-key"] ?? null }));
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(list));
      return;
    }
    if (path.startsWith("/pkg/") && serveFile("pkg", path.slice(5), res)) return;
    if (path.startsWith("/pages/") && serveFile("tests/e2e/pages", path.slice(7), res)) return;
    if (!path.startsWith("/api/")) {
      if (serveFile("www", path, res)) return;
      res.writeHead(404).end("not found");
      return;
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks);
    const body = raw.toString("utf8");
    let parsed = body;
    try { parsed = body ? JSON.parse(body) : null; } catch { /* text body */ }
    requests.push({ path, method: req.method, headers: req.headers, body: parsed, raw, at: Date.now() });

    if (path.startsWith("/api/auth/")) {
      if (req.headers.authorization !== `Bearer ${acceptedToken}`) {
        res.writeHead(401, { "content-type": "application/json" }).end('{"error":"unauthorized"}');
        return;
      }
    }
    const queue = scripts.get(path);
    const scripted = queue && queue.length ? queue.shift() : null;
    const status = scripted?.status ?? 201;
    const headers = { "content-type": "application/json", ...(scripted?.headers ?? {}) };
    const answer = scripted?.body ?? { ok: true, received: parsed, serverId: `srv-${requests.length}` };
    res.writeHead(status, headers).end(JSON.stringify(answer));
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    /** Requests whose path starts with `prefix`. */
    received: (prefix) => requests.filter((r) => r.path.startsWith(prefix)),
    /** The next answers for `path`, then 201s. */
    script: (path, answers) => scripts.set(path, [...answers]),
    acceptToken: (token) => { acceptedToken = token; },
    close: () => new Promise((ok) => { server.closeAllConnections?.(); server.close(ok); }),
  };
}

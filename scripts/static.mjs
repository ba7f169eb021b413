// Serves files from a directory with the right content types (application/wasm
// for .wasm, so WebAssembly.instantiateStreaming works). Used by the e2e test
// server; the demo itself is served by tidesync-server.
import { createReadStream, statSync } from "node:fs";
import { extname, join, normalize, resolve } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".ts": "text/plain; charset=utf-8",
};

/** Serves `urlPath` (already stripped of its mount prefix) from `root`; returns false when absent. */
export function serveFile(root, urlPath, res) {
  const base = resolve(root);
  let file = normalize(join(base, decodeURIComponent(urlPath)));
  if (!file.startsWith(base)) return false;
  try {
    if (statSync(file).isDirectory()) file = join(file, "index.html");
    const size = statSync(file).size;
    res.writeHead(200, {
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "content-length": size,
      "cache-control": "no-store",
      "service-worker-allowed": "/",
    });
    createReadStream(file).pipe(res);
    return true;
  } catch {
    return false;
  }
}

// Bundles workbox-background-sync's Queue for the browser (production build:
// no dev-mode asserts or logging) into bench/workbox/dist/queue.js.
import { build } from "esbuild";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
await build({
  stdin: { contents: 'export { Queue } from "workbox-background-sync";', resolveDir: here, loader: "js" },
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  define: { "process.env.NODE_ENV": '"production"' },
  outfile: join(here, "dist", "queue.js"),
  logLevel: "warning",
});

// Writes the npm manifest and README of the built package (pkg/).
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const outDir = process.argv[2] ?? "pkg";
const cargo = readFileSync("Cargo.toml", "utf8");
const version = /\[workspace\.package\][^[]*?version\s*=\s*"([^"]+)"/s.exec(cargo)[1];

const manifest = {
  name: "tidesync",
  version,
  description: "Offline-first sync SDK for web apps: an IndexedDB outbox with priorities, retries and replication, in WebAssembly.",
  license: "MIT OR Apache-2.0",
  type: "module",
  main: "./tidesync.js",
  module: "./tidesync.js",
  types: "./tidesync.d.ts",
  exports: {
    ".": { types: "./tidesync.d.ts", import: "./tidesync.js", default: "./tidesync.js" },
    "./tidesync_bg.wasm": "./tidesync_bg.wasm",
    "./package.json": "./package.json",
  },
  files: ["tidesync.js", "tidesync.d.ts", "tidesync_bg.wasm", "tidesync_bg.wasm.d.ts", "README.md"],
  sideEffects: false,
  keywords: ["offline", "sync", "indexeddb", "background-sync", "wasm", "outbox"],
};
writeFileSync(join(outDir, "package.json"), JSON.stringify(manifest, null, 2) + "\n");
writeFileSync(join(outDir, "README.md"), readFileSync("README.md", "utf8"));

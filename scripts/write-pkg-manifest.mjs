// Writes the npm manifest and README of the built package (pkg/), and makes
// the generated declarations free of `any`: the raw wasm exports listed in
// `InitOutput` and tidesync_bg.wasm.d.ts are typed `any` by wasm-bindgen;
// they are internal (pointers and externrefs), so `unknown` says the truth
// without opening a hole in an application's type checking.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
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
// The package's README is the repository's, less what only concerns a checkout
// of the repository (its two commands).
const readme = readFileSync("README.md", "utf8").replace(/\n## Two commands\n[\s\S]*?(?=\n## )/, "\n");
writeFileSync(join(outDir, "README.md"), readme);

/** `any` → `unknown` in the raw wasm export signatures of a declaration file. */
function withoutAny(text, inside) {
  const fix = (part) => part.replace(/\bany\b/g, "unknown");
  if (!inside) return fix(text);
  const start = text.indexOf(inside);
  if (start < 0) return text;
  const end = text.indexOf("\n}", start);
  return text.slice(0, start) + fix(text.slice(start, end)) + text.slice(end);
}
const dts = join(outDir, "tidesync.d.ts");
// `SyncClient` implements `[Symbol.dispose]` (explicit resource management):
// reference the lib that declares it, so a consumer's tsc with lib ES2022 and
// skipLibCheck off still type-checks the package.
const DISPOSABLE = '/// <reference lib="esnext.disposable" />\n';
if (existsSync(dts)) {
  let text = withoutAny(readFileSync(dts, "utf8"), "export interface InitOutput {");
  if (text.includes("Symbol.dispose") && !text.startsWith(DISPOSABLE)) text = DISPOSABLE + text;
  text = camelCaseParams(text, "export class SyncClient {");
  writeFileSync(dts, text);
}
const wasmDts = join(outDir, "tidesync_bg.wasm.d.ts");
if (existsSync(wasmDts)) writeFileSync(wasmDts, withoutAny(readFileSync(wasmDts, "utf8")));

/** Rust's snake_case parameter names (`entity_type`) as JavaScript spells them (`entityType`), in one class. */
function camelCaseParams(text, inside) {
  const start = text.indexOf(inside);
  if (start < 0) return text;
  const end = text.indexOf("\n}", start);
  const body = text.slice(start, end).replace(/^(\s+(?:static )?\w+\()([^)]*)\)/gm, (_, head, params) =>
    `${head}${params.replace(/\b([a-z]+(?:_[a-z0-9]+)+)(\??:)/g, (_m, name, colon) =>
      name.replace(/_([a-z0-9])/g, (_c, ch) => ch.toUpperCase()) + colon)})`);
  return text.slice(0, start) + body + text.slice(end);
}

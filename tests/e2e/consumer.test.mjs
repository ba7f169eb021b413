// The npm package as a web developer meets it: tests/consumer/ installs pkg/
// by path with npm (packed, so `files` and `exports` matter), type-checks its
// TypeScript with `tsc --noEmit --strict` (and fails on a misspelled event
// name), bundles it with Vite, and the bundle completes one task in Chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serveFile } from "../../scripts/static.mjs";
import { startTestServer } from "./support/server.mjs";
import { launchBrowser } from "./support/browser.mjs";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const APP = join(ROOT, "tests/consumer");
const INSTALLED = join(APP, "node_modules/tidesync");

/** Runs a command in the consumer app; returns {status, output}. */
function run(command, args, { timeout = 300_000 } = {}) {
  const result = spawnSync(command, args, { cwd: APP, encoding: "utf8", timeout, env: { ...process.env, NO_COLOR: "1" } });
  if (result.error) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}
const bin = (name) => join(APP, "node_modules/.bin", name);

before(() => {
  assert.ok(existsSync(join(ROOT, "pkg/tidesync_bg.wasm")), "pkg/ is built (bash scripts/build.sh)");
  // A fresh copy of today's pkg/ every run; typescript and vite come from the
  // npm cache after the first install.
  rmSync(INSTALLED, { recursive: true, force: true });
  const install = run("npm", ["install", "--no-audit", "--no-fund", "--no-package-lock", "--prefer-offline",
    "--install-links", "--loglevel=error"], { timeout: 600_000 });
  assert.equal(install.status, 0, `npm install in tests/consumer failed:\n${install.output}`);
});

test("npm installs pkg/ as a package: exports, types, files, sideEffects, and no `any` in the declarations", () => {
  const manifest = JSON.parse(readFileSync(join(INSTALLED, "package.json"), "utf8"));
  assert.equal(manifest.name, "tidesync");
  assert.equal(manifest.type, "module");
  assert.equal(manifest.sideEffects, false);
  assert.equal(manifest.types, "./tidesync.d.ts");
  assert.deepEqual(manifest.exports["."], { types: "./tidesync.d.ts", import: "./tidesync.js", default: "./tidesync.js" });
  // Packed by npm: exactly the published files, nothing of the build's leftovers.
  assert.deepEqual(readdirSync(INSTALLED).sort(),
    ["README.md", "package.json", "tidesync.d.ts", "tidesync.js", "tidesync_bg.wasm", "tidesync_bg.wasm.d.ts"]);
  for (const file of ["tidesync.d.ts", "tidesync_bg.wasm.d.ts"]) {
    const text = readFileSync(join(INSTALLED, file), "utf8");
    const anys = text.split("\n").map((line, i) => [i + 1, line]).filter(([, line]) => /\bany\b/.test(line.replace(/\/\/.*|\/\*.*?\*\/|^\s*\*.*/g, "")));
    assert.deepEqual(anys, [], `${file} has \`any\` in signatures`);
  }
  const dts = readFileSync(join(INSTALLED, "tidesync.d.ts"), "utf8");
  assert.match(dts, /on<K extends SyncEventName>\(event: K, listener: SyncEvents\[K\]\): \(\) => void;/);
  assert.doesNotMatch(dts, /listener: Function/);
  const clientClass = dts.slice(dts.indexOf("export class SyncClient {"), dts.indexOf("\n}", dts.indexOf("export class SyncClient {")));
  assert.deepEqual(clientClass.match(/\b[a-z]+_[a-z0-9_]+\??:/g) ?? [], [], "parameters are camelCase, as JavaScript spells them");
  assert.match(readFileSync(join(INSTALLED, "README.md"), "utf8"), /## Quick start/);
});

test("tsc --noEmit --strict accepts the app's typed use of the API (with @ts-expect-error checks)", () => {
  const { status, output } = run(bin("tsc"), ["--noEmit", "--strict", "-p", "tsconfig.json"]);
  assert.equal(status, 0, `tsc failed:\n${output}`);
});

test("the package's types also resolve under module/moduleResolution NodeNext (the exports map's types condition)", () => {
  const { status, output } = run(bin("tsc"), ["--noEmit", "--strict", "-p", "tsconfig.nodenext.json"]);
  assert.equal(status, 0, `tsc (NodeNext) failed:\n${output}`);
});

test("a misspelled event name fails to type-check", () => {
  const { status, output } = run(bin("tsc"), ["--noEmit", "--strict", "-p", "tsconfig.negative.json"]);
  assert.notEqual(status, 0, `tsc accepted a misspelled event name:\n${output}`);
  assert.match(output, /type-errors\/misspelled-event\.ts\(8,\d+\): error TS2345: Argument of type '"sync:complet"' is not assignable to parameter of type 'keyof SyncEvents'/);
  assert.equal(output.trim().split("\n").length, 1, `only that error:\n${output}`);
});

test("the README's quick start type-checks as pasted", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const section = readme.split("## Quick start")[1]?.split("\n## ")[0] ?? "";
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code, "README.md has a ```ts block under ## Quick start");
  const dir = join(APP, "node_modules/.readme-quickstart");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "quickstart.ts"), `${code}\nexport {};\n`);
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
    extends: "../../tsconfig.json", compilerOptions: { noUnusedLocals: false }, include: [], files: ["quickstart.ts"],
  }));
  const { status, output } = run(bin("tsc"), ["--noEmit", "--strict", "-p", join(dir, "tsconfig.json")]);
  assert.equal(status, 0, `the quick start does not type-check:\n${output}\n--- code ---\n${code}`);
});

let server, browser, dist;
before(async () => {
  server = await startTestServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.close();
  await new Promise((ok) => (dist ? dist.close(ok) : ok()));
});

test("Vite bundles the app, and the bundle completes a task in Chromium", async () => {
  const build = run(bin("vite"), ["build", "--logLevel", "warn"]);
  assert.equal(build.status, 0, `vite build failed:\n${build.output}`);
  const assets = readdirSync(join(APP, "dist/assets"));
  assert.ok(assets.some((f) => f.endsWith(".wasm")), `the .wasm is emitted as an asset: ${assets}`);
  assert.ok(assets.some((f) => f.endsWith(".js")), `a JS bundle: ${assets}`);

  dist = createServer((req, res) => {
    const path = new URL(req.url, "http://127.0.0.1").pathname;
    if (!serveFile(join(APP, "dist"), path, res)) res.writeHead(404).end("not found");
  });
  await new Promise((ok) => dist.listen(0, "127.0.0.1", ok));
  const distUrl = `http://127.0.0.1:${dist.address().port}`;

  server.script("/api/consumer/retry", [{ status: 503 }]);
  server.script("/api/consumer/fail", [{ status: 422, body: { error: "not json" } }]);
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${distUrl}/?server=${encodeURIComponent(server.url)}`);
  await page.waitForFunction(() => window.consumerResult !== undefined, undefined, { timeout: 30000 });
  const result = await page.evaluate(() => window.consumerResult);
  assert.equal(result.ok, true, result.error);
  assert.equal(result.id, "consumer-hello");
  assert.equal(result.status, 201);
  assert.equal(result.pendingCount, 0);
  assert.equal(result.body.received.from, "vite bundle");
  const received = server.received("/api/consumer/hello");
  assert.equal(received.length, 1, "delivered exactly once");
  assert.equal(received[0].headers["x-trace"], "consumer");
  assert.match(await page.textContent("#state"), /delivered consumer-hello: HTTP 201/);
  assert.deepEqual(result.outcomes.slice(0, 2), ["complete", "complete"]);
  assert.match(result.outcomes[2], /^failed: /);
  assert.equal(server.received("/api/consumer/retry").length, 2, "503 then 201");
  // subscribe(): the callback form and the React hook (docs/live.md) rendering through React 19.
  assert.deepEqual(result.subscribed, [["n1"], ["n3", "n1"], ["n3"]]);
  assert.deepEqual(result.rendered, ["Typed", "Another | Typed", "Another"]);
  assert.deepEqual(errors, []);
  await page.close();
  runtimeSamples = result.samples;
});

// Every value the bundle received at run time, written as a typed TypeScript
// literal: excess-property and missing-property checks make tsc fail when the
// .d.ts and what the SDK really returns disagree.
test("the React hook in docs/live.md is the file the consumer app type-checks, bundles and renders", () => {
  const docs = readFileSync(join(ROOT, "docs/live.md"), "utf8");
  const hook = /### React[\s\S]*?```ts\n([\s\S]*?)```/.exec(docs)?.[1];
  assert.ok(hook, "docs/live.md has a ```ts block under ### React");
  assert.equal(readFileSync(join(APP, "src/useRecords.ts"), "utf8"), hook);
});

let runtimeSamples;
test("what the SDK returns at run time type-checks against the declarations", (t) => {
  if (!runtimeSamples) return t.skip("needs the Vite test's samples");
  const types = {
    statusOpen: "SyncStatus", statusAfter: "SyncStatus", statusEvent: "Parameters<SyncEvents[\"status\"]>[0]",
    queuedTask: "QueuedTask", queuedList: "QueuedTask[]",
    completeTask: "Parameters<SyncEvents[\"sync:complete\"]>[0]", completeResponse: "Parameters<SyncEvents[\"sync:complete\"]>[1]",
    failedTask: "Parameters<SyncEvents[\"sync:failed\"]>[0]", failure: "Parameters<SyncEvents[\"sync:failed\"]>[1]",
    retryTask: "Parameters<SyncEvents[\"sync:retry\"]>[0]", retryInfo: "Parameters<SyncEvents[\"sync:retry\"]>[1]",
    flushReport: "FlushReport", metrics: "SyncMetrics", health: "SyncHealth",
    taskStatusPending: "TaskStatus | null", taskStatusComplete: "TaskStatus | null", failedList: "FailedTask[]",
    recordPut: "SyncedRecord", recordGet: "SyncedRecord | null", recordQuery: "SyncedRecord[]", mutations: "QueuedTask[]",
    liveStatus: "LiveStatus", snapshot: "RecordsSnapshot",
  };
  assert.deepEqual(Object.keys(runtimeSamples).sort(), Object.keys(types).sort(), "every sample was collected");
  const lines = [
    'import type { FailedTask, FlushReport, LiveStatus, QueuedTask, RecordsSnapshot, SyncEvents, SyncHealth, SyncMetrics, SyncStatus, SyncedRecord, TaskStatus } from "tidesync";',
    ...Object.entries(types).map(([name, type]) => `export const ${name}: ${type} = ${JSON.stringify(runtimeSamples[name], null, 2)};`),
  ];
  const dir = join(APP, "node_modules/.runtime-shapes");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "shapes.ts"), lines.join("\n") + "\n");
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
    extends: "../../tsconfig.json", include: [], files: ["shapes.ts"],
  }));
  const { status, output } = run(bin("tsc"), ["--noEmit", "--strict", "-p", join(dir, "tsconfig.json")]);
  assert.equal(status, 0, `the declarations disagree with run-time values (${join(dir, "shapes.ts")}):\n${output}`);
});

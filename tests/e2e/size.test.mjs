// The download a web app pays for stays within size-budget.json (gzipped
// .wasm and JS glue of pkg/, after wasm-opt -Oz).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { FILES, measure, overBudget, readBudget } from "../../scripts/size.mjs";

test("pkg/ gzipped sizes are within size-budget.json", () => {
  const sizes = measure();
  const budget = readBudget();
  for (const file of FILES) {
    assert.ok(sizes[file].gzip > 1000, `${file} measured (${sizes[file].gzip} B gzipped)`);
    assert.ok(Number.isInteger(budget.gzip[file]), `size-budget.json has a budget for ${file}`);
  }
  assert.deepEqual(overBudget(sizes, budget), [],
    `over budget: ${JSON.stringify(overBudget(sizes, budget))}; shrink it, or re-baseline with \`node scripts/size.mjs --baseline\``);
});

test("npm run size prints both files and fails when a budget is exceeded", () => {
  const out = execFileSync("node", ["scripts/size.mjs"], { encoding: "utf8" });
  for (const file of FILES) assert.match(out, new RegExp(`${file.replace(".", "\\.")} .* gzip \\(\\d+ B\\)  budget \\d+ B  ok`));
  const sizes = measure();
  const tight = { gzip: { "tidesync_bg.wasm": sizes["tidesync_bg.wasm"].gzip - 1, "tidesync.js": sizes["tidesync.js"].gzip } };
  assert.deepEqual(overBudget(sizes, tight).map((o) => o.file), ["tidesync_bg.wasm"]);
});

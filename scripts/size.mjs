// npm run size: the gzipped size of what a web app downloads (pkg/tidesync_bg.wasm
// and the JS glue pkg/tidesync.js), checked against size-budget.json.
//   node scripts/size.mjs            print sizes and the budget; exit 1 when over
//   node scripts/size.mjs --json     the same as JSON
//   node scripts/size.mjs --baseline write size-budget.json at today's size + 5%
import { readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

export const ROOT = join(fileURLToPath(import.meta.url), "../..");
export const FILES = ["tidesync_bg.wasm", "tidesync.js"];
export const BUDGET_FILE = join(ROOT, "size-budget.json");
const HEADROOM = 1.05;

/** `{file: {raw, gzip}}` for the files of `pkgDir`, gzip at level 9. */
export function measure(pkgDir = join(ROOT, "pkg")) {
  const sizes = {};
  for (const file of FILES) {
    let bytes;
    try {
      bytes = readFileSync(join(pkgDir, file));
    } catch {
      throw new Error(`${join(pkgDir, file)} is missing: run \`bash scripts/build.sh\` first`);
    }
    sizes[file] = { raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  }
  return sizes;
}

export function readBudget() {
  return JSON.parse(readFileSync(BUDGET_FILE, "utf8"));
}

/** The files whose gzipped size exceeds their budget. */
export function overBudget(sizes, budget = readBudget()) {
  return FILES.filter((file) => sizes[file].gzip > budget.gzip[file]).map((file) => ({
    file, gzip: sizes[file].gzip, budget: budget.gzip[file],
  }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const sizes = measure();
  if (process.argv.includes("--baseline")) {
    const budget = {
      note: "Gzipped bytes (level 9) of pkg/ after wasm-opt -Oz, plus 5%. Checked by tests/e2e/size.test.mjs; re-baseline with `node scripts/size.mjs --baseline` after `bash scripts/build.sh`.",
      measuredAt: new Date().toISOString().slice(0, 10),
      measured: Object.fromEntries(FILES.map((f) => [f, sizes[f].gzip])),
      gzip: Object.fromEntries(FILES.map((f) => [f, Math.ceil(sizes[f].gzip * HEADROOM)])),
    };
    writeFileSync(BUDGET_FILE, JSON.stringify(budget, null, 2) + "\n");
    console.log(`[size] wrote ${BUDGET_FILE}`);
  }
  const budget = readBudget();
  const over = overBudget(sizes, budget);
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify({ sizes, budget: budget.gzip, over }, null, 2));
  } else {
    const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
    for (const file of FILES) {
      const { raw, gzip } = sizes[file];
      const limit = budget.gzip[file];
      console.log(`${file.padEnd(18)} ${kib(raw).padStart(10)} raw  ${kib(gzip).padStart(9)} gzip (${gzip} B)  budget ${limit} B  ${gzip > limit ? "OVER" : "ok"}`);
    }
    const total = FILES.reduce((sum, f) => sum + sizes[f].gzip, 0);
    console.log(`${"total".padEnd(18)} ${" ".repeat(15)} ${kib(total).padStart(9)} gzip`);
  }
  if (over.length) {
    for (const o of over) console.error(`[size] ${o.file}: ${o.gzip} B gzipped is over its budget of ${o.budget} B (size-budget.json)`);
    process.exit(1);
  }
}

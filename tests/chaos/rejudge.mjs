// Judges a finished chaos run again from what it collected
// (target/chaos/evidence-<seed>.json, written by run.mjs), so a change to
// the oracle can be tried on a run without replaying it:
//   node tests/chaos/rejudge.mjs target/chaos/evidence-123.json
import { readFileSync } from "node:fs";
import { judge } from "./oracle.mjs";

const file = process.argv[2];
if (!file) {
  console.error("usage: node tests/chaos/rejudge.mjs target/chaos/evidence-<seed>.json");
  process.exit(2);
}
const evidence = JSON.parse(readFileSync(file, "utf8"));
const ops = new Map(evidence.ledger.map((o) => [o.op.id, o]));
const { figures, violations, ambiguous } = judge({
  ...evidence,
  ledger: { ops },
  traces: new Map(evidence.traces),
  kills: evidence.kills.map((k) => ({ ...k, doneAt: k.doneAt ?? Infinity })),
});
const relative = (x) => (typeof x === "number" && x > 1e12 ? x - evidence.started : x);
const shown = (v) => JSON.stringify(v, (_k, x) => relative(x));
for (const v of violations) console.log(`violation ${shown(v)}`);
for (const a of ambiguous) console.log(`read late ${shown(a)}`);
console.log(`rejudged: ${JSON.stringify(figures)} violations=${violations.length}`);
process.exit(violations.length ? 1 : 0);

// Draws docs/benchmarks.svg from a bench results file: Tidesync and Workbox
// (in its service worker) as a share of the browser's own limit measured in
// the same run, for enqueue and replay. Ratios only, because the bench machine
// is shared and its absolute rates move with the load.
//   node scripts/bench-chart.mjs [bench/results/latest.json] [docs/benchmarks.svg]
import { readFileSync, writeFileSync } from "node:fs";

const [input = "bench/results/latest.json", output = "docs/benchmarks.svg"] = process.argv.slice(2);
const report = JSON.parse(readFileSync(input, "utf8"));
const byId = new Map(report.results.map((r) => [r.id, r]));
const figure = (id) => byId.get(id)?.median ?? null;
/** The best figure among the rows whose id matches (the best concurrency). */
const best = (pattern) => {
  const values = report.results.filter((r) => pattern.test(r.id)).map((r) => r.median);
  return values.length ? Math.max(...values) : null;
};
const sizeOf = (prefix) => [...new Set(report.results.filter((r) => r.id.startsWith(prefix)).map((r) => r.n))].sort((a, b) => a - b);
const k = (n) => (n >= 1000 ? `${n / 1000}k` : String(n));

const groups = [];
for (const n of sizeOf("limit.idb.tick.")) {
  groups.push({ label: `enqueue all at once, ${k(n)}`, limitLabel: "puts in one transaction",
    limit: figure(`limit.idb.tick.${n}`), tidesync: figure(`tidesync.enqueue.tick.${n}`), workbox: figure(`workbox-sw.enqueue.tick.${n}`) });
}
for (const n of sizeOf("limit.idb.sequential.")) {
  groups.push({ label: `enqueue awaited one by one, ${k(n)}`, limitLabel: "one transaction per put",
    limit: figure(`limit.idb.sequential.${n}`), tidesync: figure(`tidesync.enqueue.sequential.${n}`), workbox: figure(`workbox-sw.enqueue.sequential.${n}`) });
}
const rawN = sizeOf("fetch.raw.").filter((n) => report.results.some((r) => r.id.startsWith(`fetch.raw.${n}.`)));
for (const n of sizeOf("tidesync.replay.").filter((n) => report.results.some((r) => new RegExp(`^tidesync\\.replay\\.${n}\\.c`).test(r.id)))) {
  groups.push({ label: `replay, server 0 ms, ${k(n)}`, limitLabel: "plain fetch(), best concurrency",
    limit: best(new RegExp(`^fetch\\.raw\\.(${rawN.join("|")})\\.c\\d+$`)), tidesync: best(new RegExp(`^tidesync\\.replay\\.${n}\\.c\\d+$`)),
    workbox: figure(`workbox-sw.replay.${n}`) });
}
for (const r of report.results.filter((r) => /^fetch\.raw\.latency\d+\.\d+\.c1$/.test(r.id))) {
  const [, ms, n] = /latency(\d+)\.(\d+)/.exec(r.id);
  groups.push({ label: `replay, server ${ms} ms, ${k(Number(n))}`, limitLabel: "plain fetch(), best concurrency",
    limit: best(new RegExp(`^fetch\\.raw\\.latency${ms}\\.${n}\\.c\\d+$`)), tidesync: best(new RegExp(`^tidesync\\.replay\\.latency${ms}\\.${n}\\.c\\d+$`)),
    workbox: figure(`workbox-sw.replay.latency${ms}.${n}`) });
}

// Layout: one block per group, a bar each for Tidesync and Workbox, scaled
// so that the group's limit is the dashed 100 % line.
const W = 820, left = 260, right = 90, barH = 14, gap = 4, groupGap = 18, top = 74;
const maxShare = Math.max(1.2, ...groups.flatMap((g) => [g.tidesync, g.workbox].filter((v) => v !== null && g.limit).map((v) => v / g.limit)));
const x = (share) => left + (share / maxShare) * (W - left - right);
const escape = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;");
const pct = (v) => `${Math.round(v * 100)} %`;
const blockH = 2 * barH + gap + groupGap + 12;
const H = top + groups.length * blockH + 30;
const parts = [];
parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
parts.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
const load = report.machine?.loadAverageAtStart?.[0];
parts.push(`<text x="10" y="20" font-size="14" font-weight="bold">Tidesync and Workbox as a share of the browser's limit (same run)</text>`);
parts.push(`<text x="10" y="38" fill="#555">${escape(`${report.date.slice(0, 10)}, commit ${report.commit}${report.smoke ? " (smoke form: 200 items, one run)" : ""}; Chromium ${report.machine.chromium}, ${report.machine.cores} cores`)}</text>`);
parts.push(`<text x="10" y="54" fill="#555">${escape(`load average ${load} at the start (a shared machine); Workbox ${report.versions?.workboxBackgroundSync ?? "?"} in a module service worker`)}</text>`);
for (const share of [0, 0.5, 1]) {
  parts.push(`<line x1="${x(share)}" y1="${top - 6}" x2="${x(share)}" y2="${H - 24}" stroke="${share === 1 ? "#000" : "#ccc"}" stroke-dasharray="${share === 1 ? "4 3" : "2 3"}"/>`);
  parts.push(`<text x="${x(share)}" y="${H - 10}" text-anchor="middle" fill="#555">${share === 1 ? "100 % = limit" : pct(share)}</text>`);
}
groups.forEach((g, i) => {
  const y0 = top + i * blockH;
  parts.push(`<text x="10" y="${y0 + 10}" font-weight="bold">${escape(g.label)}</text>`);
  parts.push(`<text x="10" y="${y0 + 24}" fill="#777" font-size="10">limit: ${escape(g.limitLabel)}</text>`);
  [["Tidesync", g.tidesync, "#1f6feb"], ["Workbox", g.workbox, "#d29922"]].forEach(([name, value, colour], j) => {
    const y = y0 + j * (barH + gap);
    if (value === null || !g.limit) {
      parts.push(`<text x="${left + 4}" y="${y + barH - 3}" fill="#999">${name}: not measured</text>`);
      return;
    }
    const share = value / g.limit;
    parts.push(`<rect x="${left}" y="${y}" width="${Math.max(1, x(share) - left)}" height="${barH}" fill="${colour}"/>`);
    parts.push(`<text x="${x(share) + 4}" y="${y + barH - 3}">${name} ${pct(share)}</text>`);
  });
});
parts.push("</svg>");
writeFileSync(output, parts.join("\n") + "\n");
console.error(`[bench-chart] ${groups.length} groups from ${input} → ${output}`);

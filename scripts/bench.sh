#!/usr/bin/env bash
# Benchmarks (`npm run bench`): Tidesync's enqueue and replay throughput, the
# JS heap during a 10,000-task replay and the gzipped bundle, in Debian's
# headless Chromium against a server on 127.0.0.1, with Workbox Background
# Sync side by side. Prints a table and writes bench/results/latest.json.
# Measures only: nothing here asserts a speed. `npm test` runs its smoke form
# (BENCH_SMOKE=1: every row at 200 items, once; it fails only when a row gave
# no figure, so the harness cannot rot). See docs/benchmarks.md. Environment:
# BENCH_RUNS, BENCH_LONG_RUNS, BENCH_ONLY, BENCH_SMOKE (see bench/run.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[bench] $*" >&2; }

# The browser and playwright-core come from the project's setup; build pkg/
# only when it is missing (the bench measures what is there).
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ] || [ ! -d node_modules/playwright-core ]; then
  bash scripts/setup.sh
fi
if [ ! -f pkg/tidesync_bg.wasm ] || [ ! -f pkg/tidesync.js ]; then
  say "pkg/ is missing: building it"
  bash scripts/build.sh
fi

# Workbox: a bench-only install (bench/workbox/node_modules, gitignored) and
# an esbuild bundle of its Queue. Without it the bench runs Tidesync alone.
WB=bench/workbox
if [ ! -f "$WB/node_modules/.package-lock.json" ] || [ "$WB/package-lock.json" -nt "$WB/node_modules/.package-lock.json" ]; then
  say "installing workbox-background-sync and esbuild into $WB/node_modules"
  (cd "$WB" && npm ci --no-audit --no-fund --loglevel=error) || say "Workbox install failed: Tidesync only"
fi
rm -rf "$WB/dist"
if [ -d "$WB/node_modules/workbox-background-sync" ]; then
  node "$WB/build.mjs" || say "Workbox bundle failed: Tidesync only"
fi

if [ "${BENCH_SMOKE:-}" = "1" ]; then
  # The smoke form only checks that every row still measures: the debug
  # server scripts/test.sh has built is enough (no release build in CI).
  [ -x target/debug/tidesync-server ] || cargo build --quiet -p tidesync-server
  TIDESYNC_SERVER_BIN=${TIDESYNC_SERVER_BIN:-target/debug/tidesync-server} node bench/run.mjs
  exit
fi

# Replication rows run the reference server, built for release.
cargo build --quiet --release -p tidesync-server
TIDESYNC_SERVER_BIN=${TIDESYNC_SERVER_BIN:-target/release/tidesync-server} node bench/run.mjs

#!/usr/bin/env bash
# Every test layer, after an idempotent setup and a build:
#   1. native: cargo fmt --check, clippy (native and wasm32), cargo test
#   2. browser: wasm-bindgen-test suites in headless Chromium (real IndexedDB)
#   3. server: the push/pull server against SQLite and PostgreSQL
#   4. end to end: Playwright (playwright-core) against pages on 127.0.0.1,
#      then the quick chaos run (tests/chaos/run.mjs --quick) and the
#      bench's smoke form (bench/run.mjs with BENCH_SMOKE=1)
# Each layer prints its runner's summary; the script stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh

layer() { echo; echo "=== $* ==="; }

layer "native: format, lint, engine and protocol tests"
cargo fmt --all --check
cargo clippy --quiet --workspace --all-targets --features tidesync-server/test-hooks -- -D warnings
wasm_cargo clippy --quiet --target wasm32-unknown-unknown -p tidesync --all-targets -- -D warnings
cargo test --workspace --exclude tidesync-server

layer "build: pkg/"
bash scripts/build.sh

layer "browser: wasm-bindgen-test in headless Chromium"
ENDPOINT_LOG=$(mktemp)
node tests/e2e/support/serve-cli.mjs > "$ENDPOINT_LOG" &
ENDPOINT_PID=$!
trap 'kill $ENDPOINT_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do [ -s "$ENDPOINT_LOG" ] && break; sleep 0.1; done
TIDESYNC_TEST_ENDPOINT=$(head -n1 "$ENDPOINT_LOG")
export TIDESYNC_TEST_ENDPOINT
wasm_cargo test --target wasm32-unknown-unknown -p tidesync --tests
kill $ENDPOINT_PID 2>/dev/null || true
trap - EXIT

if [ -f scripts/test-server.sh ]; then
  layer "server: SQLite and PostgreSQL"
  bash scripts/test-server.sh
fi

layer "end to end: Playwright in Chromium"
# The replication tests run the real reference server, on SQLite and (the
# volume tests) on a private PostgreSQL too; built with the test hooks,
# which tests/e2e/replication.test.mjs uses to lose a push answer.
cargo build --quiet -p tidesync-server --features test-hooks
trap 'bash scripts/postgres.sh stop || true' EXIT
eval "$(bash scripts/postgres.sh start)"
TIDESYNC_E2E_DATABASE_URL=$TIDESYNC_TEST_DATABASE_URL node --test --test-concurrency=1 tests/e2e/
bash scripts/postgres.sh stop
trap - EXIT

layer "chaos: the quick reliability run (about 1,000 operations, a fresh seed)"
# Faults, reloads, crashes and a service worker against the same server
# build; prints its seed first (replay: node tests/chaos/run.mjs --quick
# --seed N) and one summary line last, and fails on any violation.
node tests/chaos/run.mjs --quick

layer "bench: smoke form"
# The bench's smoke form (every row at 200 items, once): it asserts no speed,
# only that every row still produces a figure, so the bench cannot rot.
BENCH_SMOKE=1 bash scripts/bench.sh

#!/usr/bin/env bash
# Server test layer (called by `npm test`): the tidesync-server integration
# suite against SQLite (always) and a private PostgreSQL that this script
# installs if missing, starts as the `postgres` user on a private port and
# data directory, and stops on exit. Fails if PostgreSQL cannot start.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

trap 'bash scripts/postgres.sh stop || true' EXIT
eval "$(bash scripts/postgres.sh start)"
if [ -z "${TIDESYNC_TEST_DATABASE_URL:-}" ]; then
  echo "test-server.sh: PostgreSQL did not report a URL" >&2
  exit 1
fi
export TIDESYNC_TEST_REQUIRE_POSTGRES=1
echo "test-server.sh: PostgreSQL at $TIDESYNC_TEST_DATABASE_URL"
# The test hooks (`--test-hooks`) exist only in builds with their feature.
cargo test -p tidesync-protocol -p tidesync-server --features tidesync-server/test-hooks "$@"

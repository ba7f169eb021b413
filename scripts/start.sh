#!/usr/bin/env bash
# npm start: set up what is missing, build pkg/ and the server, then run the
# reference server (embedded SQLite, dev mode) serving the demo on
# http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
. scripts/env.sh
cargo build --quiet --release -p tidesync-server
mkdir -p .tidesync
echo "[start] demo on http://127.0.0.1:8080 (Ctrl-C to stop)"
exec target/release/tidesync-server --bind "${TIDESYNC_BIND:-127.0.0.1:8080}" --db "${TIDESYNC_DB:-sqlite://.tidesync/tidesync.db}" "$@"

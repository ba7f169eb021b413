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
SERVER=target/release/tidesync-server
mkdir -p .tidesync
# The demo page reads a dev token for tenant "demo" (dev mode only: with
# TIDESYNC_JWT_SECRET set, mint tokens your own way).
if [ -z "${TIDESYNC_JWT_SECRET:-}" ]; then
  TOKEN=$("$SERVER" token --tenant demo --sub demo | tail -n1 | awk '{print $NF}')
  printf '{"token":"%s"}\n' "$TOKEN" > www/dev-token.json
fi
echo "[start] demo on http://${TIDESYNC_BIND:-127.0.0.1:8080} (Ctrl-C to stop)"
exec "$SERVER" --bind "${TIDESYNC_BIND:-127.0.0.1:8080}" --db "${TIDESYNC_DB:-.tidesync/tidesync.db}" "$@"

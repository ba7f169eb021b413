#!/usr/bin/env bash
# `npm run chaos`: builds pkg/ and the reference server, then runs the
# reliability run of tests/chaos/run.mjs (arguments pass through:
# --quick, --ops N, --seed N, --server-kills, --servers 2 --postgres URL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
. scripts/env.sh
bash scripts/build.sh
cargo build --quiet -p tidesync-server
exec node tests/chaos/run.mjs "$@"

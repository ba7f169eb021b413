#!/usr/bin/env bash
# `npm run chaos`: builds pkg/ and the reference server, then runs the
# reliability run of tests/chaos/run.mjs (arguments pass through:
# --quick, --ops N, --seed N, --server-kills, --servers 2 --postgres URL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
. scripts/env.sh
bash scripts/build.sh
# The same build as npm test's end-to-end layer (the hooks stay off unless
# a server is started with --test-hooks), so the two never rebuild it in turn.
cargo build --quiet -p tidesync-server --features test-hooks
exec node tests/chaos/run.mjs "$@"

#!/usr/bin/env bash
# Builds the SDK to pkg/: cargo (wasm32, release) → wasm-bindgen --target web
# → wasm-opt -Oz (binaryen 132 from npm; Debian's 108 corrupts this output)
# → pkg/package.json and pkg/README.md.
#
# `bash scripts/build.sh --test-panic` instead builds a debug package with
# the `test-panic` feature (it exports `__panicForTest`) into
# target/pkg-test-panic/, for tests/e2e/hostile-input.test.mjs; pkg/ is
# left alone. wasm32 aborts on panic in debug builds too.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if [ "${1:-}" = "--test-panic" ]; then
  wasm_cargo build --quiet --target wasm32-unknown-unknown -p tidesync --features test-panic
  rm -rf target/pkg-test-panic
  wasm-bindgen --target web --out-dir target/pkg-test-panic --out-name tidesync \
    target/wasm32-unknown-unknown/debug/tidesync.wasm
  echo "[build] target/pkg-test-panic/ ready"
  exit 0
fi

wasm_cargo build --quiet --release --target wasm32-unknown-unknown -p tidesync
OUT="pkg.tmp.$$"
trap 'rm -rf "$OUT"' EXIT
rm -rf "$OUT" && mkdir -p "$OUT"
wasm-bindgen --target web --out-dir "$OUT" --out-name tidesync \
  target/wasm32-unknown-unknown/release/tidesync.wasm
node_modules/.bin/wasm-opt -Oz \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$OUT/tidesync_bg.wasm" -o "$OUT/tidesync_bg.wasm"
node scripts/write-pkg-manifest.mjs "$OUT"
# Swap in one step, so a test reading pkg/ never sees half a build.
rm -rf pkg.old && { [ ! -d pkg ] || mv pkg pkg.old; } && mv "$OUT" pkg && rm -rf pkg.old
echo "[build] pkg/ ready: $(du -b pkg/tidesync_bg.wasm | cut -f1) bytes of wasm"

#!/usr/bin/env bash
# Builds the SDK to pkg/: cargo (wasm32, release) → wasm-bindgen --target web
# → wasm-opt -Oz (binaryen 132 from npm; Debian's 108 corrupts this output)
# → pkg/package.json and pkg/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

wasm_cargo build --quiet --release --target wasm32-unknown-unknown -p tidesync
rm -rf pkg.tmp && mkdir -p pkg.tmp
wasm-bindgen --target web --out-dir pkg.tmp --out-name tidesync \
  target/wasm32-unknown-unknown/release/tidesync.wasm
node_modules/.bin/wasm-opt -Oz \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  pkg.tmp/tidesync_bg.wasm -o pkg.tmp/tidesync_bg.wasm
node scripts/write-pkg-manifest.mjs pkg.tmp
rm -rf pkg && mv pkg.tmp pkg
echo "[build] pkg/ ready: $(du -b pkg/tidesync_bg.wasm | cut -f1) bytes of wasm"

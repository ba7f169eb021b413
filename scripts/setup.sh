#!/usr/bin/env bash
# Installs everything Tidesync needs on a fresh Debian machine, idempotently.
# Quiet when everything is already there. Writes target/toolchain.env, which
# says how to build for wasm32 (rustup's target, or Debian's rustc-web with
# std built from source), for scripts/build.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130
say() { echo "[setup] $*"; }

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  say "apt-get install ${missing[*]}"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Browser for tests and e2e (never a downloaded browser), PostgreSQL for the
# server's test suite.
apt_install chromium chromium-driver postgresql ca-certificates

mkdir -p target
TOOLCHAIN_ENV=target/toolchain.env

# --- Rust wasm32 target: rustup first, Debian's rustc-web as the fallback ---
if [ ! -f "$TOOLCHAIN_ENV" ]; then
  if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
    echo "TIDESYNC_WASM_TOOLCHAIN=rustup" > "$TOOLCHAIN_ENV"
  elif command -v rustup >/dev/null && timeout 180 rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
    say "installed rustup target wasm32-unknown-unknown"
    echo "TIDESYNC_WASM_TOOLCHAIN=rustup" > "$TOOLCHAIN_ENV"
  else
    say "rustup cannot provide wasm32; using Debian's rustc-web with std built from source"
    apt_install rustc-web cargo-web rust-web-src lld-19
    echo "TIDESYNC_WASM_TOOLCHAIN=debian" > "$TOOLCHAIN_ENV"
  fi
fi

# --- wasm-bindgen CLI, exactly the version the crate pins ---
export PATH="$HOME/.cargo/bin:$PATH"
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  say "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 4 minutes)"
  cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# --- JavaScript side: playwright-core, binaryen 132 (wasm-opt), typescript ---
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

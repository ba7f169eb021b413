# Sourced by the build and test scripts: how to invoke cargo for wasm32.
# shellcheck shell=bash
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck disable=SC1091
. target/toolchain.env
export CHROMEDRIVER=/usr/bin/chromedriver
if [ "$TIDESYNC_WASM_TOOLCHAIN" = "debian" ]; then
  # Debian's rustc-web has no prebuilt std for wasm32: build it from source.
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-19/bin/wasm-ld
  wasm_cargo() { /usr/bin/cargo "$@" -Zbuild-std=std,panic_abort; }
else
  wasm_cargo() { cargo "$@"; }
fi

#!/usr/bin/env bash
# Builds the browser demo into web/dist: dace's wasm module (web/crate, wasm32, burn's WebGPU
# backend + dace's WGSL shaders, CPU fallback) post-processed by wasm-bindgen, plus the page.
# Needs: rustup target wasm32-unknown-unknown, and wasm-bindgen-cli at the exact version of the
# crate's wasm-bindgen (installed by this script into $CARGO_HOME/bin when missing).
#
#   web/build.sh                 # then: dace web data --package PKG --prior DIR --out web/dist/data
#                                #       dace web serve   (http://127.0.0.1:8000/)
set -euo pipefail
cd "$(dirname "$0")"
version=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' crate/Cargo.toml)
# WEB_TOOLS: where wasm-bindgen-cli is installed (CI keeps it beside its warm target dir).
if [ -n "${WEB_TOOLS:-}" ]; then export PATH="$WEB_TOOLS/bin:$PATH"; fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  cargo install wasm-bindgen-cli --version "$version" ${WEB_TOOLS:+--root "$WEB_TOOLS"}
fi
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
target=${WEB_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/web}
CARGO_TARGET_DIR="$target" cargo build --release --target wasm32-unknown-unknown --manifest-path crate/Cargo.toml
rm -rf dist/pkg
mkdir -p dist
wasm-bindgen --target web --no-typescript --out-dir dist/pkg "$target/wasm32-unknown-unknown/release/dace_web.wasm"
cp index.html app.js style.css dist/
echo "built web/dist ($(du -sh dist/pkg | cut -f1) of wasm + glue)"

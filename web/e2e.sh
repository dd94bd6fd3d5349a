#!/usr/bin/env bash
# The browser demo's end-to-end test, as CI runs it: build the page, make a tiny prior, teacher and
# package on the embedded Fashion-MNIST subset with the native CPU build, stage them with
# `dace web data` (which also regenerates one (patch, seed) natively), then drive Debian's Chromium
# with WebGPU on SwiftShader through playwright-core (web/test/e2e.test.mjs).
#   DACE=target/release/dace web/e2e.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dace=${DACE:-$root/target/release/dace}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$root/web/build.sh"
"$dace" teacher train --data embedded --out "$work/teacher" --epochs 1 --train-per-class 20 --seed 0 > /dev/null
"$dace" prior train --data embedded --out "$work/prior" --vae-channels 8,16 --unet-channels 16,32 \
  --vae-steps 4 --unet-steps 4 --batch 8 --checkpoint-every 4 --train-per-class 20 > /dev/null
"$dace" distill --data embedded --teacher "$work/teacher" --prior "$work/prior" --ipc 1 --factor 2 \
  --seeds 2 --steps 2 --variant sr-aug-mixup --out "$work/pkg" > /dev/null
"$dace" web data --package "$work/pkg" --prior "$work/prior" --out "$root/web/dist/data"

cd "$root/web"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
DACE="$dace" node --test test/

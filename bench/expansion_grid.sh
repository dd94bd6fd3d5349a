#!/usr/bin/env bash
# The paper's experiments on Fashion-MNIST (docs/results/expansion.md), each a resumable
# `dace experiment expansion` into one directory: finished packages and student runs are reused.
#
#   DATA=/tmp/dace-data bench/expansion_grid.sh
set -euo pipefail
DACE=${DACE:-target/release/dace}
DATA=${DATA:-data}
OUT=${OUT:-runs/exp-fmnist-ablation}
COMMON=(--data "$DATA/fashion-mnist" --teacher artifacts/teachers/fashion-mnist-convnet3
        --prior artifacts/priors/fashion-mnist --out "$OUT")

# 1. Ablation (paper Table 4), IPC 1, r = 2, ConvNet-3, 3 student seeds.
"$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 2 --epochs 300 --seeds 3
# 2. Patch-size sweep (paper Fig. 5), IPC 1: plain upsampled patches vs the full method.
"$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 1,2,4,7 --variants rded,sr-aug-mixup --epochs 300 --seeds 3
# 3. Cross-architecture, IPC 1, r = 2: ResNet-18 students of the same packages.
"$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 2 --variants rded,sr-aug-mixup --arch resnet18 --epochs 300 --seeds 2
# 4. Ablation at IPC 10 (2 student seeds on this 2-core machine).
"$DACE" experiment expansion "${COMMON[@]}" --ipc 10 --factor 2 --epochs 300 --seeds 2

#!/usr/bin/env bash
# The paper's experiments (docs/results/expansion.md), each a resumable `dace experiment expansion`
# into one directory: finished packages and student runs are reused, so steps can be run in any
# order, stopped and resumed, and extended (more seeds, more variants) later.
#
#   DATA=/tmp/dace-data experiments/expansion_grid.sh             # every Fashion-MNIST step
#   STEPS="main10" DATA=/tmp/dace-data experiments/expansion_grid.sh
#   DATASET=mnist DATA=/tmp/dace-data experiments/expansion_grid.sh  # MNIST's main table
#
# MNIST's prior is committed (artifacts/priors/mnist); it was made with (about an hour on 2 cores,
# resumes from its checkpoints):
#   dace prior train --data $DATA/mnist --out artifacts/priors/mnist \
#        --vae-steps 1500 --unet-steps 2000 --batch 64 --checkpoint-every 250
set -euo pipefail
DACE=${DACE:-target/release/dace}
DATA=${DATA:-data}
DATASET=${DATASET:-fashion-mnist}
case "$DATASET" in
  fashion-mnist) DEFAULT_OUT=runs/exp-fmnist-ablation ;;
  *) DEFAULT_OUT=runs/exp-$DATASET ;;
esac
OUT=${OUT:-$DEFAULT_OUT}
case "$DATASET" in
  fashion-mnist) DEFAULT_STEPS="ablation1 sweep xarch xarch4 ablation10 main10 main50"; ABLATION1_SEEDS=3 ;;
  *) DEFAULT_STEPS="main1 main10 main50 ablation1"; ABLATION1_SEEDS=2 ;;
esac
STEPS=${STEPS:-$DEFAULT_STEPS}
COMMON=(--data "$DATA/$DATASET" --teacher "artifacts/teachers/$DATASET-convnet3"
        --prior "artifacts/priors/$DATASET" --out "$OUT")

for step in $STEPS; do
  case "$step" in
    # Ablation (paper Table 4), IPC 1, r = 2, ConvNet-3, 3 student seeds (2 on MNIST).
    ablation1) "$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 2 --epochs 300 --seeds "$ABLATION1_SEEDS" ;;
    # Patch-size sweep (paper Fig. 5), IPC 1: plain upsampled patches vs the full method.
    sweep) "$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 1,2,4,7 --variants rded,sr-aug-mixup --epochs 300 --seeds 3 ;;
    # Cross-architecture, IPC 1, r = 2: ResNet-18 students of the same packages.
    xarch) "$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 2 --variants rded,sr-aug-mixup --arch resnet18 --epochs 300 --seeds 2 ;;
    # Main table, IPC 1 (for MNIST; on Fashion-MNIST ablation1 and sweep cover these cells):
    # the full method and upsampled patches at r = 2 and 4.
    main1) "$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 2,4 --variants sr-aug-mixup,rded --epochs 300 --seeds 2 ;;
    # Cross-architecture at r = 4, where diffusion's gain for ConvNet-3 is large (one seed).
    xarch4) "$DACE" experiment expansion "${COMMON[@]}" --ipc 1 --factor 4 --variants rded,sr-aug-mixup --arch resnet18 --epochs 300 --seeds 1 ;;
    # Main table, IPC 10 (300 epochs as RDED's rows): the full method and upsampled patches.
    main10) "$DACE" experiment expansion "${COMMON[@]}" --ipc 10 --factor 2 --variants sr-aug-mixup,rded --epochs 300 --seeds 1 ;;
    # Ablation at IPC 10: the other variants (2 student seeds on this 2-core machine).
    ablation10) "$DACE" experiment expansion "${COMMON[@]}" --ipc 10 --factor 2 --epochs 300 --seeds 2 ;;
    # Main table, IPC 50 (100 epochs, as RDED's IPC 50 rows on this machine).
    main50) "$DACE" experiment expansion "${COMMON[@]}" --ipc 50 --factor 2 --variants sr-aug-mixup,rded --epochs 100 --seeds 1 ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done

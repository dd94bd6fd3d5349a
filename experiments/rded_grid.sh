#!/usr/bin/env bash
# The RDED baseline grid of docs/results/rded.md: Fashion-MNIST and MNIST, ConvNet-3 teacher and
# student, IPC 1/10/50 x r = 1/2/4, random-subset baselines, 3 student seeds per cell.
# Resumable: every finished student run is kept under $RUNS and skipped when this is rerun.
#
#   DATA=/tmp/dace-data experiments/rded_grid.sh  # after `dace data fetch fashion-mnist|mnist --dest $DATA`
set -euo pipefail
DACE=${DACE:-target/release/dace}
DATA=${DATA:-data}
RUNS=${RUNS:-runs}
EPOCHS=${EPOCHS:-300,300,100}   # per IPC 1,10,50 (IPC 50 shortened on the 2-core CPU: see rded.md)
SEEDS=${SEEDS:-3}

"$DACE" experiment rded --data "$DATA/fashion-mnist" --teacher artifacts/teachers/fashion-mnist-convnet3 \
  --ipc 1,10,50 --factor 1,2,4 --epochs "$EPOCHS" --seeds "$SEEDS" --out "$RUNS/rded-fashion-mnist"

# The MNIST teacher (committed; trained here only when absent, resuming if interrupted; flips are
# off for digits). Retraining would change its fingerprint and invalidate the grid's caches.
if [ ! -f artifacts/teachers/mnist-convnet3/report.json ]; then
  "$DACE" teacher train --data "$DATA/mnist" --epochs 6 --out artifacts/teachers/mnist-convnet3 --resume
fi
"$DACE" experiment rded --data "$DATA/mnist" --teacher artifacts/teachers/mnist-convnet3 \
  --ipc 1,10,50 --factor 1,2,4 --epochs "$EPOCHS" --seeds "$SEEDS" --out "$RUNS/rded-mnist"

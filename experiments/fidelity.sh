#!/usr/bin/env bash
# Cross-device fidelity of regeneration (docs/results/fidelity.md): one real package of the
# Fashion-MNIST prior, regenerated twice on the CPU (bit identity) and once on wgpu (lavapipe on a
# machine without a GPU; any Vulkan/Metal device otherwise), compared pixel by pixel and by the
# teacher's argmax against the stored labels.
#
#   DATA=/tmp/dace-data experiments/fidelity.sh  # after `dace data fetch fashion-mnist --dest $DATA`
set -euo pipefail
DACE=${DACE:-target/release/dace}
DATA=${DATA:-data}
OUT=${OUT:-runs/fidelity}
SEEDS=${SEEDS:-4}
PRIOR=artifacts/priors/fashion-mnist
TEACHER=artifacts/teachers/fashion-mnist-convnet3
mkdir -p "$OUT"
"$DACE" distill --data "$DATA/fashion-mnist" --teacher $TEACHER --prior $PRIOR --ipc 1 --factor 2 \
  --variant sr-aug-mixup --seeds "$SEEDS" --out "$OUT/package"
"$DACE" expand --package "$OUT/package" --prior $PRIOR --teacher $TEACHER --device cpu --out "$OUT/cpu-a"
"$DACE" expand --package "$OUT/package" --prior $PRIOR --teacher $TEACHER --device cpu --out "$OUT/cpu-b" --compare "$OUT/cpu-a"
"$DACE" expand --package "$OUT/package" --prior $PRIOR --teacher $TEACHER --device wgpu --out "$OUT/wgpu" --compare "$OUT/cpu-a"
python3 experiments/fidelity_results.py --runs "$OUT" --out docs/results

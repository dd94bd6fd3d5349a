#!/usr/bin/env bash
# One prepared run on a lent GPU machine (issues 5 and 9), sized to fit its 15-minute budget:
#   1. kernel conformance (random shapes) on CUDA and on wgpu (Vulkan on the GPU) vs the CPU reference;
#   2. the fused-kernel microbenchmark on both;
#   3. regeneration fidelity: a Fashion-MNIST package regenerated on CUDA and on wgpu, compared
#      with the same package regenerated on the CPU (PSNR, bit identity, teacher argmax);
#   4. seconds per expansion at 512 px with the SDXL-Turbo (and SD-Turbo) layouts, random weights.
# Usage there: DACE=... FIDELITY=dir-with-package-and-cpu-a OUT=... bench/gpu_session.sh
# Every step has its own time limit, so one slow step cannot starve the others; results land in
# $OUT (at most 8 files come back: log.txt + 7 JSON). bench/gpu_results.py turns them into tables.
set -u
DACE=${DACE:?path of a dace built with --features cuda}
OUT=${OUT:?output folder}
FIDELITY=${FIDELITY:-}
PRIOR=artifacts/priors/fashion-mnist
TEACHER=artifacts/teachers/fashion-mnist-convnet3
exec > >(tee -a "$OUT/log.txt") 2>&1

step() { # step NAME SECONDS CMD...: runs CMD under a limit, logs its wall time and exit status
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s.%N)
  timeout -k 5 "$limit" "$@"
  local rc=$?
  echo "=== $name: rc $rc, $(python3 -c "import time;print(round(time.time()-$t0,1))") s"
}

# The NVIDIA Vulkan driver's manifest, where the image keeps it outside the loader's search path.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f $icd ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$icd __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
# NVRTC (cubecl-cuda compiles kernels at run time) from the CUDA toolkit or PyTorch's wheels.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' :)${LD_LIBRARY_PATH:-}
ldconfig -p | grep -E 'libnvrtc|libcuda\.so' | head -4
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>/dev/null
nproc

step conformance-cuda 40 "$DACE" bench conformance --device cuda --random 60 --json "$OUT/conformance-cuda.json"
step conformance-wgpu 30 "$DACE" bench conformance --device wgpu --random 60 --json "$OUT/conformance-wgpu.json"
step kernels 40 "$DACE" bench kernels --backend cuda,wgpu --seconds 1 --json "$OUT/kernels-gpu.json"
if [ -n "$FIDELITY" ]; then
  for dev in cuda wgpu; do
    step "fidelity-$dev" 40 "$DACE" expand --package "$FIDELITY/package" --prior $PRIOR --teacher $TEACHER \
      --device $dev --out "/tmp/fidelity-$dev" --compare "$FIDELITY/cpu-a" \
      && cp "/tmp/fidelity-$dev/expand.json" "$OUT/expand-$dev.json"
  done
fi
# f16: the UNet's weights and activations in half precision (the VAE stays f32), with its eps
# error against f32 on the same input.
for run in "sdxl-turbo cuda 100" "sdxl-turbo wgpu 130" "sd-turbo cuda 70"; do
  set -- $run
  step "prior-$1-$2" "$3" "$DACE" bench prior --layout "$1" --resolution 512 --batch 1 --steps 5 --seconds 1 \
    --dtype f32,f16 --device "$2" --json "/tmp/prior-$1-$2.json"
done
python3 - "$OUT/prior-gpu.json" /tmp/prior-*.json <<'PY'
import json, sys
rows = []
for path in sys.argv[2:]:
    d = json.load(open(path))
    rows += [dict(r, command=d["command"]) for r in d["rows"]]
json.dump({"rows": rows}, open(sys.argv[1], "w"), indent=1)
print(f"{len(rows)} prior rows")
PY

#!/usr/bin/env bash
# Offline check of the CUDA kernels in kernels/ without a CUDA toolkit:
#
#  1. every kernels/*.cu compiles to PTX with clang's CUDA front end (device side only, no CUDA
#     headers, no libdevice), both ways the Rust side may load it: with `#include "philox.cuh"`
#     resolved from kernels/, and with philox.cuh prepended (concatenated, as for WGSL);
#  2. philox.cuh and the kernels, compiled as plain host C++ with a small shim, reproduce the
#     Random123 known answers and the known normals of docs/FORMAT.md.
#
# Exits 0 when everything passes, 1 on a failure, 2 when no clang++ is installed
# (Debian: `apt-get install -y clang`). Env: CLANGXX (compiler), CUDA_ARCH (default sm_80).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kdir="$root/kernels"
arch="${CUDA_ARCH:-sm_80}"

cxx="${CLANGXX:-}"
if [[ -z "$cxx" ]]; then
    for c in clang++ clang++-19 clang++-16 clang++-15 clang++-14; do
        if command -v "$c" >/dev/null 2>&1; then cxx="$c"; break; fi
    done
fi
if [[ -z "$cxx" ]]; then
    echo "check_cuda: no clang++ found (apt-get install -y clang); CUDA kernels NOT checked" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# What NVRTC predefines and the kernels use, declared for clang without CUDA headers:
# __device__/__global__/__forceinline__, threadIdx & co (clang's own header), and the few
# intrinsics, mapped to NVVM builtins.
cat >"$tmp/prelude.h" <<'EOF'
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __host__ __attribute__((host))
#define __forceinline__ __inline__ __attribute__((always_inline))
#include <__clang_cuda_builtin_vars.h>
static __device__ __forceinline__ unsigned int __umulhi(unsigned int a, unsigned int b) { return __nvvm_mulhi_ui(a, b); }
static __device__ __forceinline__ float __uint_as_float(unsigned int x) { return __nvvm_bitcast_i2f((int)x); }
static __device__ __forceinline__ unsigned int __float_as_uint(float x) { return (unsigned int)__nvvm_bitcast_f2i(x); }
static __device__ __forceinline__ float sqrtf(float x) { return __nvvm_sqrt_rn_f(x); }
static __device__ __forceinline__ float floorf(float x) { return __nvvm_floor_f(x); }
EOF

flags=(-x cuda --cuda-device-only -nocudainc -nocudalib "--cuda-gpu-arch=$arch" -std=c++14 -O3
       -Wall -Wextra -Werror -include "$tmp/prelude.h" -S)
fail=0
shopt -s nullglob
cus=("$kdir"/*.cu)
if [[ ${#cus[@]} -eq 0 ]]; then
    echo "check_cuda: no .cu files in $kdir" >&2
    exit 1
fi
for cu in "${cus[@]}"; do
    name="$(basename "$cu" .cu)"
    if "$cxx" "${flags[@]}" -I "$kdir" -o "$tmp/$name.ptx" "$cu"; then
        entries="$(grep -c '^\.visible \.entry' "$tmp/$name.ptx" || true)"
        echo "ok   $name.cu (include mode, $arch, $entries entry point(s))"
    else
        echo "FAIL $name.cu (include mode)"; fail=1
    fi
    cat "$kdir/philox.cuh" "$cu" >"$tmp/cat_$name.cu"
    if "$cxx" "${flags[@]}" -o /dev/null "$tmp/cat_$name.cu"; then
        echo "ok   $name.cu (philox.cuh prepended)"
    else
        echo "FAIL $name.cu (philox.cuh prepended)"; fail=1
    fi
done

# Host run: the same sources as plain C++ (no FMA contraction), checked against known answers.
cat >"$tmp/host.cpp" <<'EOF'
#include <cmath>
#include <cstdio>
#include <cstring>
#define __device__
#define __global__
#define __forceinline__ inline
struct dace_dim3 { unsigned int x, y, z; };
static dace_dim3 threadIdx, blockIdx, blockDim, gridDim;
static inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned int)(((unsigned long long)a * b) >> 32); }
static inline float __uint_as_float(unsigned int x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int x; std::memcpy(&x, &f, 4); return x; }
#include "philox.cuh"
#include "add_noise.cu"

int main() {
    int bad = 0;
    // Random123 examples/kat_vectors, philox4x32 10 (docs/FORMAT.md).
    const unsigned int kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {~0u, ~0u, ~0u, ~0u, ~0u, ~0u, 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}};
    for (const auto& k : kat) {
        dace_u32x4 c = {k[0], k[1], k[2], k[3]};
        dace_u32x4 w = dace_philox4x32_10(c, k[4], k[5]);
        if (w.x != k[6] || w.y != k[7] || w.z != k[8] || w.w != k[9]) { std::printf("philox KAT mismatch\n"); ++bad; }
    }
    // Known normals of docs/FORMAT.md (to ~1e-6), through the add_noise kernel (a = 0, b = 1).
    struct { unsigned int quad[4]; float n[4]; } known[2] = {
        {{0x25b2ce3b, 0x9356c045, 1, 0}, {0.19114503f, 0.8796685f, 1.3761499f, 1.0304781f}},
        {{0x2f7c7ab8, 0x897c9951, 3, 7}, {0.4776975f, 0.5945772f, -0.19818182f, 0.17035033f}}};
    for (const auto& kn : known) {
        float z0[4] = {0, 0, 0, 0}, dst[4] = {NAN, NAN, NAN, NAN};
        DaceNoiseParams p = {0.0f, 1.0f, 4, 1};
        blockDim = {256, 1, 1}; gridDim = {1, 1, 1}; blockIdx = {0, 0, 0};
        for (unsigned int t = 0; t < 256; ++t) { threadIdx = {t, 0, 0}; dace_add_noise(z0, kn.quad, dst, &p); }
        for (int i = 0; i < 4; ++i) {
            if (!(std::fabs(dst[i] - kn.n[i]) < 1e-6f)) { std::printf("normal %d: %.9g vs %.9g\n", i, dst[i], kn.n[i]); ++bad; }
            if (std::fabs(dace_philox_normal_at(kn.quad, i) - kn.n[i]) >= 1e-6f) ++bad;
        }
    }
    std::printf("%s host check (philox KAT, FORMAT.md normals)\n", bad ? "FAIL" : "ok  ");
    return bad != 0;
}
EOF
if "$cxx" -x c++ -std=c++14 -O2 -ffp-contract=off -Wno-unknown-pragmas -I "$kdir" -o "$tmp/host" "$tmp/host.cpp" \
    && "$tmp/host"; then
    :
else
    echo "FAIL host check"; fail=1
fi

if [[ $fail -ne 0 ]]; then
    echo "check_cuda: FAILED" >&2
    exit 1
fi
echo "check_cuda: all kernels compile ($("$cxx" --version | head -1))"

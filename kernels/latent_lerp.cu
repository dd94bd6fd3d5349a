// latent_lerp.cu: latent mixup fused with forward noising; the CUDA twin of
// shaders/latent_lerp.wgsl (docs/FORMAT.md, "Kernels"). CPU reference:
// src/kernels/diffusion_ref.rs, latent_lerp.
//
//   dst[p*L + j] = (gamma[p] * z1[p*L + j] + (1 - gamma[p]) * z2[p*L + j]) * a
//                  + b * normal(keys[4p .. 4p+4], j)
//
// for pair p in 0..pairs, element j in 0..L. No Philox is run when b == 0.
//
// Arguments (device pointers, in the order of the WGSL bindings 0..5):
//   z1      const float*          pairs * L
//   z2      const float*          pairs * L
//   gamma   const float*          pairs
//   keys    const unsigned int*   4 * pairs
//   dst     float*                pairs * L   (must not alias the inputs)
//   params  const DaceLerpParams* 16 bytes, same layout as the WGSL LerpParams
//
// Launch: T = pairs * ceil(L / 4) threads, blockDim (256, 1, 1), gridDim (ceil(T / 256), 1, 1).

#ifndef DACE_PHILOX_CUH
#include "philox.cuh"
#endif

struct DaceLerpParams {
    float a;
    float b;
    unsigned int latent_len;
    unsigned int pairs;
};

extern "C" __global__ void dace_latent_lerp(const float* __restrict__ z1, const float* __restrict__ z2,
                                            const float* __restrict__ gamma, const unsigned int* __restrict__ keys,
                                            float* __restrict__ dst, const DaceLerpParams* __restrict__ params) {
    const unsigned long long t = dace_thread_index();
    const unsigned long long len = params->latent_len;
    const unsigned long long groups = (len + 3ull) / 4ull;
    if (t >= groups * params->pairs) {
        return;
    }
    const unsigned long long p = t / groups;
    const unsigned long long q = t - p * groups;
    const unsigned long long base = p * len + 4ull * q;
    const unsigned long long left = len - 4ull * q;
    const int count = left < 4ull ? (int)left : 4;
    const float a = params->a;
    const float b = params->b;
    const float g = gamma[p];
    const float h = 1.0f - g;
    dace_f32x4 n = {{0.0f, 0.0f, 0.0f, 0.0f}};
    if (b != 0.0f) {
        n = dace_philox_normal4(keys + 4ull * p, q);
    }
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
        if (lane < count) {
            const unsigned long long i = base + lane;
            dst[i] = (g * z1[i] + h * z2[i]) * a + b * n.v[lane];
        }
    }
}

// add_noise.cu: forward noising (img2img start); the CUDA twin of shaders/add_noise.wgsl
// (docs/FORMAT.md, "Kernels"). CPU reference: src/kernels/diffusion_ref.rs, add_noise_batched.
//
//   dst[p*L + j] = a * z0[p*L + j] + b * normal(keys[4p .. 4p+4], j)
//
// for latent p in 0..batch, element j in 0..L. No Philox is run when b == 0.
// Euler ancestral: a = 1, b = sigma_t; DDIM: a = sqrt(abar_t), b = sqrt(1 - abar_t).
//
// Arguments (device pointers, in the order of the WGSL bindings 0..3):
//   z0      const float*           batch * L
//   keys    const unsigned int*    4 * batch
//   dst     float*                 batch * L   (must not alias z0)
//   params  const DaceNoiseParams* 16 bytes, same layout as the WGSL NoiseParams
//
// Launch: T = batch * ceil(L / 4) threads, blockDim (256, 1, 1), gridDim (ceil(T / 256), 1, 1).

#ifndef DACE_PHILOX_CUH
#include "philox.cuh"
#endif

struct DaceNoiseParams {
    float a;
    float b;
    unsigned int latent_len;
    unsigned int batch;
};

extern "C" __global__ void dace_add_noise(const float* __restrict__ z0, const unsigned int* __restrict__ keys,
                                          float* __restrict__ dst, const DaceNoiseParams* __restrict__ params) {
    const unsigned long long t = dace_thread_index();
    const unsigned long long len = params->latent_len;
    const unsigned long long groups = (len + 3ull) / 4ull;
    if (t >= groups * params->batch) {
        return;
    }
    const unsigned long long p = t / groups;
    const unsigned long long q = t - p * groups;
    const unsigned long long base = p * len + 4ull * q;
    const unsigned long long left = len - 4ull * q;
    const int count = left < 4ull ? (int)left : 4;
    const float a = params->a;
    const float b = params->b;
    dace_f32x4 n = {{0.0f, 0.0f, 0.0f, 0.0f}};
    if (b != 0.0f) {
        n = dace_philox_normal4(keys + 4ull * p, q);
    }
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
        if (lane < count) {
            const unsigned long long i = base + lane;
            dst[i] = a * z0[i] + b * n.v[lane];
        }
    }
}

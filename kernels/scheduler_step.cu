// scheduler_step.cu: one denoising step of Euler ancestral or DDIM, fused; the CUDA twin of
// shaders/scheduler_step.wgsl (docs/FORMAT.md, "Kernels"). CPU reference:
// src/kernels/diffusion_ref.rs, scheduler_step_batched.
//
//   dst[p*L + j] = (ca * x[p*L + j] + ce * eps[p*L + j]) + cz * normal(keys[4p .. 4p+4], j)
//
// for latent p in 0..batch, element j in 0..L. No Philox is run when cz == 0.
//
// Arguments (all device pointers, in the order of the WGSL bindings 0..4):
//   x       const float*          batch * L
//   eps     const float*          batch * L
//   keys    const unsigned int*   4 * batch   ([key0, key1, stream id, sub] per latent)
//   dst     float*                batch * L   (must not alias x or eps)
//   params  const DaceStepParams* 32 bytes, same layout as the WGSL StepParams
//
// Launch: one thread per group of 4 elements of a latent, T = batch * ceil(L / 4) threads,
// blockDim (256, 1, 1), gridDim (ceil(T / 256), 1, 1) (or spread over y; see dace_thread_index).

#ifndef DACE_PHILOX_CUH
#include "philox.cuh"
#endif

struct DaceStepParams {
    float ca;
    float ce;
    float cz;
    unsigned int latent_len;
    unsigned int batch;
    unsigned int pad0;
    unsigned int pad1;
    unsigned int pad2;
};

extern "C" __global__ void dace_scheduler_step(const float* __restrict__ x, const float* __restrict__ eps,
                                               const unsigned int* __restrict__ keys, float* __restrict__ dst,
                                               const DaceStepParams* __restrict__ params) {
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
    const float ca = params->ca;
    const float ce = params->ce;
    const float cz = params->cz;
    dace_f32x4 z = {{0.0f, 0.0f, 0.0f, 0.0f}};
    if (cz != 0.0f) {
        z = dace_philox_normal4(keys + 4ull * p, q);
    }
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
        if (lane < count) {
            const unsigned long long i = base + lane;
            dst[i] = ca * x[i] + ce * eps[i] + cz * z.v[lane];
        }
    }
}

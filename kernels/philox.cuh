// philox.cuh: dace's portable RNG (docs/FORMAT.md, "Random numbers", scheme version 1) for CUDA.
// The twin of shaders/philox.wgsl: same functions, same formulas, so CUDA, WGSL and the CPU
// (src/rng/) agree: the u32 words and uniforms bit for bit, the normals to ~1e-6.
//
// Self-contained on purpose (no #include, no CUDA headers, no <stdint.h>): it compiles under
// NVRTC as is. The kernel files include it with a guard, so the Rust side may either give NVRTC
// this header or simply prepend it to the kernel source, as it does for WGSL.
//
// ln, sin and cos are computed from + and * only (see philox.wgsl for why): the results then do
// not depend on --use_fast_math or on the math library. Only sqrtf (IEEE-rounded unless
// -prec-sqrt=false) and floorf (exact) come from CUDA.

#ifndef DACE_PHILOX_CUH
#define DACE_PHILOX_CUH

#define DACE_PHILOX_M0 0xD2511F53u
#define DACE_PHILOX_M1 0xCD9E8D57u
#define DACE_PHILOX_W0 0x9E3779B9u
#define DACE_PHILOX_W1 0xBB67AE85u

struct dace_u32x4 {
    unsigned int x, y, z, w;
};

struct dace_f32x4 {
    float v[4];
};

// Philox4x32-10 (Random123): round with the user key, then 9 times { bump key; round }.
// One round: c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0], (hi0, lo0) = M0 * c0, (hi1, lo1) = M1 * c2.
__device__ __forceinline__ dace_u32x4 dace_philox4x32_10(dace_u32x4 c, unsigned int k0,
                                                                unsigned int k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += DACE_PHILOX_W0;
            k1 += DACE_PHILOX_W1;
        }
        const unsigned int hi0 = __umulhi(DACE_PHILOX_M0, c.x);
        const unsigned int lo0 = DACE_PHILOX_M0 * c.x;
        const unsigned int hi1 = __umulhi(DACE_PHILOX_M1, c.z);
        const unsigned int lo1 = DACE_PHILOX_M1 * c.z;
        dace_u32x4 n;
        n.x = hi1 ^ c.y ^ k0;
        n.y = lo1;
        n.z = hi0 ^ c.w ^ k1;
        n.w = lo0;
        c = n;
    }
    return c;
}

// Uniform in (0, 1): (f32(x >> 9) + 0.5) * 2^-23, exact.
__device__ __forceinline__ float dace_philox_uniform(unsigned int x) {
    return ((float)(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// ln(u), u a normal positive float: u = m * 2^e, m in (sqrt(2)/2, sqrt(2)], ln m = 2 atanh(s),
// s = (m - 1) / (m + 1), series to s^9; ln 2 split so that e * LN2_HI is exact.
__device__ __forceinline__ float dace_philox_ln(float u) {
    const float LN2_HI = 0.693145751953125f;       // 0x3f317200
    const float LN2_LO = 1.428606765330187e-06f;   // 0x35bfbe8e
    const float SQRT2 = 1.4142135381698608f;       // 0x3fb504f3
    const unsigned int bits = __float_as_uint(u);
    int e = (int)((bits >> 23) & 0xFFu) - 127;
    float m = __uint_as_float((bits & 0x007FFFFFu) | 0x3F800000u);
    if (m > SQRT2) {
        m = m * 0.5f;
        e = e + 1;
    }
    const float f = m - 1.0f;
    const float s = f / (2.0f + f);
    const float s2 = s * s;
    const float p = 1.0f + s2 * ((1.0f / 3.0f) + s2 * ((1.0f / 5.0f) + s2 * ((1.0f / 7.0f) + s2 * (1.0f / 9.0f))));
    const float ef = (float)e;
    return ef * LN2_HI + (2.0f * s * p + ef * LN2_LO);
}

// cos and sin of theta in [0, 2pi]: k = round(theta * 2/pi), y = theta - k * pi/2 (three-part
// pi/2, Cody-Waite), Taylor polynomials on |y| <= pi/4, quadrant k mod 4.
__device__ __forceinline__ void dace_philox_sincos(float theta, float* c_out, float* s_out) {
    const float PIO2_1 = 1.5707950592041016f;      // 0x3fc90fd0
    const float PIO2_2 = 1.2675900507019833e-06f;  // 0x35aa2210
    const float PIO2_3 = 7.442935157087049e-13f;   // 0x2b518000
    const float TWO_OVER_PI = 0.6366197466850281f; // 0x3f22f983
    const float k = floorf(theta * TWO_OVER_PI + 0.5f);
    const float y = ((theta - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
    const float y2 = y * y;
    const float s = y + y * y2 * ((-1.0f / 6.0f) + y2 * ((1.0f / 120.0f) + y2 * ((-1.0f / 5040.0f) + y2 * (1.0f / 362880.0f))));
    const float c = 1.0f + y2 * (-0.5f + y2 * ((1.0f / 24.0f) + y2 * ((-1.0f / 720.0f)
                        + y2 * ((1.0f / 40320.0f) + y2 * (-1.0f / 3628800.0f)))));
    const unsigned int q = ((unsigned int)k) & 3u;
    if (q == 0u) {
        *c_out = c;  *s_out = s;
    } else if (q == 1u) {
        *c_out = -s; *s_out = c;
    } else if (q == 2u) {
        *c_out = -c; *s_out = -s;
    } else {
        *c_out = s;  *s_out = -c;
    }
}

// Box-Muller: r = sqrt(-2 ln u0), theta = 2pi * u1 (2pi as the float 0x40C90FDB).
__device__ __forceinline__ void dace_philox_box_muller(unsigned int x0, unsigned int x1, float* n0,
                                                              float* n1) {
    const float TWO_PI = 6.2831854820251465f;      // 0x40c90fdb
    const float r = sqrtf(-2.0f * dace_philox_ln(dace_philox_uniform(x0)));
    const float theta = TWO_PI * dace_philox_uniform(x1);
    float c, s;
    dace_philox_sincos(theta, &c, &s);
    *n0 = r * c;
    *n1 = r * s;
}

// The four normals of block b (elements 4b .. 4b+4) of the stream `quad` = [key0, key1,
// stream id, sub] (SeedRng::shader_params()), counter [b_lo, b_hi, stream id, sub].
__device__ __forceinline__ dace_f32x4 dace_philox_normal4(const unsigned int* quad,
                                                                 unsigned long long b) {
    dace_u32x4 ctr;
    ctr.x = (unsigned int)b;
    ctr.y = (unsigned int)(b >> 32);
    ctr.z = quad[2];
    ctr.w = quad[3];
    const dace_u32x4 w = dace_philox4x32_10(ctr, quad[0], quad[1]);
    dace_f32x4 n;
    dace_philox_box_muller(w.x, w.y, &n.v[0], &n.v[1]);
    dace_philox_box_muller(w.z, w.w, &n.v[2], &n.v[3]);
    return n;
}

// Element i of the normal stream `quad` (SeedRng::normal_at(i) to ~1e-6).
__device__ __forceinline__ float dace_philox_normal_at(const unsigned int* quad, unsigned long long i) {
    const dace_f32x4 n = dace_philox_normal4(quad, i >> 2);
    return n.v[i & 3];
}

// Flat thread index of a 1-D block grid that may spill into y: gid = x + y * (gridDim.x * blockDim.x).
__device__ __forceinline__ unsigned long long dace_thread_index() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x +
           (unsigned long long)blockIdx.y * gridDim.x * blockDim.x;
}

#endif  // DACE_PHILOX_CUH

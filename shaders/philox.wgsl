// philox.wgsl: dace's portable RNG (docs/FORMAT.md, "Random numbers", scheme version 1) for WGSL.
//
// Not a kernel: the Rust side prepends this file to scheduler_step.wgsl, add_noise.wgsl and
// latent_lerp.wgsl (WGSL has no #include), so those files use these functions without defining
// them. Every name here starts with `philox_` / `PHILOX_` to stay out of the kernels' way.
//
// Contract (same as src/rng/): the u32 words and the uniforms are bit-exact with the CPU; the
// normals agree with `SeedRng::normal_at` to ~1e-6 (measured on the CPU transcription over every
// possible input: ln 2.1e-7 relative, sin/cos 8.6e-8 absolute, normals 4.8e-7 absolute).
//
// Why ln, sin and cos are computed here from + and * only: WGSL promises `sin`/`cos` only to an
// absolute 2^-11 and only inside [-pi, pi] (theta lies in (0, 2pi)), and `log` only to an
// absolute 2^-21 near 1, which for u near 1 wrecks r = sqrt(-2 ln u). The versions below have a
// full-range reduction and do not depend on the driver's built-ins (only `sqrt` and `floor` are
// used). CUDA's kernels/philox.cuh uses the same formulas.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// Full 32x32 -> 64 bit product as (hi, lo), from 16-bit limbs (WGSL has no 64-bit integers).
// Every partial product and sum below fits in 32 bits (see src/rng/philox.rs, mulhilo32_emulated).
fn philox_mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    let lo = (mid << 16u) | (p00 & 0xFFFFu);
    return vec2<u32>(hi, lo);
}

// One Philox round: c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0].
fn philox_round(c: vec4<u32>, k: vec2<u32>) -> vec4<u32> {
    let r0 = philox_mulhilo(PHILOX_M0, c.x);
    let r1 = philox_mulhilo(PHILOX_M1, c.z);
    return vec4<u32>(r1.x ^ c.y ^ k.x, r1.y, r0.x ^ c.w ^ k.y, r0.y);
}

// Philox4x32-10: round with the user key, then 9 times { bump key; round }.
fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = philox_round(counter, key);
    var k = key;
    for (var i = 1u; i < 10u; i = i + 1u) {
        k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        c = philox_round(c, k);
    }
    return c;
}

// Uniform in (0, 1): (f32(x >> 9) + 0.5) * 2^-23. Exact, so bit-exact with the CPU.
fn philox_uniform(x: u32) -> f32 {
    return (f32(x >> 9u) + 0.5) * (1.0 / 8388608.0);
}

// ln(u) for a normal positive f32 (here u in [2^-24, 1)). u = m * 2^e with m in (sqrt(2)/2,
// sqrt(2)]; ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, by its series to s^9;
// ln 2 is split so that e * PHILOX_LN2_HI is exact. m - 1 is exact, so ln stays accurate
// relative to its value near u = 1.
const PHILOX_LN2_HI: f32 = 0.693145751953125;        // 0x3f317200
const PHILOX_LN2_LO: f32 = 1.428606765330187e-06;    // 0x35bfbe8e
const PHILOX_SQRT2: f32 = 1.4142135381698608;        // 0x3fb504f3

fn philox_ln(u: f32) -> f32 {
    let bits = bitcast<u32>(u);
    var e = i32((bits >> 23u) & 0xFFu) - 127;
    var m = bitcast<f32>((bits & 0x007FFFFFu) | 0x3F800000u);
    if (m > PHILOX_SQRT2) {
        m = m * 0.5;
        e = e + 1;
    }
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let s2 = s * s;
    let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    let ef = f32(e);
    return ef * PHILOX_LN2_HI + (2.0 * s * p + ef * PHILOX_LN2_LO);
}

// (cos theta, sin theta) for theta in [0, 2pi]. Reduction: k = round(theta * 2/pi) in 0..=4,
// y = theta - k * pi/2 with pi/2 split in three (Cody-Waite; k * PIO2_1 and k * PIO2_2 are exact,
// and theta - k * PIO2_1 is exact), |y| <= pi/4; Taylor polynomials to y^9 / y^10; the quadrant
// k mod 4 picks and negates. Does not rely on the built-in sin/cos at all.
const PHILOX_PIO2_1: f32 = 1.5707950592041016;       // 0x3fc90fd0
const PHILOX_PIO2_2: f32 = 1.2675900507019833e-06;   // 0x35aa2210
const PHILOX_PIO2_3: f32 = 7.442935157087049e-13;    // 0x2b518000
const PHILOX_TWO_OVER_PI: f32 = 0.6366197466850281;  // 0x3f22f983

fn philox_sincos(theta: f32) -> vec2<f32> {
    let k = floor(theta * PHILOX_TWO_OVER_PI + 0.5);
    let y = ((theta - k * PHILOX_PIO2_1) - k * PHILOX_PIO2_2) - k * PHILOX_PIO2_3;
    let y2 = y * y;
    let s = y + y * y2 * (-1.0 / 6.0 + y2 * (1.0 / 120.0 + y2 * (-1.0 / 5040.0 + y2 * (1.0 / 362880.0))));
    let c = 1.0 + y2 * (-0.5 + y2 * (1.0 / 24.0 + y2 * (-1.0 / 720.0
        + y2 * (1.0 / 40320.0 + y2 * (-1.0 / 3628800.0)))));
    let q = u32(k) & 3u;
    if (q == 0u) {
        return vec2<f32>(c, s);
    } else if (q == 1u) {
        return vec2<f32>(-s, c);
    } else if (q == 2u) {
        return vec2<f32>(-c, -s);
    }
    return vec2<f32>(s, -c);
}

// Box-Muller: r = sqrt(-2 ln u0), theta = 2pi * u1 (2pi as the f32 0x40C90FDB); (r cos, r sin).
const PHILOX_TWO_PI: f32 = 6.2831854820251465;       // 0x40c90fdb

fn philox_box_muller(x0: u32, x1: u32) -> vec2<f32> {
    let r = sqrt(-2.0 * philox_ln(philox_uniform(x0)));
    let theta = PHILOX_TWO_PI * philox_uniform(x1);
    return r * philox_sincos(theta);
}

// The four normals of block `b` (elements 4b .. 4b+4) of the stream `quad` =
// [key0, key1, stream id, sub] (SeedRng::shader_params()). Blocks >= 2^32 are not reachable
// from a kernel (the high counter word is 0).
fn philox_normal4(quad: vec4<u32>, b: u32) -> vec4<f32> {
    let w = philox4x32_10(vec4<u32>(b, 0u, quad.z, quad.w), quad.xy);
    let n01 = philox_box_muller(w.x, w.y);
    let n23 = philox_box_muller(w.z, w.w);
    return vec4<f32>(n01, n23);
}

// Element i of the normal stream `quad` (SeedRng::normal_at(i) to ~1e-6).
fn philox_normal_at(quad: vec4<u32>, i: u32) -> f32 {
    let n = philox_normal4(quad, i / 4u);
    return n[i % 4u];
}

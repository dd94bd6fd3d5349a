//! Elementwise activations on plain f32 slices, written so the compiler vectorises them.
//!
//! libm's `expf` and `erff` are scalar calls; in the expansion's UNet and VAE every SiLU and GELU
//! went through them one value at a time (about a fifth of the CPU profile, docs/results/prior.md).
//! Here `exp` is range reduction to `2^n * e^r`, |r| <= ln2 / 2, and a degree-6 polynomial for
//! `e^r` (the Cephes coefficients), with `2^n` built in the exponent bits: no calls, so chunks of
//! 16 values compile to SIMD. Relative error <= 3e-7 (a couple of ulps), checked against the
//! standard library in the tests.
//!
//! The loops are compiled for the baseline x86-64 and, chosen at run time, for AVX2 + FMA and
//! AVX-512 (`super::simd`). `f32::mul_add` rounds once on every path (an FMA instruction, or
//! libm's exact `fmaf`), so the results are the same bits on every x86-64 CPU.

use super::simd::with_simd;

/// Values per unrolled chunk: 16 f32 lanes fill one AVX-512 register or two AVX2 ones.
const LANES: usize = 16;

/// `e^x` for finite or infinite `x` (NaN stays NaN): a few ulps of relative error; 0 below
/// -87.3 (no subnormal results) and infinity above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and a remainder (Cody-Waite), so `x - n ln2` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits:
    // no float-to-int conversion or `round` call, so the loop vectorises.
    const ROUNDER: f32 = 12_582_912.0;
    let xc = x.clamp(-87.336_55, 88.722_83);
    let t = xc.mul_add(LOG2E, ROUNDER);
    let n = t - ROUNDER;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    // e^r on [-ln2/2, ln2/2]: Cephes expf polynomial.
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let er = (p * r).mul_add(r, r) + 1.0;
    // 2^n for n in [-126, 128]: n = 128 (x near the top) is split as 2^(n/2) * 2^(n - n/2).
    let n = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let half = n >> 1;
    let two_half = f32::from_bits(((half + 127) as u32) << 23);
    let two_rest = f32::from_bits(((n - half + 127) as u32) << 23);
    let y = er * two_half * two_rest;
    // Selects, not branches: NaN stays NaN, beyond the range infinity or (no subnormals) zero.
    let y = if x > 88.722_83 { f32::INFINITY } else { y };
    let y = if x < -87.336_55 { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// `silu` over a slice in chunks of [`LANES`] (inlined into each vector build that uses it).
#[inline(always)]
pub(crate) fn silu_slice(values: &mut [f32]) {
    let mut chunks = values.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for v in chunk.iter_mut() {
            *v = silu(*v);
        }
    }
    for v in chunks.into_remainder() {
        *v = silu(*v);
    }
}

with_simd!(
    pub fn silu_inplace(values: &mut [f32]) {
        silu_slice(values)
    }
);

with_simd!(
    pub fn geglu_rows(out: &mut [f32], x: &[f32], width: usize) {
        for (o, row) in out.chunks_exact_mut(width).zip(x.chunks_exact(2 * width)) {
            let (h, gate) = row.split_at(width);
            for ((o, &h), &g) in o.iter_mut().zip(h).zip(gate) {
                *o = h * gelu(g);
            }
        }
    }
);

with_simd!(
    /// `row[i] = exp(row[i] - shift)`; returns the sum of the results (added up in [`LANES`]
    /// lanes, then across them, in a fixed order).
    pub fn exp_shifted(row: &mut [f32], shift: f32) -> f32 {
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (v, s) in chunk.iter_mut().zip(lanes.iter_mut()) {
                *v = exp(*v - shift);
                *s += *v;
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp(*v - shift);
            sum += *v;
        }
        sum
    }
);

with_simd!(
    /// The largest value of `row`, or NaN if it holds one (-inf when empty): [`LANES`] running
    /// maxima, so it vectorises (a max is exact, so the order does not matter).
    pub fn max_or_nan(row: &[f32]) -> f32 {
        #[inline(always)]
        fn max(m: f32, x: f32) -> f32 {
            if x.is_nan() || x > m {
                x
            } else {
                m
            }
        }
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (m, &x) in lanes.iter_mut().zip(chunk) {
                *m = max(*m, x);
            }
        }
        lanes.iter().chain(rest).copied().fold(f32::NEG_INFINITY, max)
    }
);

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The error function: Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), odd-extended.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = A[4].mul_add(t, A[3]).mul_add(t, A[2]).mul_add(t, A[1]).mul_add(t, A[0]) * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// GELU with the exact (erf) form, as diffusers' GEGLU uses: `x/2 * (1 + erf(x / sqrt 2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GEGLU: `out[r, j] = h[r, j] * gelu(gate[r, j])` where each row of `x` (length `2 * width`) is
/// `[h | gate]`. Returns the `[rows, width]` result.
pub fn geglu(x: &[f32], width: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let rows = x.len() / (2 * width).max(1);
    let mut out = vec![0f32; rows * width];
    // Rows in parallel batches big enough to amortise the scheduling.
    let per_task = (1 << 14) / width.max(1) + 1;
    out.par_chunks_mut(per_task * width).zip(x.par_chunks(per_task * 2 * width)).for_each(|(out, x)| geglu_rows(out, x, width));
    out
}

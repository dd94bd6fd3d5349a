//! Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
//! SC'11; the Random123 library), plus the integer -> float conversions dace uses.
//!
//! Why a counter-based generator: element `i` of any stream is a pure function of
//! (key, counter), so the CPU and a GPU shader can produce the same numbers in any order, in
//! parallel, without carrying state. The contract is:
//!
//! * the `u32` stream is **bit-exact** on every platform (only wrapping 32-bit integer ops;
//!   [`philox4x32_10_emulated`] shows it needs no 64-bit integers, as WGSL lacks them);
//! * [`u32_to_unit_open`] and [`below`] are also bit-exact (every f32 step is exact);
//! * [`box_muller`] uses `ln`, `sqrt`, `cos`, `sin`, whose last bits differ between libm
//!   implementations and GPUs, so normals agree only to about 1e-6, not bit for bit.
//!
//! Only `std` is used, so this file can be tested on its own with `rustc --test`.

/// Round multipliers (Random123 `PHILOX_M4x32_0`, `PHILOX_M4x32_1`).
pub const PHILOX_M0: u32 = 0xD251_1F53;
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl key increments (Random123 `PHILOX_W32_0` = golden ratio, `PHILOX_W32_1` = sqrt(3)-1).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
pub const PHILOX_W1: u32 = 0xBB67_AE85;
pub const PHILOX_ROUNDS: usize = 10;

/// Full 32x32 -> 64 bit product as `(hi, lo)`, using a 64-bit multiply.
#[inline(always)]
pub fn mulhilo32(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Same result as [`mulhilo32`] using only 32-bit operations, the way the WGSL shader must do
/// it: split each operand into 16-bit limbs so that every partial product fits in a u32.
#[inline(always)]
pub fn mulhilo32_emulated(a: u32, b: u32) -> (u32, u32) {
    let (a0, a1) = (a & 0xFFFF, a >> 16);
    let (b0, b1) = (b & 0xFFFF, b >> 16);
    let p00 = a0 * b0; // each product <= (2^16-1)^2 < 2^32: no overflow
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Bits 16..47 of the product, before carrying into the high word; <= 3*(2^16-1), no overflow.
    let mid = (p00 >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF);
    // The true high word fits in 32 bits and every term is non-negative, so this sum is exact.
    let hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16);
    let lo = (mid << 16) | (p00 & 0xFFFF);
    (hi, lo)
}

/// One Philox round, exactly as Random123's `_philox4x32round`.
#[inline(always)]
fn round(c: [u32; 4], k: [u32; 2], mul: impl Fn(u32, u32) -> (u32, u32)) -> [u32; 4] {
    let (hi0, lo0) = mul(PHILOX_M0, c[0]);
    let (hi1, lo1) = mul(PHILOX_M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

#[inline(always)]
fn philox_with(
    counter: [u32; 4],
    key: [u32; 2],
    mul: impl Fn(u32, u32) -> (u32, u32) + Copy,
) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    // Random123 order: round with the user key first, then bump the key before each later round.
    c = round(c, k, mul);
    for _ in 1..PHILOX_ROUNDS {
        k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        c = round(c, k, mul);
    }
    c
}

/// Philox4x32-10: maps a 128-bit counter and a 64-bit key to 128 random bits.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox_with(counter, key, mulhilo32)
}

/// [`philox4x32_10`] computed with [`mulhilo32_emulated`]; always returns the same words. Kept
/// so the tests prove the 32-bit-only formulation (the shader's) is the same function.
pub fn philox4x32_10_emulated(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox_with(counter, key, mulhilo32_emulated)
}

/// Uniform f32 in the open interval (0, 1): `((x >> 9) as f32 + 0.5) * 2^-23`, i.e. the
/// odd multiples of 2^-24, from 2^-24 to 1 - 2^-24, with mean exactly 0.5.
///
/// Every step is exact in f32 (integer < 2^23, +0.5 still representable, scaling by a power of
/// two), so the result is bit-exact on any IEEE device. Why 23 bits and not 24: with 24 bits,
/// `k + 0.5` for k >= 2^23 is not representable in f32 and rounds, and `x = u32::MAX` would give
/// exactly 1.0. Equivalent form: `((x >> 8) | 1) as f32 * 2^-24`.
#[inline]
pub fn u32_to_unit_open(x: u32) -> f32 {
    ((x >> 9) as f32 + 0.5) * (1.0 / 8_388_608.0)
}

/// Box-Muller: two uniform words -> two independent standard normals.
/// `r = sqrt(-2 ln u0)`, `theta = 2*pi*u1` (2*pi as the f32 `0x40C90FDB`), all in f32;
/// returns `(r cos theta, r sin theta)`. Since `u0 >= 2^-24`, `|normal| <= sqrt(48 ln 2) ~ 5.77`.
///
/// Not bit-exact across devices: `ln`, `sqrt`, `cos`, `sin` are not correctly rounded
/// everywhere, so expect agreement to ~1e-6 (relative to `r`), not to the bit.
#[inline]
pub fn box_muller(u0: u32, u1: u32) -> (f32, f32) {
    let r = (-2.0 * u32_to_unit_open(u0).ln()).sqrt();
    let theta = std::f32::consts::TAU * u32_to_unit_open(u1);
    (r * theta.cos(), r * theta.sin())
}

/// Integer in `0..n` from a random word: `floor(x * n / 2^32)` (Lemire's multiply-shift,
/// without the rejection step). Why no rejection: the result stays a pure function of one word,
/// so it is deterministic and portable (it is the high word of [`mulhilo32`], and so of
/// [`mulhilo32_emulated`] on a GPU). The price is a bias: some outcomes get one more of the
/// 2^32 inputs than others, a relative bias of at most n / 2^32 (< 2.4e-7 for n <= 1000).
/// Returns 0 when `n == 0`.
#[inline]
pub fn below(x: u32, n: u32) -> u32 {
    ((x as u64 * n as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64, only to generate test inputs.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Random123 `examples/kat_vectors`, lines "philox4x32 10 ...": (counter, key, expected).
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn known_answers() {
        for (ctr, key, want) in KAT {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "ctr {ctr:08x?} key {key:08x?}"
            );
            assert_eq!(
                philox4x32_10_emulated(ctr, key),
                want,
                "emulated, ctr {ctr:08x?}"
            );
        }
    }

    #[test]
    fn emulated_multiply_matches() {
        let edges = [
            0,
            1,
            2,
            0xFFFF,
            0x1_0000,
            0x1_0001,
            0x7FFF_FFFF,
            0x8000_0000,
            0xFFFF_FFFE,
            0xFFFF_FFFF,
            PHILOX_M0,
            PHILOX_M1,
        ];
        for &a in &edges {
            for &b in &edges {
                assert_eq!(mulhilo32_emulated(a, b), mulhilo32(a, b), "{a:#x} * {b:#x}");
            }
        }
        let mut s = 1;
        for _ in 0..1_000_000 {
            let v = splitmix(&mut s);
            let (a, b) = (v as u32, (v >> 32) as u32);
            assert_eq!(mulhilo32_emulated(a, b), mulhilo32(a, b), "{a:#x} * {b:#x}");
            // below() is the high word, so a shader can compute it with the emulated multiply.
            assert_eq!(below(a, b), mulhilo32_emulated(a, b).0);
        }
    }

    #[test]
    fn emulated_philox_matches() {
        let mut s = 2;
        for _ in 0..100_000 {
            let (v, w, k) = (splitmix(&mut s), splitmix(&mut s), splitmix(&mut s));
            let ctr = [v as u32, (v >> 32) as u32, w as u32, (w >> 32) as u32];
            let key = [k as u32, (k >> 32) as u32];
            assert_eq!(philox4x32_10_emulated(ctr, key), philox4x32_10(ctr, key));
        }
    }

    #[test]
    fn unit_open_interval_edges() {
        assert_eq!(u32_to_unit_open(0), 2f32.powi(-24));
        assert_eq!(u32_to_unit_open(u32::MAX), 1.0 - 2f32.powi(-24));
        assert!(u32_to_unit_open(u32::MAX) < 1.0);
        // The two documented formulas are the same function.
        let mut s = 3;
        for _ in 0..100_000 {
            let x = splitmix(&mut s) as u32;
            assert_eq!(u32_to_unit_open(x), ((x >> 8) | 1) as f32 * 2f32.powi(-24));
        }
    }

    #[test]
    fn box_muller_is_finite_and_bounded() {
        for (u0, u1) in [
            (0, 0),
            (0, u32::MAX),
            (u32::MAX, 0),
            (u32::MAX, u32::MAX),
            (0x8000_0000, 0x4000_0000),
        ] {
            let (a, b) = box_muller(u0, u1);
            assert!(a.is_finite() && b.is_finite());
            assert!(a.abs() <= 5.8 && b.abs() <= 5.8);
        }
    }

    #[test]
    fn below_edges() {
        assert_eq!(below(0, 10), 0);
        assert_eq!(below(u32::MAX, 10), 9);
        assert_eq!(below(u32::MAX, u32::MAX), u32::MAX - 1);
        assert_eq!(below(12345, 0), 0);
        assert_eq!(below(u32::MAX, 1), 0);
    }
}

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
fn philox_with(counter: [u32; 4], key: [u32; 2], mul: impl Fn(u32, u32) -> (u32, u32) + Copy) -> [u32; 4] {
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

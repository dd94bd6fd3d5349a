//! CPU reference (and CPU device path) of the three element-wise diffusion kernels: the fused
//! scheduler step, forward noising, and fused latent mixup + noising. Their GPU twins are
//! `shaders/{scheduler_step,add_noise,latent_lerp}.wgsl` and `kernels/*.cu`; the contract (buffer
//! layouts, parameters, noise streams) is in `docs/FORMAT.md`, "Kernels".
//!
//! Noise. Every kernel takes, per latent, a [`NoiseKey`]: the `[key0, key1, stream id, sub]`
//! quad of [`SeedRng::shader_params`]. Element `j` of a latent gets `normal_at(key, j)`, which is
//! exactly `SeedRng::normal_at(j)` of the stream the key came from, so the numbers depend only on
//! (seed, item, stream, j), never on batching or device. Latents are processed in groups of four
//! elements, one Philox block per group, as the GPU threads do.
//!
//! Arithmetic is f32 in a fixed order (`(ca*x + ce*eps) + cz*z` and so on); GPU compilers may fuse
//! multiply-adds, so device results agree with these to a few ulp, and the normals to ~1e-6.

use crate::prior::scheduler::{NoiseCoeffs, StepCoeffs};
use crate::rng::philox::{box_muller, philox4x32_10};
use crate::rng::SeedRng;

/// `[key0, key1, stream id, sub]`, as returned by [`SeedRng::shader_params`].
pub type NoiseKey = [u32; 4];

/// The key of one (seed, item, stream).
pub fn noise_key(rng: &SeedRng) -> NoiseKey {
    rng.shader_params()
}

/// The four normals of block `b` of the stream `key` (elements `4b .. 4b+4`).
#[inline]
pub fn normals_block(key: NoiseKey, b: u64) -> [f32; 4] {
    let w = philox4x32_10(
        [b as u32, (b >> 32) as u32, key[2], key[3]],
        [key[0], key[1]],
    );
    let (c0, s0) = box_muller(w[0], w[1]);
    let (c1, s1) = box_muller(w[2], w[3]);
    [c0, s0, c1, s1]
}

/// Element `i` of the normal stream `key`; equals `SeedRng::normal_at(i)` of that stream.
#[inline]
pub fn normal_at(key: NoiseKey, i: u64) -> f32 {
    normals_block(key, i / 4)[(i % 4) as usize]
}

/// Applies `f(j, noise_j)` to the elements of one latent, group by group; `noise_j` is 0 (and
/// no Philox is run) when `with_noise` is false.
#[inline]
fn for_each_group(len: usize, key: NoiseKey, with_noise: bool, mut f: impl FnMut(usize, f32)) {
    let mut j = 0;
    let mut b = 0u64;
    while j < len {
        let n = if with_noise {
            normals_block(key, b)
        } else {
            [0.0; 4]
        };
        for (lane, &z) in n.iter().enumerate().take(len - j) {
            f(j + lane, z);
        }
        j += 4;
        b += 1;
    }
}

/// Length of each of the `batch` latents packed in a buffer of `total` elements.
fn latent_len(total: usize, batch: usize) -> usize {
    assert!(batch > 0, "no noise keys");
    assert_eq!(
        total % batch,
        0,
        "buffer of {total} elements is not {batch} latents"
    );
    total / batch
}

/// One denoising step of one latent: `out_i = (ca*x_i + ce*eps_i) + cz*z_i`, `z_i =
/// normal_at(noise, i)`. No noise is drawn when `cz == 0` (deterministic DDIM, last Euler-a step).
pub fn scheduler_step(
    x: &[f32],
    eps: &[f32],
    coeffs: StepCoeffs,
    noise: NoiseKey,
    out: &mut [f32],
) {
    scheduler_step_batched(x, eps, coeffs, &[noise], out)
}

/// [`scheduler_step`] over a batch of `keys.len()` latents stored back to back (latent `p` is
/// `x[p*L .. (p+1)*L]`, `L = x.len() / keys.len()`), latent `p` drawing its noise from `keys[p]`.
pub fn scheduler_step_batched(
    x: &[f32],
    eps: &[f32],
    c: StepCoeffs,
    keys: &[NoiseKey],
    out: &mut [f32],
) {
    assert!(
        x.len() == eps.len() && x.len() == out.len(),
        "length mismatch"
    );
    let len = latent_len(x.len(), keys.len());
    for (p, &key) in keys.iter().enumerate() {
        let base = p * len;
        let (x, eps, out) = (
            &x[base..base + len],
            &eps[base..base + len],
            &mut out[base..base + len],
        );
        if c.cz == 0.0 {
            for j in 0..len {
                out[j] = c.ca * x[j] + c.ce * eps[j];
            }
        } else {
            for_each_group(len, key, true, |j, z| {
                out[j] = c.ca * x[j] + c.ce * eps[j] + c.cz * z
            });
        }
    }
}

/// Forward noising of one latent: `out_i = a*z0_i + b*n_i`, `n_i = normal_at(noise, i)` (no noise
/// drawn when `b == 0`).
pub fn add_noise(z0: &[f32], a: f32, b: f32, noise: NoiseKey, out: &mut [f32]) {
    add_noise_batched(z0, NoiseCoeffs { a, b }, &[noise], out)
}

/// [`add_noise`] over a batch of `keys.len()` latents stored back to back.
pub fn add_noise_batched(z0: &[f32], c: NoiseCoeffs, keys: &[NoiseKey], out: &mut [f32]) {
    assert_eq!(z0.len(), out.len(), "length mismatch");
    let len = latent_len(z0.len(), keys.len());
    for (p, &key) in keys.iter().enumerate() {
        let base = p * len;
        let (z0, out) = (&z0[base..base + len], &mut out[base..base + len]);
        for_each_group(len, key, c.b != 0.0, |j, n| out[j] = c.a * z0[j] + c.b * n);
    }
}

/// Latent mixup fused with forward noising, over `P = gamma.len()` pairs of latents stored back
/// to back (`L = z1.len() / P` elements each):
/// `out_p = (gamma_p * z1_p + (1 - gamma_p) * z2_p) * a + b * n_p`, `n_p` from `keys[p]`
/// (no noise drawn when `b == 0`).
pub fn latent_lerp(
    z1: &[f32],
    z2: &[f32],
    gamma: &[f32],
    a: f32,
    b: f32,
    keys: &[NoiseKey],
    out: &mut [f32],
) {
    assert!(
        z1.len() == z2.len() && z1.len() == out.len(),
        "length mismatch"
    );
    assert_eq!(gamma.len(), keys.len(), "one gamma and one key per pair");
    let len = latent_len(z1.len(), keys.len());
    for (p, &key) in keys.iter().enumerate() {
        let base = p * len;
        let (z1, z2, out) = (
            &z1[base..base + len],
            &z2[base..base + len],
            &mut out[base..base + len],
        );
        let (g, h) = (gamma[p], 1.0 - gamma[p]);
        for_each_group(len, key, b != 0.0, |j, n| {
            out[j] = (g * z1[j] + h * z2[j]) * a + b * n
        });
    }
}

/// Threads the GPU kernels launch: one per group of four elements of each latent.
pub fn kernel_threads(latent_len: usize, batch: usize) -> usize {
    batch * latent_len.div_ceil(4)
}

/// Workgroup size of every kernel (`@workgroup_size(256)`, CUDA `blockDim.x = 256`).
pub const WORKGROUP_SIZE: usize = 256;

/// Workgroup grid `(x, y)` for `threads` threads: at most 65535 groups along x (WebGPU's limit),
/// the rest along y. The kernels compute `gid = x_id + y_id * (groups_x * 256)`.
pub fn workgroups(threads: usize) -> (u32, u32) {
    let groups = threads.div_ceil(WORKGROUP_SIZE).max(1);
    let x = groups.min(65_535);
    (x as u32, groups.div_ceil(x) as u32)
}

/// The 32-byte parameter block of `scheduler_step` (WGSL uniform / CUDA struct), as words:
/// `[ca, ce, cz (f32 bits), latent_len, batch, 0, 0, 0]`.
pub fn step_params(c: StepCoeffs, latent_len: u32, batch: u32) -> [u32; 8] {
    [
        c.ca.to_bits(),
        c.ce.to_bits(),
        c.cz.to_bits(),
        latent_len,
        batch,
        0,
        0,
        0,
    ]
}

/// The 16-byte parameter block of `add_noise`: `[a, b (f32 bits), latent_len, batch]`.
pub fn add_noise_params(c: NoiseCoeffs, latent_len: u32, batch: u32) -> [u32; 4] {
    [c.a.to_bits(), c.b.to_bits(), latent_len, batch]
}

/// The 16-byte parameter block of `latent_lerp`: `[a, b (f32 bits), latent_len, pairs]`.
pub fn lerp_params(a: f32, b: f32, latent_len: u32, pairs: u32) -> [u32; 4] {
    [a.to_bits(), b.to_bits(), latent_len, pairs]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::philox::u32_to_unit_open;
    use crate::rng::Stream;

    fn keys() -> Vec<(SeedRng, NoiseKey)> {
        [
            (0u64, 0u64, Stream::AddNoise),
            (0x0123_4567_89AB_CDEF, 42, Stream::Ancestral(7)),
            (7, 3, Stream::Ancestral(0)),
            (u64::MAX, u64::MAX, Stream::VaeSample),
        ]
        .iter()
        .map(|&(s, i, st)| {
            let r = SeedRng::new(s, i, st);
            (r, noise_key(&r))
        })
        .collect()
    }

    /// Deterministic test data in [-2, 2).
    fn data(n: usize, salt: u32) -> Vec<f32> {
        let r = SeedRng::new(salt as u64, 99, Stream::Shuffle);
        (0..n).map(|i| 4.0 * r.uniform_at(i as u64) - 2.0).collect()
    }

    #[test]
    fn noise_equals_seed_rng() {
        for (rng, key) in keys() {
            for i in (0..103u64).chain([1 << 20, (1 << 32) + 5, u64::MAX - 2]) {
                assert_eq!(
                    normal_at(key, i).to_bits(),
                    rng.normal_at(i).to_bits(),
                    "i = {i}"
                );
            }
        }
        // FORMAT.md known answers, through the key quad.
        let key = noise_key(&SeedRng::new(
            0x0123_4567_89AB_CDEF,
            42,
            Stream::Ancestral(7),
        ));
        assert_eq!(key, [0x2f7c7ab8, 0x897c9951, 3, 7]);
        let want = [0.4776975, 0.5945772, -0.19818182, 0.17035033];
        for (i, w) in want.iter().enumerate() {
            assert!((normal_at(key, i as u64) - w).abs() < 1e-6);
        }
    }

    #[test]
    fn scheduler_step_matches_naive() {
        let ks = keys();
        for len in [1usize, 3, 4, 5, 64, 67] {
            let batch = ks.len();
            let (x, eps) = (data(len * batch, 1), data(len * batch, 2));
            for c in [
                StepCoeffs {
                    ca: 1.0,
                    ce: -12.84345,
                    cz: 4.769509,
                },
                StepCoeffs {
                    ca: 2.825171,
                    ce: -2.4769883,
                    cz: 0.0,
                },
            ] {
                let keyv: Vec<NoiseKey> = ks.iter().map(|k| k.1).collect();
                let mut out = vec![f32::NAN; len * batch];
                scheduler_step_batched(&x, &eps, c, &keyv, &mut out);
                for (p, (rng, key)) in ks.iter().enumerate() {
                    let mut single = vec![f32::NAN; len];
                    let r = p * len..(p + 1) * len;
                    scheduler_step(&x[r.clone()], &eps[r.clone()], c, *key, &mut single);
                    for (j, s) in single.iter().enumerate() {
                        let i = p * len + j;
                        let z = if c.cz == 0.0 {
                            0.0
                        } else {
                            rng.normal_at(j as u64)
                        };
                        let want = c.ca * x[i] + c.ce * eps[i] + c.cz * z;
                        assert_eq!(out[i].to_bits(), want.to_bits(), "len {len} p {p} j {j}");
                        assert_eq!(s.to_bits(), want.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn add_noise_matches_naive() {
        let ks = keys();
        for len in [1usize, 6, 16, 33] {
            let z0 = data(len * ks.len(), 3);
            let keyv: Vec<NoiseKey> = ks.iter().map(|k| k.1).collect();
            for (a, b) in [(1.0f32, 2.276464f32), (0.3, 0.95), (0.7, 0.0)] {
                let mut out = vec![f32::NAN; z0.len()];
                add_noise_batched(&z0, NoiseCoeffs { a, b }, &keyv, &mut out);
                for (p, (rng, key)) in ks.iter().enumerate() {
                    let r = p * len..(p + 1) * len;
                    let mut single = vec![f32::NAN; len];
                    add_noise(&z0[r.clone()], a, b, *key, &mut single);
                    for j in 0..len {
                        let n = if b == 0.0 {
                            0.0
                        } else {
                            rng.normal_at(j as u64)
                        };
                        let want = a * z0[p * len + j] + b * n;
                        assert_eq!(out[p * len + j].to_bits(), want.to_bits());
                        assert_eq!(single[j].to_bits(), want.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn latent_lerp_matches_naive() {
        let ks = keys();
        let keyv: Vec<NoiseKey> = ks.iter().map(|k| k.1).collect();
        let gamma = [0.0f32, 0.25, 0.8, 1.0];
        for len in [2usize, 5, 40] {
            let (z1, z2) = (data(len * 4, 4), data(len * 4, 5));
            for (a, b) in [(1.0f32, 1.1605788f32), (0.6, 0.8), (1.0, 0.0)] {
                let mut out = vec![f32::NAN; z1.len()];
                latent_lerp(&z1, &z2, &gamma, a, b, &keyv, &mut out);
                for (p, (rng, _)) in ks.iter().enumerate() {
                    for j in 0..len {
                        let i = p * len + j;
                        let n = if b == 0.0 {
                            0.0
                        } else {
                            rng.normal_at(j as u64)
                        };
                        let want = (gamma[p] * z1[i] + (1.0 - gamma[p]) * z2[i]) * a + b * n;
                        assert_eq!(out[i].to_bits(), want.to_bits(), "p {p} j {j}");
                    }
                }
                // gamma 1 and 0 select z1 and z2 exactly (before noise).
                if b == 0.0 && a == 1.0 {
                    assert_eq!(&out[..len], &z2[..len]);
                    assert_eq!(&out[3 * len..], &z1[3 * len..]);
                }
            }
        }
    }

    #[test]
    fn launch_geometry_and_params() {
        assert_eq!(kernel_threads(16384, 3), 3 * 4096);
        assert_eq!(kernel_threads(5, 2), 4);
        assert_eq!(workgroups(1), (1, 1));
        assert_eq!(workgroups(256 * 65_535), (65_535, 1));
        assert_eq!(workgroups(256 * 65_535 + 1), (65_535, 2));
        let w = step_params(
            StepCoeffs {
                ca: 1.0,
                ce: -0.5,
                cz: 0.25,
            },
            16384,
            2,
        );
        assert_eq!(
            w,
            [0x3f80_0000, 0xbf00_0000, 0x3e80_0000, 16384, 2, 0, 0, 0]
        );
        assert_eq!(
            add_noise_params(NoiseCoeffs { a: 1.0, b: 2.0 }, 8, 1),
            [0x3f80_0000, 0x4000_0000, 8, 1]
        );
        assert_eq!(lerp_params(1.0, 0.0, 8, 3), [0x3f80_0000, 0, 8, 3]);
    }

    /// Rust transcription of the shader's Box-Muller (`shaders/philox.wgsl`, `kernels/philox.cuh`):
    /// software `ln` and `sin`/`cos` built from f32 adds and multiplies only, because WGSL's
    /// built-ins are only specified to 2^-11 (sin, cos, inside [-pi, pi]) and 2^-21 absolute (log
    /// near 1). Kept here to prove the algorithm agrees with the libm-based CPU normals.
    mod shader_math {
        // The bits are authoritative; `shader_constants_match` checks that the decimal literals
        // in shaders/philox.wgsl and kernels/philox.cuh round to exactly these.
        pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 16 significant bits
        pub const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
        pub const PIO2_1: f32 = f32::from_bits(0x3fc9_0fd0); // 20 significant bits
        pub const PIO2_2: f32 = f32::from_bits(0x35aa_2210); // 20 significant bits
        pub const PIO2_3: f32 = f32::from_bits(0x2b51_8000);
        pub const TWO_OVER_PI: f32 = f32::from_bits(0x3f22_f983);
        pub const SQRT2: f32 = f32::from_bits(0x3fb5_04f3);

        /// ln(u) for a normal positive f32 u.
        pub fn ln(u: f32) -> f32 {
            let bits = u.to_bits();
            let mut e = ((bits >> 23) & 0xff) as i32 - 127;
            let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
            if m > SQRT2 {
                m *= 0.5;
                e += 1;
            }
            let f = m - 1.0; // exact
            let s = f / (2.0 + f);
            let s2 = s * s;
            // 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), |s| <= 0.1716
            let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
            let ef = e as f32;
            ef * LN2_HI + (2.0 * s * p + ef * LN2_LO)
        }

        /// (cos, sin) of theta in [0, 2pi + small].
        pub fn sincos(theta: f32) -> (f32, f32) {
            let k = (theta * TWO_OVER_PI + 0.5).floor();
            let y = ((theta - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
            let y2 = y * y;
            let s = y + y
                * y2
                * (-1.0 / 6.0 + y2 * (1.0 / 120.0 + y2 * (-1.0 / 5040.0 + y2 * (1.0 / 362880.0))));
            let c = 1.0
                + y2 * (-0.5
                    + y2 * (1.0 / 24.0
                        + y2 * (-1.0 / 720.0 + y2 * (1.0 / 40320.0 + y2 * (-1.0 / 3628800.0)))));
            match (k as i32) & 3 {
                0 => (c, s),
                1 => (-s, c),
                2 => (-c, -s),
                _ => (s, -c),
            }
        }

        pub fn box_muller(x0: u32, x1: u32) -> (f32, f32) {
            let r = (-2.0 * ln(super::u32_to_unit_open(x0))).sqrt();
            let theta = std::f32::consts::TAU * super::u32_to_unit_open(x1);
            let (c, s) = sincos(theta);
            (r * c, r * s)
        }
    }

    /// Every `NAME: f32 = <decimal>; // 0x<bits>` (WGSL) and `float NAME = <decimal>f; // 0x<bits>`
    /// (CUDA) constant of the shader sources parses to the bits in its comment, and those are the
    /// bits of the transcription above.
    #[test]
    fn shader_constants_match() {
        use shader_math::*;
        let want: [(&str, f32); 8] = [
            ("LN2_HI", LN2_HI),
            ("LN2_LO", LN2_LO),
            ("PIO2_1", PIO2_1),
            ("PIO2_2", PIO2_2),
            ("PIO2_3", PIO2_3),
            ("TWO_OVER_PI", TWO_OVER_PI),
            ("SQRT2", SQRT2),
            ("TWO_PI", std::f32::consts::TAU),
        ];
        for (file, src) in [
            ("philox.wgsl", include_str!("../../shaders/philox.wgsl")),
            ("philox.cuh", include_str!("../../kernels/philox.cuh")),
        ] {
            let mut seen = 0;
            for line in src.lines() {
                let Some((code, comment)) = line.split_once("//") else {
                    continue;
                };
                let Some((lhs, rhs)) = code.split_once('=') else {
                    continue;
                };
                let Some(hex) = comment.trim().strip_prefix("0x") else {
                    continue;
                };
                let name = lhs
                    .trim()
                    .trim_end_matches(": f32")
                    .split_whitespace()
                    .last()
                    .unwrap();
                let name = name.trim_start_matches("PHILOX_");
                let lit = rhs.trim().trim_end_matches(';').trim_end_matches('f');
                let bits = u32::from_str_radix(hex.split_whitespace().next().unwrap(), 16).unwrap();
                assert_eq!(
                    lit.parse::<f32>().unwrap().to_bits(),
                    bits,
                    "{file}: {name}"
                );
                let (_, v) = want
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("{file}: {name}?"));
                assert_eq!(v.to_bits(), bits, "{file}: {name}");
                seen += 1;
            }
            assert_eq!(seen, want.len(), "{file}: constants found");
        }
    }

    #[test]
    fn shader_ln_is_accurate_on_every_uniform() {
        // Every possible uniform value: (k + 0.5) * 2^-23, k in 0..2^23.
        let mut worst_rel = 0f64;
        let mut worst_r = 0f64;
        for k in 0..(1u32 << 23) {
            let u = u32_to_unit_open(k << 9);
            let got = shader_math::ln(u) as f64;
            let want = (u as f64).ln();
            worst_rel = worst_rel.max(((got - want) / want).abs());
            // What matters downstream: r = sqrt(-2 ln u).
            let r = (-2.0 * shader_math::ln(u)).sqrt() as f64;
            worst_r = worst_r.max((r - (-2.0 * want).sqrt()).abs());
        }
        eprintln!("shader ln: worst relative error {worst_rel:e}, worst r error {worst_r:e}");
        assert!(worst_rel < 4e-7, "ln relative error {worst_rel:e}");
        assert!(worst_r < 1e-6, "r absolute error {worst_r:e}");
    }

    #[test]
    fn shader_sincos_is_accurate_on_every_angle() {
        let mut worst = 0f64;
        for k in 0..(1u32 << 23) {
            let theta = std::f32::consts::TAU * u32_to_unit_open(k << 9);
            let (c, s) = shader_math::sincos(theta);
            let t = theta as f64;
            worst = worst
                .max((c as f64 - t.cos()).abs())
                .max((s as f64 - t.sin()).abs());
        }
        eprintln!("shader sincos: worst absolute error {worst:e}");
        assert!(worst < 2e-7, "sin/cos absolute error {worst:e}");
    }

    #[test]
    fn shader_normals_match_cpu_normals() {
        let mut worst = 0f32;
        for (rng, _) in keys() {
            for b in 0..20_000u64 {
                let w = [
                    rng.u32_at(4 * b),
                    rng.u32_at(4 * b + 1),
                    rng.u32_at(4 * b + 2),
                    rng.u32_at(4 * b + 3),
                ];
                let (c0, s0) = shader_math::box_muller(w[0], w[1]);
                let (c1, s1) = shader_math::box_muller(w[2], w[3]);
                for (lane, v) in [c0, s0, c1, s1].iter().enumerate() {
                    worst = worst.max((v - rng.normal_at(4 * b + lane as u64)).abs());
                }
            }
        }
        eprintln!("shader normals vs CPU: worst absolute difference {worst:e}");
        assert!(worst < 1e-6, "shader normal vs CPU: {worst:e}");
    }
}

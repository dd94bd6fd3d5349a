//! Conformance of the fused diffusion kernels on one device against the plain-Rust reference:
//! fixed edge cases plus random shapes and coefficients, every kernel in every case.
//!
//! The reference side is the CPU backend (which runs `diffusion_ref`), and the pure-noise case is
//! also compared with `SeedRng::normal_at` element by element, so a device that reproduces it
//! reproduces the Philox stream itself: one differing 32-bit word moves a normal by far more than
//! the 1e-6 the kernels agree to. Used by `tests/diffusion_kernels.rs` (wgpu on lavapipe in CI)
//! and by `dace bench conformance --device wgpu|cuda` on real GPUs.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::diffusion::{self, DiffusionKernels};
use super::diffusion_ref::NoiseKey;
use crate::device::CpuBackend;
use crate::kernels::coeffs::{NoiseCoeffs, StepCoeffs};
use crate::rng::{SeedRng, Stream};

/// The bound of issue 5: max abs error per element against the CPU reference.
pub const TOLERANCE: f32 = 1e-5;

/// One conformance case: `batch` latents of `len` elements, inputs and coefficients from `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub batch: usize,
    pub len: usize,
    pub seed: u64,
}

/// Max abs difference between a device and the reference, for one kernel in one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConformanceRow {
    pub kernel: String,
    pub batch: usize,
    pub len: usize,
    pub seed: u64,
    pub max_abs_err: f32,
}

/// Edge cases (one element, a ragged tail of a four-element Philox block, one workgroup,
/// several latents), the two latent shapes of the microbenchmark, then `random` cases of random
/// batch (1..=24) and length (1..=6000), drawn from `seed`.
pub fn cases(random: usize, seed: u64) -> Vec<Case> {
    let fixed = [(1, 1), (3, 23), (2, 64), (16, 256), (256, 4 * 8 * 8), (16, 4 * 64 * 64)];
    let mut out: Vec<Case> = fixed.iter().enumerate().map(|(i, &(batch, len))| Case { batch, len, seed: i as u64 }).collect();
    let rng = SeedRng::new(seed, 0, Stream::Shuffle);
    for i in 0..random as u64 {
        let batch = 1 + rng.below_at(3 * i, 24) as usize;
        let len = 1 + rng.below_at(3 * i + 1, 6000) as usize;
        out.push(Case { batch, len, seed: 1000 + u64::from(rng.u32_at(3 * i + 2)) });
    }
    out
}

/// Inputs in about [-3, 3], from the portable RNG so that every device gets the same.
fn values(n: usize, seed: u64, salt: u64) -> Vec<f32> {
    let rng = SeedRng::new(seed, salt, Stream::Shuffle);
    (0..n as u64).map(|i| 6.0 * rng.uniform_at(i) - 3.0).collect()
}

fn keys(batch: usize, seed: u64, stream: Stream) -> Vec<NoiseKey> {
    (0..batch as u64).map(|item| SeedRng::new(seed, item, stream).shader_params()).collect()
}

/// Every kernel of one case on backend `B`, as host vectors, in the order of [`KERNELS`].
fn run_case<B: DiffusionKernels>(case: Case, device: &B::Device) -> Vec<Vec<f32>> {
    let Case { batch, len, seed } = case;
    let n = batch * len;
    let (x, eps) = (values(n, seed, 1), values(n, seed, 2));
    let coef = values(8, seed, 3);
    let to = |v: &[f32]| Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [batch, len]), device);
    let host = |t: Tensor<B, 2>| -> Vec<f32> { t.into_data().to_vec().expect("f32 tensor") };
    let euler = StepCoeffs { ca: 1.0, ce: coef[0] / 3.0, cz: coef[1].abs() / 3.0 };
    let ddim = StepCoeffs { ca: 0.5 + coef[2].abs() / 6.0, ce: coef[3] / 3.0, cz: 0.0 };
    let noise = NoiseCoeffs { a: coef[4].abs() / 3.0, b: coef[5].abs() / 3.0 };
    let gamma: Vec<f32> = values(batch, seed, 4).iter().map(|g| (g + 3.0) / 6.0).collect();
    let pure_noise = StepCoeffs { ca: 0.0, ce: 0.0, cz: 1.0 };
    let step_keys = keys(batch, seed, Stream::Ancestral(seed as u32 % 50));
    vec![
        host(diffusion::scheduler_step(to(&x), to(&eps), euler, &step_keys)),
        host(diffusion::scheduler_step(to(&x), to(&eps), ddim, &step_keys)),
        host(diffusion::scheduler_step(to(&x), to(&eps), pure_noise, &step_keys)),
        host(diffusion::add_noise(to(&x), noise, &keys(batch, seed, Stream::AddNoise))),
        host(diffusion::latent_lerp(to(&x), to(&eps), &gamma, noise, &keys(batch, seed, Stream::MixupGamma))),
    ]
}

/// Names of the outputs of [`run_case`].
pub const KERNELS: [&str; 5] =
    ["scheduler_step (euler-a)", "scheduler_step (ddim, eta 0)", "scheduler_step (noise only)", "add_noise", "latent_lerp"];

/// Max abs difference of two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // NaN-aware: a NaN on either side counts as an infinite error.
    a.iter().zip(b).map(|(a, b)| if a.is_nan() || b.is_nan() { f32::INFINITY } else { (a - b).abs() }).fold(0.0, f32::max)
}

/// Runs every case on `B` and on the CPU reference; one row per (case, kernel), plus a row
/// "philox normals" comparing the noise-only step with `SeedRng::normal_at` directly.
pub fn check<B: DiffusionKernels>(cases: &[Case], device: &B::Device) -> Vec<ConformanceRow> {
    let cpu = Default::default();
    let mut rows = Vec::new();
    for &case in cases {
        let ours = run_case::<B>(case, device);
        let reference = run_case::<CpuBackend>(case, &cpu);
        let row = |kernel: &str, max_abs_err| ConformanceRow {
            kernel: kernel.into(),
            batch: case.batch,
            len: case.len,
            seed: case.seed,
            max_abs_err,
        };
        for (k, (a, b)) in ours.iter().zip(&reference).enumerate() {
            rows.push(row(KERNELS[k], max_abs_diff(a, b)));
        }
        let step_keys = Stream::Ancestral(case.seed as u32 % 50);
        let direct: Vec<f32> = (0..case.batch as u64)
            .flat_map(|item| {
                let rng = SeedRng::new(case.seed, item, step_keys);
                (0..case.len as u64).map(move |i| rng.normal_at(i))
            })
            .collect();
        rows.push(row("philox normals", max_abs_diff(&ours[2], &direct)));
    }
    rows
}

/// The worst error per kernel over all cases, in the order kernels first appear.
pub fn worst_per_kernel(rows: &[ConformanceRow]) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(k, _)| *k == r.kernel) {
            Some((_, e)) => *e = e.max(r.max_abs_err),
            None => out.push((r.kernel.clone(), r.max_abs_err)),
        }
    }
    out
}

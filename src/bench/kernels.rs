//! `dace bench kernels`: the fused diffusion kernels against the same math written as separate
//! burn tensor ops, and against an elementwise op that moves the same bytes (`x + eps`: two reads
//! and one write per element, what the fused step moves without its arithmetic and noise).

use std::time::{Duration, Instant};

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::kernels::coeffs::StepCoeffs;
use crate::kernels::diffusion::{self, DiffusionKernels};
use crate::rng::{SeedRng, Stream};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelBenchRow {
    pub backend: String,
    pub kernel: String,
    /// `[batch, channels, height, width]` of the latents.
    pub shape: [usize; 4],
    pub fused_ms: f64,
    pub unfused_ms: f64,
    pub copy_ms: f64,
    /// Bytes the fused step must move (x, eps read; out written) per millisecond, in GB/s.
    pub fused_gb_s: f64,
    pub copy_gb_s: f64,
    /// unfused / fused time (target >= 2).
    pub speedup_vs_unfused: f64,
    /// fused / copy time (target <= 1.5).
    pub fused_over_copy: f64,
}

/// Mean milliseconds per call of `f` over at least `budget` (after two warm-up calls), with the
/// device drained before the clock stops.
pub fn time<B: Backend, T>(device: &B::Device, budget: Duration, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..2 {
        drop(f());
    }
    B::sync(device).expect("device sync");
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget || n < 3 {
        drop(f());
        n += 1;
        if n.is_multiple_of(8) {
            B::sync(device).expect("device sync");
        }
    }
    B::sync(device).expect("device sync");
    start.elapsed().as_secs_f64() * 1e3 / n as f64
}

/// Euler-ancestral step on `[batch, c, h, w]` latents: fused kernel vs separate ops vs copy.
pub fn bench_scheduler_step<B: DiffusionKernels>(backend: &str, shape: [usize; 4], budget: Duration, device: &B::Device) -> KernelBenchRow {
    let [batch, ..] = shape;
    let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let eps = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let keys: Vec<_> = (0..batch as u64).map(|i| SeedRng::new(1, i, Stream::Ancestral(0)).shader_params()).collect();
    let c = StepCoeffs { ca: 1.0, ce: -0.35, cz: 0.52 };
    let fused_ms = time::<B, _>(device, budget, || diffusion::scheduler_step(x.clone(), eps.clone(), c, &keys));
    let unfused_ms = time::<B, _>(device, budget, || {
        let z = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
        x.clone().mul_scalar(c.ca) + eps.clone().mul_scalar(c.ce) + z.mul_scalar(c.cz)
    });
    let copy_ms = time::<B, _>(device, budget, || x.clone() + eps.clone());
    let bytes = 3.0 * shape.iter().product::<usize>() as f64 * 4.0;
    KernelBenchRow {
        backend: backend.into(),
        kernel: "scheduler_step (euler-a)".into(),
        shape,
        fused_ms,
        unfused_ms,
        copy_ms,
        fused_gb_s: bytes / fused_ms / 1e6,
        copy_gb_s: bytes / copy_ms / 1e6,
        speedup_vs_unfused: unfused_ms / fused_ms,
        fused_over_copy: fused_ms / copy_ms,
    }
}

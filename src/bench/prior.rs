//! `dace bench prior`: throughput of a prior's UNet forward and of a full expansion (encode,
//! noise, `steps` Euler-ancestral steps at strength 1, decode) on one device. The same workload
//! in PyTorch + diffusers is bench/prior_speed.py, which runs both in one script run.

use std::path::Path;
use std::time::Duration;

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use super::kernels::time;
use crate::error::Result;
use crate::kernels::diffusion::DiffusionKernels;
use crate::kernels::DaceBackend;
use crate::prior::bundle::Prior;
use crate::prior::pipeline::{self, NoiseId};
use crate::prior::scheduler::{img2img_plan, Sampler, ScheduleConfig};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PriorBenchRow {
    pub device: String,
    pub what: String,
    pub batch: usize,
    pub ms_per_batch: f64,
    pub img_per_s: f64,
}

/// UNet forward and expansion throughput of the prior in `dir` on `B`.
pub fn bench_prior<B: DaceBackend + DiffusionKernels>(
    dir: &Path,
    device_name: &str,
    batch: usize,
    steps: usize,
    budget: Duration,
    device: &B::Device,
) -> Result<Vec<PriorBenchRow>> {
    let prior = Prior::<B>::load(dir, device)?;
    let [c, h, w] = prior.index.image_shape;
    let [lc, lh, lw] = prior.latent_shape();
    let classes: Vec<usize> = (0..batch).map(|i| i % prior.index.classes.len()).collect();
    let ctx = prior.cond(&classes, device);
    let z = Tensor::<B, 4>::random([batch, lc, lh, lw], Distribution::Normal(0.0, 1.0), device);
    let t = vec![500.0f32; batch];
    let unet_ms = time::<B, _>(device, budget, || prior.unet.forward_with(z.clone(), &t, &ctx.context, ctx.text_time.as_ref()));

    let images = Tensor::<B, 4>::random([batch, c, h, w], Distribution::Uniform(-1.0, 1.0), device);
    let plan = img2img_plan(&ScheduleConfig::default(), Sampler::EulerAncestral, steps, 1.0).unwrap_or_default();
    let ids: Vec<NoiseId> = (0..batch as u64).map(|item| NoiseId { seed: 0, item }).collect();
    let scale = prior.vae_config.scaling_factor;
    let expand_ms = time::<B, _>(device, budget, || {
        pipeline::img2img(&prior.vae, &prior.unet, images.clone(), &ctx, None, &plan, scale, &ids)
    });
    let row = |what: &str, ms: f64| PriorBenchRow {
        device: device_name.into(),
        what: what.into(),
        batch,
        ms_per_batch: ms,
        img_per_s: batch as f64 * 1e3 / ms,
    };
    Ok(vec![row("unet_forward", unet_ms), row(&format!("expand_{steps}_steps"), expand_ms)])
}

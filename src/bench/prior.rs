//! `dace bench prior`: throughput of a prior's UNet forward and of a full expansion (encode,
//! noise, `steps` Euler-ancestral steps at strength 1, decode) on one device. The same workload
//! in PyTorch + diffusers is bench/prior_speed.py, which runs both in one script run.
//!
//! `--layout sd-turbo|sdxl-turbo` times the real checkpoints' shapes (their diffusers configs,
//! below) with random weights: the time of an expansion does not depend on the weights' values,
//! and the real weights cannot be downloaded here.

use std::path::Path;
use std::time::Duration;

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::kernels::time;
use crate::error::Result;
use crate::kernels::diffusion::DiffusionKernels;
use crate::kernels::DaceBackend;
use crate::package::UNetDType;
use crate::prior::bundle::Prior;
use crate::prior::config::{UNetConfig, VaeConfig};
use crate::prior::pipeline::{self, Cond, NoiseId};
use crate::prior::scheduler::{img2img_plan, Sampler, ScheduleConfig};
use crate::prior::unet::{TextTime, UNet2DConditionModel};
use crate::prior::vae::AutoencoderKL;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PriorBenchRow {
    pub device: String,
    /// Type of the UNet's weights and activations (the VAE always runs in f32).
    #[serde(default = "f32_name")]
    pub dtype: String,
    /// For a half-precision UNet: max |eps - eps_f32| / max |eps_f32| on the same input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps_rel_err_vs_f32: Option<f64>,
    /// The prior directory, or the layout's name.
    pub prior: String,
    pub what: String,
    pub batch: usize,
    /// `[channels, height, width]` of the images.
    pub image_shape: [usize; 3],
    pub ms_per_batch: f64,
    pub img_per_s: f64,
}

fn f32_name() -> String {
    "f32".into()
}

/// Published diffusers checkpoints whose UNet and VAE shapes `--layout` reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// stabilityai/sd-turbo (SD 2.1 UNet, 865 M parameters; OpenCLIP ViT-H context, 1024 wide).
    SdTurbo,
    /// stabilityai/sdxl-turbo (SDXL UNet, 2.6 G parameters; 2048-wide context, pooled text
    /// embedding and 6 time ids).
    SdxlTurbo,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::SdTurbo => "sd-turbo",
            Layout::SdxlTurbo => "sdxl-turbo",
        }
    }

    /// `unet/config.json` of the checkpoint (keys that differ from diffusers' defaults).
    pub fn unet_config(self) -> Value {
        match self {
            Layout::SdTurbo => json!({
                "_class_name": "UNet2DConditionModel",
                "sample_size": 64,
                "attention_head_dim": [5, 10, 20, 20],
                "block_out_channels": [320, 640, 1280, 1280],
                "cross_attention_dim": 1024,
                "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                "layers_per_block": 2,
                "use_linear_projection": true,
                "upcast_attention": true
            }),
            Layout::SdxlTurbo => json!({
                "_class_name": "UNet2DConditionModel",
                "sample_size": 64,
                "addition_embed_type": "text_time",
                "addition_embed_type_num_heads": 64,
                "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816,
                "attention_head_dim": [5, 10, 20],
                "block_out_channels": [320, 640, 1280],
                "cross_attention_dim": 2048,
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                "transformer_layers_per_block": [1, 2, 10],
                "layers_per_block": 2,
                "use_linear_projection": true
            }),
        }
    }

    /// `vae/config.json` of the checkpoint.
    pub fn vae_config(self) -> Value {
        let scaling = match self {
            Layout::SdTurbo => 0.18215,
            Layout::SdxlTurbo => 0.13025,
        };
        json!({
            "_class_name": "AutoencoderKL",
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "sample_size": 512,
            "scaling_factor": scaling
        })
    }
}

/// The models and conditioning one benchmark times.
struct Workload<B: Backend> {
    vae: AutoencoderKL<B>,
    unet: UNet2DConditionModel<B>,
    scaling_factor: f64,
    image_shape: [usize; 3],
    latent_shape: [usize; 3],
    cond: Cond<B>,
}

/// UNet forward and expansion throughput of the prior in `dir` on `B`.
pub fn bench_prior<B: DaceBackend + DiffusionKernels>(
    dir: &Path,
    dtypes: &[UNetDType],
    device_name: &str,
    batch: usize,
    steps: usize,
    budget: Duration,
    device: &B::Device,
) -> Result<Vec<PriorBenchRow>> {
    let prior = Prior::<B>::load(dir, device)?;
    let classes: Vec<usize> = (0..batch).map(|i| i % prior.index.classes.len()).collect();
    let work = Workload {
        cond: prior.cond(&classes, device),
        image_shape: prior.index.image_shape,
        latent_shape: prior.latent_shape(),
        scaling_factor: prior.vae_config.scaling_factor,
        vae: prior.vae,
        unet: prior.unet,
    };
    Ok(bench_workload(work, dtypes, &dir.display().to_string(), device_name, batch, steps, budget, device))
}

/// The same measurements for `layout` at `resolution` px, with random weights and conditioning.
pub fn bench_layout<B: DaceBackend + DiffusionKernels>(
    layout: Layout,
    resolution: usize,
    dtypes: &[UNetDType],
    device_name: &str,
    batch: usize,
    steps: usize,
    budget: Duration,
    device: &B::Device,
) -> Result<Vec<PriorBenchRow>> {
    let here = Path::new(layout.name());
    let unet_config = UNetConfig::from_json(&here.join("unet/config.json"), layout.unet_config())?;
    let vae_config = VaeConfig::from_json(&here.join("vae/config.json"), layout.vae_config())?;
    let f = vae_config.downscale();
    if !resolution.is_multiple_of(f * (1 << (unet_config.block_out_channels.len() - 1))) {
        return Err(crate::error::DaceError::Invalid(format!(
            "--resolution {resolution}: {} needs a multiple of {}",
            layout.name(),
            f << (unet_config.block_out_channels.len() - 1)
        )));
    }
    let context = Tensor::<B, 3>::random([batch, 77, unet_config.cross_attention_dim], Distribution::Normal(0.0, 1.0), device);
    let text_time = unet_config.text_time().map(|spec| TextTime {
        text_embeds: Tensor::random([batch, spec.pooled_dim()], Distribution::Normal(0.0, 1.0), device),
        time_ids: (0..batch).flat_map(|_| [resolution as f32, resolution as f32, 0.0, 0.0, resolution as f32, resolution as f32]).collect(),
    });
    let work = Workload {
        vae: vae_config.init(device),
        unet: unet_config.init(device),
        scaling_factor: vae_config.scaling_factor,
        image_shape: [3, resolution, resolution],
        latent_shape: [vae_config.latent_channels, resolution / f, resolution / f],
        cond: Cond { context, text_time },
    };
    Ok(bench_workload(work, dtypes, layout.name(), device_name, batch, steps, budget, device))
}

/// Times the VAE once (it runs in f32), then the UNet forward and a whole expansion with the
/// UNet's weights in each of `dtypes` in turn (f32 first if listed: casts only go one way).
#[allow(clippy::too_many_arguments)]
fn bench_workload<B: DaceBackend + DiffusionKernels>(
    mut work: Workload<B>,
    dtypes: &[UNetDType],
    prior_name: &str,
    device_name: &str,
    batch: usize,
    steps: usize,
    budget: Duration,
    device: &B::Device,
) -> Vec<PriorBenchRow> {
    let [c, h, w] = work.image_shape;
    let [lc, lh, lw] = work.latent_shape;
    let z = Tensor::<B, 4>::random([batch, lc, lh, lw], Distribution::Normal(0.0, 1.0), device);
    let t = vec![500.0f32; batch];
    let images = Tensor::<B, 4>::random([batch, c, h, w], Distribution::Uniform(-1.0, 1.0), device);
    let plan = img2img_plan(&ScheduleConfig::default(), Sampler::EulerAncestral, steps, 1.0).unwrap_or_default();
    let ids: Vec<NoiseId> = (0..batch as u64).map(|item| NoiseId { seed: 0, item }).collect();
    let started = std::time::Instant::now();
    let row = |dtype: &str, what: &str, ms: f64, err: Option<f64>| {
        // Progress on stderr: a run cut short by a time limit still leaves its finished rows.
        eprintln!("  [{:>6.1} s] {prior_name} {dtype} {what}: {ms:.2} ms per batch of {batch}", started.elapsed().as_secs_f64());
        PriorBenchRow {
            device: device_name.into(),
            dtype: dtype.into(),
            eps_rel_err_vs_f32: err,
            prior: prior_name.into(),
            what: what.into(),
            batch,
            image_shape: work.image_shape,
            ms_per_batch: ms,
            img_per_s: batch as f64 * 1e3 / ms,
        }
    };
    // The VAE's share of an expansion (one encode, one decode), which the step count does not change.
    let encode_ms = time::<B, _>(device, budget, || work.vae.encode(images.clone()).mean);
    let decode_ms = time::<B, _>(device, budget, || work.vae.decode(z.clone()));
    let mut rows = vec![row("f32", "vae_encode", encode_ms, None), row("f32", "vae_decode", decode_ms, None)];

    let eps = |unet: &UNet2DConditionModel<B>| unet.forward_with(z.clone(), &t, &work.cond.context, work.cond.text_time.as_ref());
    let reference = eps(&work.unet);
    for &dtype in dtypes {
        let name = dtype.name();
        if !B::supports_dtype(device, dtype.float().into()) {
            eprintln!("  {device_name} has no general {name} arithmetic: {name} rows skipped");
            continue;
        }
        work.unet = work.unet.clone().cast_weights(dtype.float());
        let err = (!dtype.is_f32()).then(|| {
            let diff = (eps(&work.unet) - reference.clone()).abs().max().into_scalar().elem::<f64>();
            let err = diff / reference.clone().abs().max().into_scalar().elem::<f64>();
            eprintln!(
                "  [{:>6.1} s] {prior_name} {name}: first forward done, eps rel err vs f32 {err:.1e}",
                started.elapsed().as_secs_f64()
            );
            err
        });
        let unet_ms = time::<B, _>(device, budget, || eps(&work.unet));
        let expand_ms = time::<B, _>(device, budget, || {
            pipeline::img2img(&work.vae, &work.unet, images.clone(), &work.cond, None, &plan, work.scaling_factor, &ids)
        });
        rows.push(row(name, "unet_forward", unet_ms, err));
        rows.push(row(name, &format!("expand_{steps}_steps"), expand_ms, err));
    }
    rows
}

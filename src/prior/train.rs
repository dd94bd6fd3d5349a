//! `dace prior train`: the offline default prior, trained on the dataset itself.
//!
//! Two stages, like latent diffusion: (1) a small `AutoencoderKL` (reconstruction MSE + a small
//! KL term), after which the latent scaling factor is set to 1/std of the training latents; (2) a
//! small class-conditional `UNet2DConditionModel` on those latents (epsilon prediction, DDPM
//! scaled-linear schedule, the class embedding as a one-token context, replaced by the null
//! class with probability `cond_drop` so classifier-free guidance works).
//!
//! Training is counted in optimiser steps over batches drawn with replacement from a portable
//! stream of (seed, step): a checkpoint every `checkpoint_every` steps (weights in the diffusers
//! layout, optimiser state, history) resumes exactly, and a sample grid is written with each.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use serde::{Deserialize, Serialize};

use super::bundle::{self, ClassEmbedder, ClassEmbedderConfig, PriorIndex};
use super::config::{PerBlock, UNetConfig, VaeConfig};
use super::pipeline::{self, Guidance, NoiseId};
use super::scheduler::{init_noise_sigma, plan, Sampler, ScheduleConfig};
use super::{AutoencoderKL, UNet2DConditionModel};
use crate::data::{Dataset, Split};
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::diffusion::DiffusionKernels;
use crate::kernels::{DaceBackend, TrainBackend};
use crate::rng::{SeedRng, Stream};
use crate::train::checkpoint::WeightRecorder;
use crate::train::progress;
use crate::train::step::{optimizer_step, StepAt};
use crate::viz;

const STATE_FILE: &str = "train_state.json";
const CHECKPOINT_DIR: &str = "checkpoint";
pub const REPORT_FILE: &str = "report.json";

/// Architecture and recipe of a self-trained prior.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorTrainConfig {
    /// VAE widths per level; `n` levels downsample images by `2^(n-1)`.
    pub vae_channels: Vec<usize>,
    pub latent_channels: usize,
    /// UNet widths per level (level 0 plain, the others with cross-attention).
    pub unet_channels: Vec<usize>,
    /// Width of the class embedding (the UNet's cross-attention context).
    pub class_dim: usize,
    pub vae_steps: usize,
    pub unet_steps: usize,
    pub batch_size: usize,
    pub vae_lr: f64,
    pub unet_lr: f64,
    /// Weight of the KL term (per latent element) against the per-pixel MSE.
    pub kl_weight: f64,
    /// Probability of training a step's item on the null class.
    pub cond_drop: f32,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// Sampling settings of the checkpoint grids and of `dace prior eval`.
    pub sample_steps: usize,
    pub guidance: f32,
}

impl Default for PriorTrainConfig {
    fn default() -> Self {
        PriorTrainConfig {
            vae_channels: vec![16, 32],
            latent_channels: 4,
            unet_channels: vec![32, 64],
            class_dim: 64,
            vae_steps: 3000,
            unet_steps: 6000,
            batch_size: 64,
            vae_lr: 1e-3,
            unet_lr: 5e-4,
            kl_weight: 1e-5,
            cond_drop: 0.1,
            checkpoint_every: 250,
            seed: 0,
            sample_steps: 20,
            guidance: 2.0,
        }
    }
}

impl PriorTrainConfig {
    pub fn vae_config(&self, ds: &Dataset) -> VaeConfig {
        VaeConfig {
            in_channels: ds.channels,
            out_channels: ds.channels,
            block_out_channels: self.vae_channels.clone(),
            layers_per_block: 1,
            latent_channels: self.latent_channels,
            norm_num_groups: 8,
            sample_size: ds.height,
            scaling_factor: 1.0,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            force_upcast: true,
        }
    }

    pub fn unet_config(&self, latent_size: usize) -> UNetConfig {
        let n = self.unet_channels.len();
        let down = (0..n).map(|i| if i == 0 { "DownBlock2D" } else { "CrossAttnDownBlock2D" });
        let up = (0..n).map(|i| if i + 1 == n { "UpBlock2D" } else { "CrossAttnUpBlock2D" });
        UNetConfig {
            sample_size: latent_size,
            in_channels: self.latent_channels,
            out_channels: self.latent_channels,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: down.map(String::from).collect(),
            up_block_types: up.map(String::from).collect(),
            block_out_channels: self.unet_channels.clone(),
            layers_per_block: 1,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            norm_num_groups: 16,
            norm_eps: 1e-5,
            cross_attention_dim: self.class_dim,
            transformer_layers_per_block: PerBlock::One(1),
            // 32-wide heads at every level.
            attention_head_dim: PerBlock::Each(self.unet_channels.iter().map(|c| (c / 32).max(1)).collect()),
            num_attention_heads: None,
            use_linear_projection: true,
            upcast_attention: false,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Vae,
    Unet,
    Done,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StagePoint {
    pub step: usize,
    /// Mean training loss since the previous checkpoint.
    pub loss: f64,
    /// VAE: reconstruction PSNR (dB) on the first test images; UNet: unused (NaN).
    pub test_psnr_db: Option<f64>,
    pub seconds: f64,
    pub img_per_s: f64,
}

/// `train_state.json` while training, `report.json` when done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PriorTrainState {
    pub command: String,
    pub config: PriorTrainConfig,
    pub dataset: String,
    pub device: String,
    pub stage: Stage,
    pub vae_step: usize,
    pub unet_step: usize,
    pub scaling_factor: Option<f64>,
    pub vae_history: Vec<StagePoint>,
    pub unet_history: Vec<StagePoint>,
    pub fingerprint: Option<String>,
}

/// Images `[-1, 1]` of `split` at `indices`.
fn images<B: Backend>(ds: &Dataset, split: &Split, indices: &[usize], device: &B::Device) -> Result<Tensor<B, 4>> {
    let len = ds.image_len();
    let mut v = Vec::with_capacity(indices.len() * len);
    for &i in indices {
        v.extend(ds.image(split, i)?.iter().map(|&p| p as f32 / 127.5 - 1.0));
    }
    Ok(Tensor::from_data(TensorData::new(v, [indices.len(), ds.channels, ds.height, ds.width]), device))
}

fn host_normals<B: Backend, const D: usize>(seed: u64, step: usize, stream: Stream, dims: [usize; D], device: &B::Device) -> Tensor<B, D> {
    let mut v = vec![0f32; dims.iter().product()];
    SeedRng::new(seed, step as u64, stream).fill_normal(&mut v);
    Tensor::from_data(TensorData::new(v, dims), device)
}

/// Batch `step`: indices drawn with replacement (portable, so a resumed run draws the same).
fn batch_indices(seed: u64, step: usize, n: usize, batch: usize) -> Vec<usize> {
    let rng = SeedRng::new(seed, step as u64, Stream::Shuffle);
    (0..batch).map(|j| rng.below_at(j as u64, n as u32) as usize).collect()
}

/// Warm-up over the first 2 % of steps, then cosine to zero.
fn lr_at(lr: f64, step: usize, total: usize) -> f64 {
    let warm = (total / 50).max(1);
    if step < warm {
        lr * (step + 1) as f64 / warm as f64
    } else {
        crate::train::optim::cosine_lr(lr, step - warm, total - warm)
    }
}

/// PSNR (dB, peak-to-peak 2 in [-1, 1] units, i.e. images in [0, 1]) of reconstructions of the
/// first `n` test images, through the posterior mean.
pub fn vae_test_psnr<B: DaceBackend>(vae: &AutoencoderKL<B>, ds: &Dataset, n: usize, device: &B::Device) -> Result<f64> {
    let n = n.min(ds.test.len());
    let mut sse = 0.0f64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let x = images::<B>(ds, &ds.test, chunk, device)?;
        // Reconstructions are clamped to the valid range, as an image would be.
        let rec = vae.decode(vae.encode(x.clone()).mean).clamp(-1.0, 1.0);
        let d: f32 = (rec - x).powi_scalar(2).sum().into_scalar().elem();
        sse += d as f64;
    }
    // Pixel values in [0,1]: MSE_01 = MSE_pm1 / 4.
    let mse01 = sse / (n * ds.image_len()) as f64 / 4.0;
    Ok(10.0 * (1.0 / mse01).log10())
}

struct Paths {
    out: PathBuf,
}

impl Paths {
    fn state(&self) -> PathBuf {
        self.out.join(STATE_FILE)
    }
    fn optim(&self, stage: &str) -> PathBuf {
        self.out.join(CHECKPOINT_DIR).join(format!("{stage}_optim.mpk"))
    }
    fn samples(&self, name: &str) -> PathBuf {
        self.out.join("samples").join(name)
    }
}

fn save_optim<B: Backend, R: burn::record::Record<B>>(path: &Path, record: R) -> Result<()> {
    let bytes =
        WeightRecorder::default().record(record, ()).map_err(|e| DaceError::Invalid(format!("cannot serialise optimiser state: {e}")))?;
    fsio::write_atomic(path, &bytes)
}

fn load_optim<B: Backend, R: burn::record::Record<B>>(path: &Path, device: &B::Device) -> Result<R> {
    WeightRecorder::default()
        .load(fsio::read(path)?, device)
        .map_err(|e| DaceError::bad_file(path, format!("cannot read optimiser state: {e}")))
}

/// The UNet and its class table, trained as one module.
#[derive(Module, Debug)]
pub struct Denoiser<B: Backend> {
    pub unet: UNet2DConditionModel<B>,
    pub classes: ClassEmbedder<B>,
}

/// Trains (or resumes) a prior into `out`.
pub fn train_prior<B: TrainBackend>(
    config: PriorTrainConfig,
    ds: &Dataset,
    out: &Path,
    fresh: bool,
    device: &B::Device,
) -> Result<PriorTrainState>
where
    B::InnerBackend: DiffusionKernels,
{
    if config.checkpoint_every == 0 || config.batch_size == 0 {
        return Err(DaceError::Invalid(format!(
            "prior training: checkpoint_every ({}) and batch size ({}) must be at least 1",
            config.checkpoint_every, config.batch_size
        )));
    }
    let paths = Paths { out: out.to_path_buf() };
    let vae_cfg = config.vae_config(ds);
    if !ds.height.is_multiple_of(vae_cfg.downscale()) || !ds.width.is_multiple_of(vae_cfg.downscale()) {
        return Err(DaceError::Invalid(format!(
            "{}x{} images do not divide into the VAE's {}x downscaling",
            ds.height,
            ds.width,
            vae_cfg.downscale()
        )));
    }
    let latent_size = ds.height / vae_cfg.downscale();
    let unet_cfg = config.unet_config(latent_size);
    let ce_cfg = ClassEmbedderConfig::new(ds.num_classes(), config.class_dim);

    let mut state = initial_state(&config, ds, &paths, fresh, device)?;
    bundle::save_index(out, &PriorIndex::new(&ds.name, &ds.classes, [ds.channels, ds.height, ds.width]))?;

    // Stage 1: the autoencoder.
    let mut vae: AutoencoderKL<B> = vae_cfg.init(device);
    if state.vae_step > 0 {
        super::weights::load(&mut vae, &out.join("vae").join(super::weights::WEIGHTS_FILE))?;
    }
    if state.stage == Stage::Vae {
        vae = train_vae(&config, &vae_cfg, ds, vae, &paths, &mut state, device)?;
    }

    // Stage 2: the denoiser on scaled latents.
    if state.stage == Stage::Unet {
        let vae_inner = vae.valid();
        let mut denoiser = Denoiser { unet: unet_cfg.init::<B>(device), classes: ce_cfg.init::<B>(device) };
        if state.unet_step > 0 {
            super::weights::load(&mut denoiser.unet, &out.join("unet").join(super::weights::WEIGHTS_FILE))?;
            super::weights::load(&mut denoiser.classes, &out.join("class_embedder").join(super::weights::WEIGHTS_FILE))?;
        }
        train_unet(&config, &unet_cfg, &ce_cfg, ds, &vae_inner, denoiser, &paths, &mut state, device)?;
    }
    if state.stage == Stage::Done {
        state.fingerprint = Some(bundle::fingerprint(out)?);
        fsio::write_json(&out.join(REPORT_FILE), &state)?;
    }
    fsio::write_json(&paths.state(), &state)?;
    Ok(state)
}

/// A new run's state, or the saved one when `out` holds a run these settings may continue.
fn initial_state<D: std::fmt::Debug>(
    config: &PriorTrainConfig,
    ds: &Dataset,
    paths: &Paths,
    fresh: bool,
    device: &D,
) -> Result<PriorTrainState> {
    let mut state = PriorTrainState {
        command: "prior train".into(),
        config: config.clone(),
        dataset: ds.name.clone(),
        device: format!("{device:?}"),
        stage: Stage::Vae,
        vae_step: 0,
        unet_step: 0,
        scaling_factor: None,
        vae_history: vec![],
        unet_history: vec![],
        fingerprint: None,
    };
    if !fresh && paths.state().exists() {
        let saved: PriorTrainState = fsio::read_json(&paths.state())?;
        if let Err(why) = resumable(&saved, config, &ds.name) {
            return Err(DaceError::bad_file(paths.state(), format!("{why}: pass the same settings, or --fresh to start over")));
        }
        eprintln!("resuming {} at {:?} (vae step {}, unet step {})", paths.out.display(), saved.stage, saved.vae_step, saved.unet_step);
        state = PriorTrainState { config: config.clone(), ..saved };
        // More UNet steps than before reopen a finished run.
        if state.stage == Stage::Done && state.unet_step < config.unet_steps {
            state.stage = Stage::Unet;
        }
    }
    Ok(state)
}

/// Whether a saved run can continue under `config`: same data, architecture and recipe; the
/// step budgets may change (the VAE's only while its stage runs; the UNet's only upwards).
fn resumable(saved: &PriorTrainState, config: &PriorTrainConfig, dataset: &str) -> std::result::Result<(), String> {
    if saved.dataset != dataset {
        return Err(format!("this checkpoint was trained on `{}`, not `{dataset}`", saved.dataset));
    }
    let norm = |c: &PriorTrainConfig| PriorTrainConfig {
        vae_steps: 0,
        unet_steps: 0,
        checkpoint_every: 0,
        sample_steps: 0,
        guidance: 0.0,
        ..c.clone()
    };
    if norm(&saved.config) != norm(config) {
        return Err("this checkpoint was made with other settings (architecture or recipe)".into());
    }
    if saved.stage != Stage::Vae && config.vae_steps != saved.config.vae_steps {
        return Err(format!("the VAE stage already finished at {} steps; --vae-steps cannot change now", saved.config.vae_steps));
    }
    if config.unet_steps < saved.unet_step {
        return Err(format!("the UNet already ran {} steps, more than --unet-steps {}", saved.unet_step, config.unet_steps));
    }
    Ok(())
}

fn train_vae<B: TrainBackend>(
    config: &PriorTrainConfig,
    vae_cfg: &VaeConfig,
    ds: &Dataset,
    mut vae: AutoencoderKL<B>,
    paths: &Paths,
    state: &mut PriorTrainState,
    device: &B::Device,
) -> Result<AutoencoderKL<B>> {
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init::<B, AutoencoderKL<B>>();
    if state.vae_step > 0 {
        optim = optim.load_record(load_optim::<B, _>(&paths.optim("vae"), device)?);
    }
    let total = config.vae_steps;
    let bar = progress::bar(total as u64, "vae");
    bar.set_position(state.vae_step as u64);
    let (mut loss_sum, mut since, mut start) = (0.0f64, 0usize, Instant::now());
    let seed = config.seed;
    while state.vae_step < total {
        let step = state.vae_step;
        let idx = batch_indices(seed, step, ds.train.len(), config.batch_size);
        let x = images::<B>(ds, &ds.train, &idx, device)?;
        let dist = vae.encode(x.clone());
        let n = host_normals::<B, 4>(seed, step, Stream::VaeSample, dist.mean.dims(), device);
        let z = dist.mean.clone() + dist.std() * n;
        let rec = vae.decode(z);
        let mse = (rec - x).powi_scalar(2).mean();
        let kl = (dist.mean.powi_scalar(2) + dist.logvar.clone().exp() - dist.logvar).sub_scalar(1.0).mean().mul_scalar(0.5);
        let loss = mse + kl.mul_scalar(config.kl_weight);
        let (updated, value) = optimizer_step(vae, &mut optim, loss, lr_at(config.vae_lr, step, total), StepAt { epoch: 1, step }, &bar)?;
        vae = updated;
        loss_sum += value as f64;
        since += 1;
        state.vae_step += 1;
        bar.set_message(format!("loss {:.5}", loss_sum / since as f64));
        bar.inc(1);

        let done = state.vae_step == total;
        if state.vae_step.is_multiple_of(config.checkpoint_every) || done {
            let secs = start.elapsed().as_secs_f64();
            let valid = vae.valid();
            let psnr = vae_test_psnr(&valid, ds, 1000, device)?;
            state.vae_history.push(StagePoint {
                step: state.vae_step,
                loss: loss_sum / since as f64,
                test_psnr_db: Some(psnr),
                seconds: secs,
                img_per_s: (since * config.batch_size) as f64 / secs,
            });
            bar.println(format!("vae step {}: loss {:.5}, test PSNR {psnr:.2} dB", state.vae_step, loss_sum / since as f64));
            let mut cfg = vae_cfg.clone();
            if done {
                let s = latent_scale(&valid, ds, device)?;
                cfg.scaling_factor = s;
                state.scaling_factor = Some(s);
                state.stage = Stage::Unet;
            }
            bundle::save_component(&paths.out, "vae", &cfg.to_json(), &vae)?;
            save_optim::<B, _>(&paths.optim("vae"), optim.to_record())?;
            write_reconstructions(&valid, ds, &paths.samples(&format!("vae_step{:06}.png", state.vae_step)), device)?;
            fsio::write_json(&paths.state(), state)?;
            (loss_sum, since, start) = (0.0, 0, Instant::now());
        }
    }
    bar.finish_and_clear();
    Ok(vae)
}

/// 1 / std of the posterior-mean latents of up to 5000 training images (LDM's recipe).
fn latent_scale<B: DaceBackend>(vae: &AutoencoderKL<B>, ds: &Dataset, device: &B::Device) -> Result<f64> {
    let n = ds.train.len().min(5000);
    let (mut s, mut s2, mut count) = (0.0f64, 0.0f64, 0usize);
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let z = vae.encode(images::<B>(ds, &ds.train, chunk, device)?).mean;
        let v = z.into_data().to_vec::<f32>().expect("f32 latents");
        count += v.len();
        for x in v {
            s += x as f64;
            s2 += (x as f64) * (x as f64);
        }
    }
    let mean = s / count as f64;
    let var = s2 / count as f64 - mean * mean;
    Ok(1.0 / var.sqrt().max(1e-6))
}

/// Top row originals, bottom row reconstructions, 16 test images.
fn write_reconstructions<B: DaceBackend>(vae: &AutoencoderKL<B>, ds: &Dataset, path: &Path, device: &B::Device) -> Result<()> {
    let idx: Vec<usize> = (0..16.min(ds.test.len())).collect();
    let x = images::<B>(ds, &ds.test, &idx, device)?;
    let rec = vae.decode(vae.encode(x.clone()).mean);
    let both = Tensor::cat(vec![x, rec], 0);
    write_images(&both, ds.channels, ds.height, ds.width, 16, path)
}

/// `[-1, 1]` images to u8 pixels.
pub fn to_u8<B: Backend>(x: Tensor<B, 4>) -> Vec<u8> {
    let v = x.into_data().to_vec::<f32>().expect("f32 images");
    v.iter().map(|&p| ((p + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8).collect()
}

/// Writes `[-1, 1]` images as a PNG grid.
pub fn write_images<B: Backend>(x: &Tensor<B, 4>, c: usize, h: usize, w: usize, cols: usize, path: &Path) -> Result<()> {
    viz::write_grid(path, &to_u8(x.clone()), c, h, w, cols, 28)
}

#[allow(clippy::too_many_arguments)]
fn train_unet<B: TrainBackend>(
    config: &PriorTrainConfig,
    unet_cfg: &UNetConfig,
    ce_cfg: &ClassEmbedderConfig,
    ds: &Dataset,
    vae: &AutoencoderKL<B::InnerBackend>,
    mut model: Denoiser<B>,
    paths: &Paths,
    state: &mut PriorTrainState,
    device: &B::Device,
) -> Result<()>
where
    B::InnerBackend: DiffusionKernels,
{
    let scale = state.scaling_factor.expect("the VAE stage sets the scaling factor") as f32;
    eprintln!("encoding {} training images to latents", ds.train.len());
    let latents = encode_all(vae, ds, device)?;
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init::<B, Denoiser<B>>();
    if state.unet_step > 0 {
        optim = optim.load_record(load_optim::<B, _>(&paths.optim("unet"), device)?);
    }
    let total = config.unet_steps;
    let bar = progress::bar(total as u64, "unet");
    bar.set_position(state.unet_step as u64);
    let (mut loss_sum, mut since, mut start) = (0.0f64, 0usize, Instant::now());
    let batcher = NoisedBatches {
        latents: &latents,
        labels: &ds.train.labels,
        null_class: ds.num_classes(),
        scale,
        abar: ScheduleConfig::default().alphas_cumprod(),
        seed: config.seed ^ 0x0005_EED0_F0E7,
        batch: config.batch_size,
        cond_drop: config.cond_drop,
    };
    while state.unet_step < total {
        let step = state.unet_step;
        let (zt, eps, ts, labels) = batcher.batch::<B>(step, device);
        let ctx = model.classes.context(&labels, device);
        let pred = model.unet.forward(zt, &ts, &ctx);
        let loss = (pred - eps).powi_scalar(2).mean();
        let (updated, value) =
            optimizer_step(model, &mut optim, loss, lr_at(config.unet_lr, step, total), StepAt { epoch: 2, step }, &bar)?;
        model = updated;
        loss_sum += value as f64;
        since += 1;
        state.unet_step += 1;
        bar.set_message(format!("loss {:.4}", loss_sum / since as f64));
        bar.inc(1);

        let done = state.unet_step == total;
        if state.unet_step.is_multiple_of(config.checkpoint_every) || done {
            let secs = start.elapsed().as_secs_f64();
            state.unet_history.push(StagePoint {
                step: state.unet_step,
                loss: loss_sum / since as f64,
                test_psnr_db: None,
                seconds: secs,
                img_per_s: (since * config.batch_size) as f64 / secs,
            });
            bar.println(format!("unet step {}: loss {:.4}", state.unet_step, loss_sum / since as f64));
            if done {
                state.stage = Stage::Done;
            }
            save_unet_checkpoint(config, unet_cfg, ce_cfg, ds, vae, &model, &optim, latents.dims, scale, paths, state, device)?;
            (loss_sum, since, start) = (0.0, 0, Instant::now());
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// The UNet stage's checkpoint: weights, optimiser state, a grid of samples, then the state.
fn save_unet_checkpoint<B: TrainBackend>(
    config: &PriorTrainConfig,
    unet_cfg: &UNetConfig,
    ce_cfg: &ClassEmbedderConfig,
    ds: &Dataset,
    vae: &AutoencoderKL<B::InnerBackend>,
    model: &Denoiser<B>,
    optim: &impl Optimizer<Denoiser<B>, B>,
    dims: [usize; 3],
    scale: f32,
    paths: &Paths,
    state: &PriorTrainState,
    device: &B::Device,
) -> Result<()>
where
    B::InnerBackend: DiffusionKernels,
{
    bundle::save_component(&paths.out, "unet", &unet_cfg.to_json(), &model.unet)?;
    bundle::save_component(&paths.out, "class_embedder", &serde_json::to_value(ce_cfg).expect("json"), &model.classes)?;
    save_optim::<B, _>(&paths.optim("unet"), optim.to_record())?;
    let valid = model.valid();
    let samples = paths.samples(&format!("unet_step{:06}.png", state.unet_step));
    write_samples(vae, &valid.unet, &valid.classes, config, ds.num_classes(), dims, scale as f64, &samples, ds, device)?;
    fsio::write_json(&paths.state(), state)
}

/// Every training image's posterior (host memory), `[c, h, w]` latents each.
struct Latents {
    means: Vec<f32>,
    stds: Vec<f32>,
    dims: [usize; 3],
}

/// The UNet's training batches: posterior samples of random training images, noised to a random
/// timestep, their classes dropped to the null class at rate `cond_drop`. Batch `step` depends on
/// the seed and the step only, so a resumed run draws the same batches.
struct NoisedBatches<'a> {
    latents: &'a Latents,
    labels: &'a [u32],
    null_class: usize,
    scale: f32,
    abar: Vec<f64>,
    seed: u64,
    batch: usize,
    cond_drop: f32,
}

impl NoisedBatches<'_> {
    /// `(z_t, eps, timesteps, classes)` of batch `step`.
    fn batch<B: Backend>(&self, step: usize, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 4>, Vec<f32>, Vec<usize>) {
        let (b, seed, lat) = (self.batch, self.seed, self.latents);
        let latent_len: usize = lat.dims.iter().product();
        let idx = batch_indices(seed, step, self.labels.len(), b);
        let post = SeedRng::new(seed, step as u64, Stream::VaeSample);
        let noise = SeedRng::new(seed, step as u64, Stream::AddNoise);
        let pick = SeedRng::new(seed, step as u64, Stream::MixupGamma);
        let mut zt = vec![0f32; b * latent_len];
        let mut eps = vec![0f32; b * latent_len];
        noise.fill_normal(&mut eps);
        let mut n = vec![0f32; b * latent_len];
        post.fill_normal(&mut n);
        let mut ts = Vec::with_capacity(b);
        let mut labels = Vec::with_capacity(b);
        for (j, &i) in idx.iter().enumerate() {
            let t = pick.below_at(2 * j as u64, self.abar.len() as u32) as usize;
            let (a, s) = (self.abar[t].sqrt() as f32, (1.0 - self.abar[t]).sqrt() as f32);
            for k in 0..latent_len {
                let p = j * latent_len + k;
                let z0 = (lat.means[i * latent_len + k] + lat.stds[i * latent_len + k] * n[p]) * self.scale;
                zt[p] = a * z0 + s * eps[p];
            }
            ts.push(t as f32);
            let drop = pick.uniform_at(2 * j as u64 + 1) < self.cond_drop;
            labels.push(if drop { self.null_class } else { self.labels[i] as usize });
        }
        let shape = [b, lat.dims[0], lat.dims[1], lat.dims[2]];
        let zt = Tensor::<B, 4>::from_data(TensorData::new(zt, shape), device);
        let eps = Tensor::<B, 4>::from_data(TensorData::new(eps, shape), device);
        (zt, eps, ts, labels)
    }
}

/// Posterior means and standard deviations of every training image (host memory).
fn encode_all<B: DaceBackend>(vae: &AutoencoderKL<B>, ds: &Dataset, device: &B::Device) -> Result<Latents> {
    let n = ds.train.len();
    let bar = progress::bar(n.div_ceil(500) as u64, "latents");
    let (mut means, mut stds) = (Vec::new(), Vec::new());
    let mut dims = [0; 3];
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let dist = vae.encode(images::<B>(ds, &ds.train, chunk, device)?);
        let [_, c, h, w] = dist.mean.dims();
        dims = [c, h, w];
        means.extend(dist.mean.clone().into_data().to_vec::<f32>().expect("f32"));
        stds.extend(dist.std().into_data().to_vec::<f32>().expect("f32"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Latents { means, stds, dims })
}

/// Class-conditional samples: one row per class, guided, Euler-ancestral.
#[allow(clippy::too_many_arguments)]
pub fn sample_classes<B: DaceBackend + DiffusionKernels>(
    vae: &AutoencoderKL<B>,
    unet: &UNet2DConditionModel<B>,
    classes: &ClassEmbedder<B>,
    class_ids: &[usize],
    latent_shape: [usize; 3],
    scaling_factor: f64,
    steps: usize,
    guidance: f32,
    seed: u64,
    first_item: u64,
    device: &B::Device,
) -> Tensor<B, 4> {
    let cfg = ScheduleConfig::default();
    let plan = plan(&cfg, Sampler::EulerAncestral, steps);
    let sigma = init_noise_sigma(&cfg, Sampler::EulerAncestral, steps);
    let ids: Vec<NoiseId> = (0..class_ids.len()).map(|j| NoiseId { seed, item: first_item + j as u64 }).collect();
    let ctx = classes.cond(class_ids, device);
    let g = Guidance { uncond: classes.cond(&vec![classes.null_class(); class_ids.len()], device), scale: guidance };
    let guidance = (guidance != 1.0).then_some(&g);
    let z = pipeline::sample_latents(unet, latent_shape, &ctx, guidance, &plan, sigma, &ids);
    vae.decode(z.div_scalar(scaling_factor))
}

#[allow(clippy::too_many_arguments)]
fn write_samples<B: DaceBackend + DiffusionKernels>(
    vae: &AutoencoderKL<B>,
    unet: &UNet2DConditionModel<B>,
    classes: &ClassEmbedder<B>,
    config: &PriorTrainConfig,
    num_classes: usize,
    latent_shape: [usize; 3],
    scaling_factor: f64,
    path: &Path,
    ds: &Dataset,
    device: &B::Device,
) -> Result<()> {
    let per = 8;
    let ids: Vec<usize> = (0..num_classes).flat_map(|c| std::iter::repeat_n(c, per)).collect();
    let x = sample_classes(vae, unet, classes, &ids, latent_shape, scaling_factor, config.sample_steps, config.guidance, 1, 0, device);
    write_images(&x, ds.channels, ds.height, ds.width, per, path)
}

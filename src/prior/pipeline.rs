//! img2img with dace's portable noise: the expansion of one batch of patches (diffusers' img2img semantics).
//!
//! diffusers' `StableDiffusionImg2ImgPipeline` without guidance, with every random draw taken
//! from the named stream of its (seed, item) (docs/FORMAT.md), so any device regenerates the
//! same images: posterior sample (`VaeSample`), forward noise (`AddNoise`), the ancestral noise of
//! step `k` of the full schedule (`Ancestral(k)`).

use burn::prelude::*;

use super::scheduler::DenoiseStep;
use super::{AutoencoderKL, TextTime, UNet2DConditionModel};
use crate::kernels::coeffs::NoiseCoeffs;
use crate::kernels::diffusion::{add_noise, scheduler_step, DiffusionKernels};
use crate::kernels::diffusion_ref::{noise_key, NoiseKey};
use crate::kernels::DaceBackend;
use crate::rng::{SeedRng, Stream};

/// The (seed, item) pair each latent of a batch draws its noise from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseId {
    pub seed: u64,
    pub item: u64,
}

pub fn keys(ids: &[NoiseId], stream: Stream) -> Vec<NoiseKey> {
    ids.iter().map(|id| noise_key(&SeedRng::new(id.seed, id.item, stream))).collect()
}

/// Standard normals of shape `dims` (first axis = one latent per id) from `stream`.
pub fn normals<B: DiffusionKernels, const D: usize>(ids: &[NoiseId], stream: Stream, dims: [usize; D], device: &B::Device) -> Tensor<B, D> {
    add_noise(Tensor::zeros(dims, device), NoiseCoeffs { a: 0.0, b: 1.0 }, &keys(ids, stream))
}

/// `scaling_factor * (mean + std * n)`: a posterior sample, scaled as the UNet expects.
pub fn encode_latents<B: DaceBackend + DiffusionKernels>(
    vae: &AutoencoderKL<B>,
    images: Tensor<B, 4>,
    scaling_factor: f64,
    ids: &[NoiseId],
) -> Tensor<B, 4> {
    let dist = vae.encode(images);
    let n = normals(ids, Stream::VaeSample, dist.mean.dims(), &dist.mean.device());
    (dist.mean.clone() + dist.std() * n).mul_scalar(scaling_factor)
}

/// What the UNet is conditioned on, one row per latent: the context it attends to and, for an
/// SDXL UNet, the pooled text embedding and time ids of its added embedding.
#[derive(Clone, Debug)]
pub struct Cond<B: Backend> {
    pub context: Tensor<B, 3>,
    pub text_time: Option<TextTime<B>>,
}

impl<B: Backend> From<Tensor<B, 3>> for Cond<B> {
    fn from(context: Tensor<B, 3>) -> Self {
        Cond { context, text_time: None }
    }
}

impl<B: Backend> Cond<B> {
    /// The rows of `self` then those of `other` (one batched pass for guidance).
    fn concat(&self, other: &Self) -> Self {
        let text_time = match (&self.text_time, &other.text_time) {
            (Some(a), Some(b)) => Some(TextTime {
                text_embeds: Tensor::cat(vec![a.text_embeds.clone(), b.text_embeds.clone()], 0),
                time_ids: a.time_ids.iter().chain(&b.time_ids).copied().collect(),
            }),
            _ => None,
        };
        Cond { context: Tensor::cat(vec![self.context.clone(), other.context.clone()], 0), text_time }
    }
}

/// Classifier-free guidance: `eps = eps_u + scale * (eps_c - eps_u)`, with `uncond` the
/// conditioning of the null class (one row per latent).
pub struct Guidance<B: Backend> {
    pub uncond: Cond<B>,
    pub scale: f32,
}

/// The UNet's noise prediction, guided when `guidance` is given (one batched pass over the
/// conditional and unconditional halves).
pub fn predict_eps<B: DaceBackend>(
    unet: &UNet2DConditionModel<B>,
    x: Tensor<B, 4>,
    timestep: f32,
    cond: &Cond<B>,
    guidance: Option<&Guidance<B>>,
) -> Tensor<B, 4> {
    let b = x.dims()[0];
    match guidance {
        None => unet.forward_with(x, &vec![timestep; b], &cond.context, cond.text_time.as_ref()),
        Some(g) => {
            let both_cond = cond.concat(&g.uncond);
            let both = unet.forward_with(
                Tensor::cat(vec![x.clone(), x], 0),
                &vec![timestep; 2 * b],
                &both_cond.context,
                both_cond.text_time.as_ref(),
            );
            let cond = both.clone().narrow(0, 0, b);
            let uncond = both.narrow(0, b, b);
            uncond.clone() + (cond - uncond).mul_scalar(g.scale)
        }
    }
}

/// Applies `steps` in order to latents already at the noise level of `steps[0]`.
pub fn run_steps<B: DaceBackend + DiffusionKernels>(
    unet: &UNet2DConditionModel<B>,
    mut z: Tensor<B, 4>,
    cond: &Cond<B>,
    guidance: Option<&Guidance<B>>,
    steps: &[DenoiseStep],
    ids: &[NoiseId],
) -> Tensor<B, 4> {
    for step in steps {
        let eps = predict_eps(unet, z.clone().mul_scalar(step.c_in), step.timestep as f32, cond, guidance);
        z = scheduler_step(z, eps, step.coeffs, &keys(ids, Stream::Ancestral(step.index as u32)));
    }
    z
}

/// Noises scaled latents to the level of `steps[0]` and denoises them through `steps`.
pub fn denoise<B: DaceBackend + DiffusionKernels>(
    unet: &UNet2DConditionModel<B>,
    latents: Tensor<B, 4>,
    cond: &Cond<B>,
    guidance: Option<&Guidance<B>>,
    steps: &[DenoiseStep],
    ids: &[NoiseId],
) -> Tensor<B, 4> {
    let Some(first) = steps.first() else { return latents };
    let z = add_noise(latents, first.add_noise, &keys(ids, Stream::AddNoise));
    run_steps(unet, z, cond, guidance, steps, ids)
}

/// Text-to-image (class-to-image) sampling: pure noise of standard deviation `init_sigma`
/// (stream `AddNoise`) denoised through the full `steps`; returns scaled latents.
pub fn sample_latents<B: DaceBackend + DiffusionKernels>(
    unet: &UNet2DConditionModel<B>,
    shape: [usize; 3],
    cond: &Cond<B>,
    guidance: Option<&Guidance<B>>,
    steps: &[DenoiseStep],
    init_sigma: f64,
    ids: &[NoiseId],
) -> Tensor<B, 4> {
    let [c, h, w] = shape;
    let z = normals::<B, 4>(ids, Stream::AddNoise, [ids.len(), c, h, w], &cond.context.device()).mul_scalar(init_sigma);
    run_steps(unet, z, cond, guidance, steps, ids)
}

/// Images in [-1, 1] -> encode -> noise to `steps[0]` -> denoise -> decode.
pub fn img2img<B: DaceBackend + DiffusionKernels>(
    vae: &AutoencoderKL<B>,
    unet: &UNet2DConditionModel<B>,
    images: Tensor<B, 4>,
    cond: &Cond<B>,
    guidance: Option<&Guidance<B>>,
    steps: &[DenoiseStep],
    scaling_factor: f64,
    ids: &[NoiseId],
) -> Tensor<B, 4> {
    let z0 = encode_latents(vae, images, scaling_factor, ids);
    let z = denoise(unet, z0, cond, guidance, steps, ids);
    vae.decode(z.div_scalar(scaling_factor))
}

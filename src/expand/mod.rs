//! Diffusion-augmented coreset expansion (paper §3.2–3.4): the expander and the regenerator.
//!
//! One expansion is a pure function of (prior, patch set, settings, seed, item): upsample the
//! patch to the prior's image size, VAE-encode (a posterior sample), optionally mix the latent
//! with a same-class partner's, noise it to strength `rho`, denoise, decode, quantise to u8. Every
//! random draw comes from the item's named Philox streams (docs/FORMAT.md), so the student side
//! regenerates the exact images the teacher labelled, on any device. The settings themselves are
//! the package format's ([`crate::package::settings`]).

use burn::prelude::*;

use crate::data::transform::resize_bilinear;
use crate::error::{DaceError, Result};
use crate::kernels::diffusion::{latent_lerp, DiffusionKernels};
use crate::kernels::DaceBackend;
use crate::package::{ExpandConfig, Manifest, Mode};
use crate::prior::bundle::Prior;
use crate::prior::pipeline::{self, keys, Guidance, NoiseId};
use crate::prior::scheduler::{self, DenoiseStep, ScheduleConfig};
use crate::rng::{SeedRng, Stream};

/// `[c, h, w]` u8 patches upsampled to `[c, oh, ow]` in `[-1, 1]` (bilinear, half-pixel centres).
pub fn upsample_patches(patches: &[u8], [c, ph, pw]: [usize; 3], [oh, ow]: [usize; 2]) -> Vec<f32> {
    let plen = c * ph * pw;
    let mut out = vec![0f32; patches.len() / plen.max(1) * c * oh * ow];
    for (p, dst) in patches.chunks(plen).zip(out.chunks_mut(c * oh * ow)) {
        let src: Vec<f32> = p.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        resize_bilinear(&src, c, ph, pw, oh, ow, dst);
    }
    out
}

/// `[-1, 1]` -> u8, round half away from zero (NaN is refused by the caller).
pub fn quantize(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Regenerates expansions of a fixed patch set with a loaded prior.
pub struct Expander<'a, B: DaceBackend + DiffusionKernels> {
    prior: Option<&'a Prior<B>>,
    config: ExpandConfig,
    steps: Vec<DenoiseStep>,
    init_sigma: f64,
    upsampled: Vec<f32>,
    classes: Vec<u32>,
    by_class: Vec<Vec<usize>>,
    shape: [usize; 3],
    batch: usize,
    device: B::Device,
}

impl<'a, B: DaceBackend + DiffusionKernels> Expander<'a, B> {
    /// `patches`: u8 `[c, ph, pw]` back to back, one class per patch; `image_size`: the full
    /// `[h, w]` the expansions have. `prior` may be `None` only for [`Mode::Upsample`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prior: Option<&'a Prior<B>>,
        config: ExpandConfig,
        patches: &[u8],
        patch_shape: [usize; 3],
        image_size: [usize; 2],
        classes: Vec<u32>,
        batch: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let steps = config.plan()?;
        let [c, ph, pw] = patch_shape;
        if patches.len() != classes.len() * c * ph * pw {
            return Err(DaceError::Invalid(format!("{} patch bytes for {} patches of {c}x{ph}x{pw}", patches.len(), classes.len())));
        }
        let num_classes = classes.iter().map(|&k| k as usize + 1).max().unwrap_or(0);
        if config.mode != Mode::Upsample {
            let Some(p) = prior else {
                return Err(DaceError::Invalid(format!("expansion mode {:?} needs a prior", config.mode)));
            };
            let [pc, h, w] = p.index.image_shape;
            if [pc, h, w] != [c, image_size[0], image_size[1]] {
                return Err(DaceError::Invalid(format!(
                    "the prior works on {pc}x{h}x{w} images, the patches expand to {c}x{}x{}",
                    image_size[0], image_size[1]
                )));
            }
            let loaded = p.unet.dtype();
            if loaded != config.unet_dtype.float() {
                return Err(DaceError::Invalid(format!(
                    "the prior's UNet is loaded in {loaded:?}, but these expansions are made with it in {}: load it with `Prior::with_unet_dtype`",
                    config.unet_dtype.name()
                )));
            }
            if num_classes > p.index.classes.len() {
                return Err(DaceError::Invalid(format!(
                    "patch class {} is outside the prior's {} classes",
                    num_classes - 1,
                    p.index.classes.len()
                )));
            }
        }
        let mut by_class = vec![Vec::new(); num_classes];
        for (i, &k) in classes.iter().enumerate() {
            by_class[k as usize].push(i);
        }
        let init_sigma = scheduler::init_noise_sigma(&ScheduleConfig::default(), config.sampler(), config.steps.max(1));
        Ok(Expander {
            prior,
            config,
            steps,
            init_sigma,
            upsampled: upsample_patches(patches, patch_shape, image_size),
            classes,
            by_class,
            shape: [c, image_size[0], image_size[1]],
            batch: batch.max(1),
            device: device.clone(),
        })
    }

    /// The expander of a package's (or a distillation's) manifest and patches.
    pub fn for_manifest(prior: Option<&'a Prior<B>>, m: &Manifest, patches: &[u8], batch: usize, device: &B::Device) -> Result<Self> {
        Self::new(
            prior,
            m.expansion.clone(),
            patches,
            [m.channels, m.patch_size[0], m.patch_size[1]],
            m.image_size,
            m.items.clone(),
            batch,
            device,
        )
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    pub fn config(&self) -> &ExpandConfig {
        &self.config
    }

    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The mixup partner and gamma of `item` under `seed`: a uniform other patch of its class
    /// (stream `MixupPartner`) and `g = a + (b - a) u` (stream `MixupGamma`). `None` without
    /// mixup or when the class has one patch.
    pub fn mixup_choice(&self, item: usize, seed: u64) -> Option<(usize, f32)> {
        let [a, b] = self.config.mixup?;
        let same = &self.by_class[self.classes[item] as usize];
        if same.len() < 2 {
            return None;
        }
        let pick = SeedRng::new(seed, item as u64, Stream::MixupPartner).below_at(0, (same.len() - 1) as u32) as usize;
        // Uniform over the class's other patches: skip the item itself.
        let own = same.iter().position(|&j| j == item).expect("item in its class");
        let partner = same[if pick >= own { pick + 1 } else { pick }];
        let g = a + (b - a) * SeedRng::new(seed, item as u64, Stream::MixupGamma).uniform_at(0);
        Some((partner, g))
    }

    fn upsampled(&self, items: &[usize]) -> Tensor<B, 4> {
        let len = self.image_len();
        let data: Vec<f32> = items.iter().flat_map(|&i| self.upsampled[i * len..(i + 1) * len].iter().copied()).collect();
        let [c, h, w] = self.shape;
        Tensor::from_data(TensorData::new(data, [items.len(), c, h, w]), &self.device)
    }

    /// Expansions of `items` under `seed` as one batch on the device, `[-1, 1]` before rounding
    /// to u8 (for callers that read results back asynchronously, like the browser demo).
    pub fn expand_tensor(&self, items: &[usize], seed: u64) -> Tensor<B, 4> {
        let x = self.upsampled(items);
        let Some(prior) = self.prior.filter(|_| self.config.mode != Mode::Upsample) else { return x };
        let ids: Vec<NoiseId> = items.iter().map(|&i| NoiseId { seed, item: i as u64 }).collect();
        let class_ids: Vec<usize> = items.iter().map(|&i| self.classes[i] as usize).collect();
        let ctx = prior.cond(&class_ids, &self.device);
        let g = Guidance { uncond: prior.cond(&vec![prior.classes.null_class(); items.len()], &self.device), scale: self.config.guidance };
        let guidance = (self.config.guidance != 1.0).then_some(&g);
        let sf = prior.vae_config.scaling_factor;
        let z = match self.config.mode {
            Mode::Upsample => unreachable!("handled above"),
            Mode::Generate => {
                pipeline::sample_latents(&prior.unet, prior.latent_shape(), &ctx, guidance, &self.steps, self.init_sigma, &ids)
            }
            Mode::Img2img => {
                let z1 = pipeline::encode_latents(&prior.vae, x, sf, &ids);
                let choices: Vec<Option<(usize, f32)>> = items.iter().map(|&i| self.mixup_choice(i, seed)).collect();
                if self.config.mixup.is_some() {
                    // The partner's latent is its own posterior sample under the same seed; items
                    // without a partner mix with themselves (g = 1).
                    let partners: Vec<usize> = items.iter().zip(&choices).map(|(&i, ch)| ch.map_or(i, |c| c.0)).collect();
                    let gammas: Vec<f32> = choices.iter().map(|ch| ch.map_or(1.0, |c| c.1)).collect();
                    let pids: Vec<NoiseId> = partners.iter().map(|&p| NoiseId { seed, item: p as u64 }).collect();
                    let z2 = pipeline::encode_latents(&prior.vae, self.upsampled(&partners), sf, &pids);
                    let first = self.steps[0];
                    let z = latent_lerp(z1, z2, &gammas, first.add_noise, &keys(&ids, Stream::AddNoise));
                    pipeline::run_steps(&prior.unet, z, &ctx, guidance, &self.steps, &ids)
                } else {
                    pipeline::denoise(&prior.unet, z1, &ctx, guidance, &self.steps, &ids)
                }
            }
        };
        prior.vae.decode(z.div_scalar(sf))
    }

    /// u8 CHW expansions of `items` under `seed`, back to back, in batches of the configured size.
    /// Batch composition does not change an item's noise; it may change the last bits of floats on
    /// some backends, so regenerate with the same batch size for bit-identical results.
    pub fn expand(&self, items: &[usize], seed: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(items.len() * self.image_len());
        for chunk in items.chunks(self.batch) {
            let v: Vec<f32> =
                self.expand_tensor(chunk, seed).into_data().to_vec().map_err(|e| DaceError::Invalid(format!("expansion output: {e:?}")))?;
            if let Some(pos) = v.iter().position(|x| !x.is_finite()) {
                let item = chunk[pos / self.image_len()];
                return Err(DaceError::Invalid(format!("the prior produced non-finite pixels for item {item} under seed {seed}")));
            }
            out.extend(v.iter().map(|&p| quantize(p)));
        }
        Ok(out)
    }

    /// Every item's expansion under `seed`.
    pub fn expand_all(&self, seed: u64) -> Result<Vec<u8>> {
        let items: Vec<usize> = (0..self.len()).collect();
        self.expand(&items, seed)
    }
}

/// Each epoch's images regenerated from its seed, kept in memory (never on disk) so that later
/// epochs reusing a seed, and further students of the same package, do not pay for them again.
pub struct Regenerator<'a, B: DaceBackend + DiffusionKernels> {
    expander: Expander<'a, B>,
    cache: Vec<Option<std::sync::Arc<Vec<u8>>>>,
    /// Time spent regenerating and the number of images regenerated.
    pub seconds: f64,
    pub images: usize,
}

impl<'a, B: DaceBackend + DiffusionKernels> Regenerator<'a, B> {
    pub fn new(expander: Expander<'a, B>, seeds: usize) -> Self {
        Regenerator { expander, cache: vec![None; seeds], seconds: 0.0, images: 0 }
    }

    pub fn expander(&self) -> &Expander<'a, B> {
        &self.expander
    }

    /// Stores images made elsewhere (by `distill` in the same process) as seed number `s`'s.
    pub fn prefill(&mut self, s: usize, images: std::sync::Arc<Vec<u8>>) {
        if let Some(slot) = self.cache.get_mut(s) {
            *slot = Some(images);
        }
    }

    /// Every item's expansion under seed number `s` (= `seed`).
    pub fn epoch(&mut self, s: usize, seed: u64) -> Result<std::sync::Arc<Vec<u8>>> {
        if let Some(Some(images)) = self.cache.get(s) {
            return Ok(images.clone());
        }
        let t = std::time::Instant::now();
        let images = std::sync::Arc::new(self.expander.expand_all(seed)?);
        self.seconds += t.elapsed().as_secs_f64();
        self.images += self.expander.len();
        if let Some(slot) = self.cache.get_mut(s) {
            *slot = Some(images.clone());
        }
        Ok(images)
    }
}

//! Diffusion-augmented coreset expansion (paper §3.2–3.4, ../shared/NOTES.md §1, §4).
//!
//! One expansion is a pure function of (prior, patch set, settings, seed, item): upsample the
//! patch to the prior's image size, VAE-encode (a posterior sample), optionally mix the latent
//! with a same-class partner's, noise it to strength `rho`, denoise, decode, quantise to u8. Every
//! random draw comes from the item's named Philox streams (docs/FORMAT.md), so the student side
//! regenerates the exact images the teacher labelled, on any device.

pub mod distill;
pub mod student;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DaceError, Result};
use crate::kernels::diffusion::{latent_lerp, DiffusionKernels};
use crate::kernels::DaceBackend;
use crate::prior::bundle::Prior;
use crate::prior::pipeline::{self, keys, Guidance, NoiseId};
use crate::prior::scheduler::{self, DdimConfig, DenoiseStep, Sampler, ScheduleConfig};
use crate::rng::{SeedRng, Stream};
use crate::student::augment::resize_bilinear;

/// The paper's ablation rows (Table 4), as presets of [`ExpandConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// No diffusion: each patch bilinearly upsampled (RDED's patches, the paper's layout).
    Rded,
    /// No patches: class-conditional samples from pure noise (the paper's "text only").
    CondOnly,
    /// img2img at rho = 0.4: mostly super-resolution.
    Sr,
    /// img2img at rho = 0.8: super-resolution plus semantic variation.
    SrAug,
    /// rho = 0.8 with same-class latent mixup.
    SrAugMixup,
}

impl Variant {
    pub const ALL: [Variant; 5] = [Variant::Rded, Variant::CondOnly, Variant::Sr, Variant::SrAug, Variant::SrAugMixup];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Rded => "rded",
            Variant::CondOnly => "cond-only",
            Variant::Sr => "sr",
            Variant::SrAug => "sr-aug",
            Variant::SrAugMixup => "sr-aug-mixup",
        }
    }
}

/// Where an expansion starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The upsampled patch itself (no prior needed).
    Upsample,
    /// img2img from the upsampled patch.
    Img2img,
    /// Pure noise, conditioned on the patch's class only.
    Generate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// Euler ancestral, trailing spacing (SD-Turbo / SDXL-Turbo's scheduler).
    EulerA,
    /// Deterministic DDIM (eta 0), trailing spacing.
    Ddim,
}

/// The float type the UNet computes in during an expansion; the VAE always runs in f32
/// (diffusers' `force_upcast`). Half types halve the UNet's weight memory on a GPU; the CPU
/// computes them too (slower than f32), so a package regenerates the same on every device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UNetDType {
    #[default]
    F32,
    F16,
    Bf16,
}

impl UNetDType {
    pub fn float(self) -> burn::tensor::FloatDType {
        match self {
            UNetDType::F32 => burn::tensor::FloatDType::F32,
            UNetDType::F16 => burn::tensor::FloatDType::F16,
            UNetDType::Bf16 => burn::tensor::FloatDType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UNetDType::F32 => "f32",
            UNetDType::F16 => "f16",
            UNetDType::Bf16 => "bf16",
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == UNetDType::F32
    }
}

/// Everything that decides an expansion besides the prior, the patches and the seed. Stored in
/// the package manifest: changing any field changes the images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpandConfig {
    pub mode: Mode,
    /// img2img strength (diffusers semantics: `int(steps * rho)` of the `steps` run).
    pub rho: f64,
    /// Inference steps of the full schedule.
    pub steps: usize,
    pub scheduler: SchedulerKind,
    /// Classifier-free guidance scale; 1 = none (one UNet pass per step, Turbo's setting).
    pub guidance: f32,
    /// Same-class latent mixup `z = g z_item + (1 - g) z_partner`, `g` uniform in this range.
    pub mixup: Option<[f32; 2]>,
    /// The UNet's compute type (absent from manifests of f32 packages, which predate it).
    #[serde(default, skip_serializing_if = "UNetDType::is_f32")]
    pub unet_dtype: UNetDType,
}

impl ExpandConfig {
    /// The preset of an ablation row, with `steps` inference steps of `scheduler`.
    pub fn variant(v: Variant, steps: usize, scheduler: SchedulerKind, gamma: [f32; 2]) -> Self {
        let base = ExpandConfig { mode: Mode::Img2img, rho: 0.8, steps, scheduler, guidance: 1.0, mixup: None, unet_dtype: UNetDType::F32 };
        match v {
            Variant::Rded => ExpandConfig { mode: Mode::Upsample, rho: 0.0, ..base },
            Variant::CondOnly => ExpandConfig { mode: Mode::Generate, rho: 1.0, ..base },
            Variant::Sr => ExpandConfig { rho: 0.4, ..base },
            Variant::SrAug => base,
            Variant::SrAugMixup => ExpandConfig { mixup: Some(gamma), ..base },
        }
    }

    fn sampler(&self) -> Sampler {
        match self.scheduler {
            SchedulerKind::EulerA => Sampler::EulerAncestral,
            SchedulerKind::Ddim => Sampler::Ddim(DdimConfig::default()),
        }
    }

    /// Checks the settings and returns the denoising steps to run (empty for `Upsample`).
    pub fn plan(&self) -> Result<Vec<DenoiseStep>> {
        let err = |why: String| DaceError::Invalid(format!("expansion settings {self:?}: {why}"));
        let bad = |why: String| Err(err(why));
        if let Some([a, b]) = self.mixup {
            if !(0.0..=1.0).contains(&a) || !(0.0..=1.0).contains(&b) || a > b {
                return bad(format!("mixup gamma range [{a}, {b}] must satisfy 0 <= a <= b <= 1"));
            }
            if self.mode != Mode::Img2img {
                return bad("mixup needs img2img (it mixes the patches' latents)".into());
            }
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return bad("guidance must be a finite number >= 0".into());
        }
        let cfg = ScheduleConfig::default();
        match self.mode {
            Mode::Upsample => Ok(Vec::new()),
            Mode::Generate => {
                cfg.validate(self.steps).map_err(err)?;
                Ok(scheduler::plan(&cfg, self.sampler(), self.steps))
            }
            Mode::Img2img => {
                cfg.validate(self.steps).map_err(err)?;
                if !(self.rho > 0.0 && self.rho <= 1.0) {
                    return bad("rho must be in (0, 1]".into());
                }
                match scheduler::img2img_plan(&cfg, self.sampler(), self.steps, self.rho) {
                    Some(steps) => Ok(steps),
                    None => bad(format!("rho {} runs no step of a {}-step schedule", self.rho, self.steps)),
                }
            }
        }
    }

    /// The ablation name of these settings ("sr-aug-mixup"), or a description.
    pub fn name(&self) -> String {
        match (self.mode, self.mixup) {
            (Mode::Upsample, _) => "rded".into(),
            (Mode::Generate, _) => "cond-only".into(),
            (Mode::Img2img, None) if self.rho <= 0.5 => format!("sr (rho {})", self.rho),
            (Mode::Img2img, None) => format!("sr-aug (rho {})", self.rho),
            (Mode::Img2img, Some(_)) => format!("sr-aug-mixup (rho {})", self.rho),
        }
    }
}

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
            return Err(DaceError::Invalid(format!(
                "{} patch bytes for {} patches of {c}x{ph}x{pw}",
                patches.len(),
                classes.len()
            )));
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
                return Err(DaceError::Invalid(format!("patch class {} is outside the prior's {} classes", num_classes - 1, p.index.classes.len())));
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
    pub fn for_manifest(prior: Option<&'a Prior<B>>, m: &crate::package::Manifest, patches: &[u8], batch: usize, device: &B::Device) -> Result<Self> {
        Self::new(prior, m.expansion.clone(), patches, [m.channels, m.patch_size[0], m.patch_size[1]], m.image_size, m.items.clone(), batch, device)
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
            Mode::Generate => pipeline::sample_latents(&prior.unet, prior.latent_shape(), &ctx, guidance, &self.steps, self.init_sigma, &ids),
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
            let v: Vec<f32> = self
                .expand_tensor(chunk, seed)
                .into_data()
                .to_vec()
                .map_err(|e| DaceError::Invalid(format!("expansion output: {e:?}")))?;
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

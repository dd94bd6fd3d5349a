//! The settings a package records (docs/FORMAT.md, `manifest.json`): how each patch is expanded,
//! how each expansion is augmented before the teacher labels it, and the seeds and label
//! encoding. They live with the format, not with the code that acts on them, so that the
//! expander, the distiller and the student all read the same definitions.

use serde::{Deserialize, Serialize};

use super::labels::LabelEncoding;
use crate::error::{DaceError, Result};
use crate::prior::scheduler::{self, DdimConfig, DenoiseStep, Sampler, ScheduleConfig};

/// The paper's ablation rows (Table 4), as presets of [`ExpandConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The upsampled patch itself (no prior needed).
    Upsample,
    /// img2img from the upsampled patch.
    Img2img,
    /// Pure noise, conditioned on the patch's class only.
    Generate,
}

impl Mode {
    /// The name FORMAT.md and the manifest use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Upsample => "upsample",
            Mode::Img2img => "img2img",
            Mode::Generate => "generate",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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

    pub fn sampler(&self) -> Sampler {
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

/// The seeded augmentation applied to each expansion before the teacher labels it (and by the
/// student before it trains on it): RDED's ShufflePatches, RandomResizedCrop, flip and CutMix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Smallest area fraction of RandomResizedCrop (largest is 1; aspect ratio in [3/4, 4/3]).
    /// 1.0 disables the crop.
    pub crop_scale_min: f32,
    pub flip: bool,
    /// CutMix with lambda ~ U(0, 1) (Beta(1, 1)) and a partner drawn from the whole set.
    pub cutmix: bool,
    /// Shuffle the `r x r` cells of a collage (RDED's ShufflePatches); 1 = off.
    pub shuffle_factor: usize,
}

impl AugmentConfig {
    pub fn none() -> Self {
        AugmentConfig { crop_scale_min: 1.0, flip: false, cutmix: false, shuffle_factor: 1 }
    }
}

/// What a distillation is asked to do besides its inputs (coreset, prior, teacher): the package's
/// settings, which `Manifest::new` combines with the inputs into a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct PackageSettings {
    pub expansion: ExpandConfig,
    pub augment: AugmentConfig,
    /// `seeds[s]` makes row block `s` of the labels.
    pub seeds: Vec<u64>,
    pub labels: LabelEncoding,
    /// Expansion batch size while labelling (regeneration with the same is bit-identical).
    pub batch: usize,
    /// The size the prior works at; `None`: the student's image size (as before the option).
    pub prior_size: Option<[usize; 2]>,
}

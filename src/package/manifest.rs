//! `manifest.json` (docs/FORMAT.md, "manifest.json"): what a package holds and how its images are
//! regenerated, built in one place from the distillation's inputs and checked for consistency
//! whenever one is built, written or read.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::labels::LabelEncoding;
use super::settings::{AugmentConfig, ExpandConfig, Mode, PackageSettings};
use crate::coreset::CoresetMeta;
use crate::error::{DaceError, Result};
use crate::kernels::DaceBackend;
use crate::prior::bundle::Prior;
use crate::train::Normalization;

pub const FORMAT: &str = "dace-package/1";
/// The largest side a prior may work at (SDXL works at 1024; 4096 leaves room, and refuses
/// sizes that would only exhaust memory).
pub const MAX_PRIOR_SIDE: usize = 4096;
/// The RNG scheme of docs/FORMAT.md the seeds are interpreted with.
pub const RNG_SCHEME: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorRef {
    /// `prior::bundle::fingerprint` of the prior the expansions were made with.
    pub fingerprint: String,
    pub dataset: String,
    /// The VAE's downsampling factor, which `prior_size` must be a multiple of. Recorded with a
    /// `prior_size` only (absent otherwise, as in packages that predate it), so that the manifest
    /// of a prior working at the student's size is what it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_factor: Option<usize>,
}

impl PriorRef {
    pub fn of<B: DaceBackend>(prior: &Prior<B>) -> Self {
        PriorRef {
            fingerprint: prior.fingerprint.clone(),
            dataset: prior.index.dataset.clone(),
            vae_factor: Some(prior.vae_config.downscale()),
        }
    }
}

/// The three resolutions of a package (docs/FORMAT.md, "Resolutions"), `[h, w]` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolutions {
    /// The student's (and the teacher's) images: what an expansion is delivered at.
    pub image_size: [usize; 2],
    /// The stored patches: `image_size / factor`.
    pub patch_size: [usize; 2],
    /// Where the prior works: a patch is upsampled to it, diffused, and the decoded image resized
    /// to `image_size`.
    pub prior_size: [usize; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherRef {
    pub fingerprint: String,
    pub arch: String,
    pub test_accuracy: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub rng_scheme: u32,
    pub dataset: String,
    pub classes: Vec<String>,
    pub channels: usize,
    /// Size of the regenerated images `[h, w]` (the student's).
    pub image_size: [usize; 2],
    pub patch_size: [usize; 2],
    /// The size the prior works at, when it is not `image_size` (absent = `image_size`: every
    /// package before this field, and every one whose prior works at the student's size, so
    /// their manifests and images are unchanged). Read it with [`Manifest::prior_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_size: Option<[usize; 2]>,
    pub ipc: usize,
    pub factor: usize,
    /// Class of each patch, in file order.
    pub items: Vec<u32>,
    /// Input normalisation of the student (the teacher's).
    pub normalization: Normalization,
    /// `None` only for the `rded` variant (plain upsampling, no prior).
    pub prior: Option<PriorRef>,
    pub expansion: ExpandConfig,
    /// Expansion batch size used for the labels (regenerate with the same for bit-identical floats).
    pub batch: usize,
    /// The seeded augmentation applied to each expansion before the teacher labelled it.
    pub augment: AugmentConfig,
    /// `seeds[s]` regenerates row block `s` of the labels (and is epoch `s` of the student).
    pub seeds: Vec<u64>,
    pub labels: LabelEncoding,
    pub teacher: TeacherRef,
    /// Size and sha256 of each data file; empty until the package is written.
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// The manifest of a distillation of `coreset` with `settings`, labelled by `teacher` (whose
    /// input normalisation the student inherits), expanded with `prior` (required unless the
    /// expansion mode is `upsample`, ignored then). Checked as a loader checks it.
    pub fn new(
        coreset: &CoresetMeta,
        settings: PackageSettings,
        teacher: TeacherRef,
        normalization: Normalization,
        prior: Option<PriorRef>,
    ) -> Result<Self> {
        let PackageSettings { expansion, augment, seeds, labels, batch, prior_size } = settings;
        // Recorded only where it differs from the student's size (see the field).
        let prior_size = prior_size.filter(|&s| s != coreset.image_size);
        let prior = match (expansion.mode, prior) {
            (Mode::Upsample, _) => None,
            (_, Some(p)) => Some(PriorRef { vae_factor: p.vae_factor.filter(|_| prior_size.is_some()), ..p }),
            (_, None) => return Err(DaceError::Invalid(format!("expansion `{}` needs a prior (--prior)", expansion.name()))),
        };
        let manifest = Manifest {
            format: FORMAT.into(),
            rng_scheme: RNG_SCHEME,
            dataset: coreset.dataset.clone(),
            classes: coreset.classes.clone(),
            channels: coreset.channels,
            image_size: coreset.image_size,
            patch_size: coreset.patch_size,
            prior_size,
            ipc: coreset.config.ipc,
            factor: coreset.config.factor,
            items: coreset.patches.iter().map(|p| p.class).collect(),
            normalization,
            prior,
            expansion,
            batch,
            augment,
            seeds,
            labels,
            teacher,
            files: BTreeMap::new(),
        };
        manifest.validate().map_err(|why| DaceError::Invalid(format!("package manifest: {why}")))?;
        Ok(manifest)
    }

    pub fn patch_len(&self) -> usize {
        self.channels * self.patch_size[0] * self.patch_size[1]
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.image_size[0] * self.image_size[1]
    }

    /// The size the prior works at (`image_size` when the manifest does not record one).
    pub fn prior_size(&self) -> [usize; 2] {
        self.prior_size.unwrap_or(self.image_size)
    }

    pub fn resolutions(&self) -> Resolutions {
        Resolutions { image_size: self.image_size, patch_size: self.patch_size, prior_size: self.prior_size() }
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Patches of each class: `ipc * r^2`.
    pub fn patches_per_class(&self) -> usize {
        self.ipc * self.factor * self.factor
    }

    /// A short description ("fashion-mnist ipc 1 r 2 sr-aug (rho 0.8), 300 seeds").
    pub fn description(&self) -> String {
        format!("{} ipc {} r {} {}, {} seeds", self.dataset, self.ipc, self.factor, self.expansion.name(), self.seeds.len())
    }

    /// Refuses a prior other than the one the package was made with.
    pub fn check_prior(&self, fingerprint: Option<&str>) -> Result<()> {
        match (&self.prior, fingerprint) {
            (None, _) => Ok(()),
            (Some(p), Some(f)) if p.fingerprint == f => Ok(()),
            (Some(p), Some(f)) => Err(DaceError::Invalid(format!(
                "the package was made with prior {} (of `{}`), this prior is {}: regeneration would not match the stored labels",
                short(&p.fingerprint),
                p.dataset,
                short(f)
            ))),
            (Some(p), None) => Err(DaceError::Invalid(format!(
                "the package needs its prior ({} of `{}`) to regenerate its images: pass --prior",
                short(&p.fingerprint),
                p.dataset
            ))),
        }
    }

    /// Checks that the manifest agrees with itself, in the order of docs/FORMAT.md; the error
    /// names the fields that disagree. File sizes and hashes are the loader's to check.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.check_versions()?;
        self.check_shapes()?;
        self.check_items()?;
        self.check_normalization()?;
        self.check_prior_field()?;
        self.check_prior_size()?;
        self.check_expansion()?;
        if self.batch == 0 {
            return Err("`batch` is 0: the expansion batch size must be at least 1".into());
        }
        self.check_augment()?;
        self.check_seeds()?;
        self.check_labels()
    }

    fn check_versions(&self) -> std::result::Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("`format` is `{}`, this dace reads `{FORMAT}`", self.format));
        }
        if self.rng_scheme != RNG_SCHEME {
            return Err(format!("`rng_scheme` is {}, this dace implements scheme {RNG_SCHEME}", self.rng_scheme));
        }
        Ok(())
    }

    fn check_shapes(&self) -> std::result::Result<(), String> {
        if self.classes.is_empty() {
            return Err("`classes` is empty".into());
        }
        if self.channels == 0 || self.image_size.contains(&0) {
            return Err(format!("`channels` {} and `image_size` {:?} must be at least 1", self.channels, self.image_size));
        }
        if self.ipc == 0 || self.factor == 0 {
            return Err(format!("`ipc` ({}) and `factor` ({}) must be at least 1", self.ipc, self.factor));
        }
        let r = self.factor;
        if self.patch_size != [self.image_size[0] / r, self.image_size[1] / r] || self.patch_len() == 0 {
            return Err(format!("`patch_size` {:?} is not `image_size` {:?} / `factor` {r}", self.patch_size, self.image_size));
        }
        Ok(())
    }

    /// `items`: exactly `ipc * r^2` patches of every class, classes in order.
    fn check_items(&self) -> std::result::Result<(), String> {
        let per_class = self.patches_per_class();
        let expected = per_class * self.num_classes();
        if let Some(pos) = self.items.iter().position(|&k| k as usize >= self.num_classes()) {
            return Err(format!("`items[{pos}]` is class {}, outside the {} `classes`", self.items[pos], self.num_classes()));
        }
        if self.items.len() != expected {
            return Err(format!(
                "`items` lists {} patches, `ipc` {} x `factor`^2 {} x {} `classes` = {expected}",
                self.items.len(),
                self.ipc,
                self.factor * self.factor,
                self.num_classes()
            ));
        }
        if let Some(pos) = self.items.iter().enumerate().position(|(i, &k)| k as usize != i / per_class) {
            return Err(format!(
                "`items[{pos}]` is class {}, but with {per_class} patches per class (`ipc` x `factor`^2) in class order it must be class {}",
                self.items[pos],
                pos / per_class
            ));
        }
        Ok(())
    }

    fn check_normalization(&self) -> std::result::Result<(), String> {
        let n = &self.normalization;
        if n.mean.len() != self.channels || n.std.len() != self.channels {
            return Err(format!("`normalization` has {} means and {} stds for {} `channels`", n.mean.len(), n.std.len(), self.channels));
        }
        if n.mean.iter().any(|m| !m.is_finite()) || n.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("`normalization` {:?}: means must be finite and stds finite and > 0", n));
        }
        Ok(())
    }

    /// img2img and generate regenerate with a prior, so they must name it; upsample must not.
    fn check_prior_field(&self) -> std::result::Result<(), String> {
        match (self.expansion.mode, &self.prior) {
            (Mode::Upsample, Some(_)) => Err("`expansion.mode` is \"upsample\", which uses no prior, but `prior` names one".into()),
            (Mode::Upsample, None) => Ok(()),
            (mode, None) => Err(format!("`expansion.mode` is {:?}, which regenerates with a prior, but `prior` is null", mode.name())),
            (mode, Some(p)) if p.fingerprint.trim().is_empty() => {
                Err(format!("`expansion.mode` is {:?}, but `prior.fingerprint` is empty", mode.name()))
            }
            _ => Ok(()),
        }
    }

    /// `prior_size`: a size the prior can work at, that a patch is upsampled to, and none at all
    /// for `upsample`, which has no prior (the patch goes straight to `image_size`).
    fn check_prior_size(&self) -> std::result::Result<(), String> {
        let size = self.prior_size();
        let [ph, pw] = self.patch_size;
        if let Some(s) = self.prior_size {
            if s.iter().any(|&side| side == 0 || side > MAX_PRIOR_SIDE) {
                return Err(format!("`prior_size` {s:?}: each side must be in 1..={MAX_PRIOR_SIDE}"));
            }
        }
        if size == self.image_size {
            return self.check_vae_factor(size);
        }
        if self.expansion.mode == Mode::Upsample {
            return Err(format!(
                "`prior_size` is {size:?}, but `expansion.mode` is \"upsample\", which uses no prior: its patches are upsampled to `image_size` {:?}",
                self.image_size
            ));
        }
        if size[0] < ph || size[1] < pw {
            return Err(format!("`prior_size` {size:?} is smaller than `patch_size` {:?}: a patch is upsampled to it", self.patch_size));
        }
        if self.prior.as_ref().is_some_and(|p| p.vae_factor.is_none()) {
            return Err(format!("`prior_size` is {size:?}, but `prior.vae_factor` is missing: it is recorded with every `prior_size`"));
        }
        self.check_vae_factor(size)
    }

    /// A recorded VAE factor is at least 1 and divides both sides of `size`.
    fn check_vae_factor(&self, size: [usize; 2]) -> std::result::Result<(), String> {
        match self.prior.as_ref().and_then(|p| p.vae_factor) {
            Some(0) => Err("`prior.vae_factor` is 0: at least 1".into()),
            Some(f) if size.iter().any(|s| s % f != 0) => {
                let name = if self.prior_size.is_some() { "`prior_size`" } else { "`image_size` (the working size without `prior_size`)" };
                Err(format!("{name} {size:?} is not a multiple of `prior.vae_factor` {f}, the VAE's downsampling factor"))
            }
            _ => Ok(()),
        }
    }

    fn check_expansion(&self) -> std::result::Result<(), String> {
        let e = &self.expansion;
        if e.steps == 0 {
            return Err("`expansion.steps` is 0: at least 1".into());
        }
        if e.mode == Mode::Img2img && !(e.rho > 0.0 && e.rho <= 1.0) {
            return Err(format!("`expansion.rho` is {}: img2img needs it in (0, 1]", e.rho));
        }
        if let Some([a, b]) = e.mixup {
            if !((0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b) && a <= b) {
                return Err(format!("`expansion.mixup` is [{a}, {b}]: needs 0 <= a <= b <= 1"));
            }
        }
        // The schedule's own limits (steps within the training schedule, rho running a step).
        e.plan().map(|_| ()).map_err(|err| format!("`expansion`: {err}"))
    }

    fn check_augment(&self) -> std::result::Result<(), String> {
        let a = &self.augment;
        if !(a.crop_scale_min > 0.0 && a.crop_scale_min <= 1.0) {
            return Err(format!("`augment.crop_scale_min` is {}: needs (0, 1]", a.crop_scale_min));
        }
        if a.shuffle_factor == 0 {
            return Err("`augment.shuffle_factor` is 0: at least 1 (1 = off)".into());
        }
        Ok(())
    }

    fn check_seeds(&self) -> std::result::Result<(), String> {
        if self.seeds.is_empty() {
            return Err("`seeds` is empty".into());
        }
        let mut seen = HashSet::with_capacity(self.seeds.len());
        if let Some(pos) = self.seeds.iter().position(|s| !seen.insert(*s)) {
            return Err(format!("`seeds[{pos}]` ({}) repeats an earlier seed: seeds must be unique", self.seeds[pos]));
        }
        Ok(())
    }

    fn check_labels(&self) -> std::result::Result<(), String> {
        match self.labels {
            LabelEncoding::TopK { k } if k == 0 || k > self.num_classes() => {
                Err(format!("`labels` is top-{k}: k must be in 1..={} (`classes`)", self.num_classes()))
            }
            _ => Ok(()),
        }
    }
}

/// The first 12 characters of a fingerprint (a manifest is untrusted: never split a character).
pub(super) fn short(fingerprint: &str) -> &str {
    fingerprint.char_indices().nth(12).map_or(fingerprint, |(end, _)| &fingerprint[..end])
}

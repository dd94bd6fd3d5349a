//! The receiving side: a student trained on a package, every epoch's images regenerated from the
//! package's seeds with its prior, the targets the stored soft labels.

use burn::tensor::backend::AutodiffBackend;

use super::labels::{self, LabelsMeta, StoredLabels};
use super::{EpochSource, Labels, StudentCheckpoint, StudentConfig, StudentReport, TrainingSet};
use crate::data::Dataset;
use crate::error::{DaceError, Result};
use crate::expand::{Expander, Regenerator};
use crate::kernels::diffusion::DiffusionKernels;
use crate::kernels::{DaceBackend, TrainBackend};
use crate::models::{Arch, ClassifierConfig, NormKind};
use crate::package::Package;
use crate::prior::bundle::Prior;

/// Student settings for a package: RDED's recipe with the package's augmentation.
pub fn student_config(
    pkg: &Package,
    arch: Arch,
    norm: NormKind,
    epochs: usize,
    batch: Option<usize>,
    temperature: f64,
    seed: u64,
) -> StudentConfig {
    let m = &pkg.manifest;
    let model = ClassifierConfig::new(arch, m.channels, m.num_classes(), m.image_size).with_norm(norm);
    let batch = batch.unwrap_or_else(|| super::rded_batch_size(m.ipc, m.num_classes(), m.items.len()));
    StudentConfig::rded(model, epochs, batch, temperature, m.augment.clone(), seed)
}

/// Checks that `ds` is the dataset the package was distilled from (its test split evaluates).
pub fn check_dataset(pkg: &Package, ds: &Dataset) -> Result<()> {
    let m = &pkg.manifest;
    if m.dataset != ds.name || m.image_size != [ds.height, ds.width] || m.channels != ds.channels || m.classes != ds.classes {
        return Err(DaceError::Invalid(format!(
            "the package is of `{}` ({}x{}x{}, {} classes), the evaluation data is `{}` ({}x{}x{}, {} classes)",
            m.dataset,
            m.channels,
            m.image_size[0],
            m.image_size[1],
            m.classes.len(),
            ds.name,
            ds.channels,
            ds.height,
            ds.width,
            ds.classes.len()
        )));
    }
    Ok(())
}

/// The regenerator of a package's expansions with `prior` (checked against the manifest).
pub fn regenerator<'a, B: DaceBackend + DiffusionKernels>(
    pkg: &Package,
    prior: Option<&'a Prior<B>>,
    batch: Option<usize>,
    device: &B::Device,
) -> Result<Regenerator<'a, B>> {
    let m = &pkg.manifest;
    m.check_prior(prior.map(|p| p.fingerprint.as_str()))?;
    let expander = Expander::for_manifest(prior, m, &pkg.patches, batch.unwrap_or(m.batch), device)?;
    Ok(Regenerator::new(expander, m.seeds.len()))
}

/// [`regenerator`] on several devices of one backend, the prior loaded on each (`priors[i]` on
/// `devices[i]`; all `None` for packages without a prior): each epoch's batches are spread over
/// them ([`Regenerator::with_devices`]).
pub fn regenerator_on<'a, B: DaceBackend + DiffusionKernels>(
    pkg: &Package,
    priors: &'a [Option<Prior<B>>],
    batch: Option<usize>,
    devices: &[B::Device],
) -> Result<Regenerator<'a, B>> {
    if priors.is_empty() || priors.len() != devices.len() {
        return Err(DaceError::Invalid(format!("{} priors for {} devices", priors.len(), devices.len())));
    }
    let m = &pkg.manifest;
    let more = (1..devices.len())
        .map(|i| {
            m.check_prior(priors[i].as_ref().map(|p| p.fingerprint.as_str()))?;
            Expander::for_manifest(priors[i].as_ref(), m, &pkg.patches, batch.unwrap_or(m.batch), &devices[i])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(regenerator(pkg, priors[0].as_ref(), batch, &devices[0])?.with_devices(more))
}

/// Trains one student on `pkg`, its epochs' images from `regen` (shared between students of
/// the same package, so a seed is regenerated once per process).
pub fn train_on_package<B: TrainBackend>(
    pkg: &Package,
    regen: &mut Regenerator<'_, <B as AutodiffBackend>::InnerBackend>,
    config: &StudentConfig,
    ds: &Dataset,
    device: &B::Device,
) -> Result<StudentReport>
where
    <B as AutodiffBackend>::InnerBackend: DiffusionKernels,
{
    train_on_package_checkpointed::<B>(pkg, regen, config, ds, None, false, device)
}

/// [`train_on_package`] saving every epoch into `checkpoint` (and resuming from it where allowed),
/// the next epoch's images regenerated on another thread while one trains when `prefetch`.
pub fn train_on_package_checkpointed<B: TrainBackend>(
    pkg: &Package,
    regen: &mut Regenerator<'_, <B as AutodiffBackend>::InnerBackend>,
    config: &StudentConfig,
    ds: &Dataset,
    checkpoint: Option<&StudentCheckpoint>,
    prefetch: bool,
    device: &B::Device,
) -> Result<StudentReport>
where
    <B as AutodiffBackend>::InnerBackend: DiffusionKernels,
{
    check_dataset(pkg, ds)?;
    let set = TrainingSet::from_package(&pkg.manifest, &pkg.patches);
    let labels = stored_labels(pkg, &set);
    let mut images = |s: usize, seed: u64| regen.epoch(s, seed);
    let source = EpochSource { images: &mut images, prefetch };
    super::train_student_with::<B>(config, &set, Labels::Stored(&labels), &pkg.manifest.normalization, ds, Some(source), checkpoint, device)
}

/// The package's labels in the student's form, bound to `set` (its [`TrainingSet::from_package`]).
pub fn stored_labels(pkg: &Package, set: &TrainingSet) -> StoredLabels {
    let m = &pkg.manifest;
    StoredLabels {
        meta: LabelsMeta {
            format: labels::FORMAT.into(),
            items: m.items.len(),
            classes: m.num_classes(),
            seeds: m.seeds.clone(),
            augment: m.augment.clone(),
            set: set.description.clone(),
            set_fingerprint: set.fingerprint(),
            teacher: m.teacher.fingerprint.clone(),
        },
        logits: pkg.logits.clone(),
    }
}

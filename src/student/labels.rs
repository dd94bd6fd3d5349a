//! Soft labels precomputed by the teacher for every `(item, seed)`: the transmitted setting, where
//! the student never sees the teacher and rebuilds each augmented image from its seed.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::set::TrainingSet;
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::DaceBackend;
use crate::models::Classifier;
use crate::package::AugmentConfig;
use crate::train::Normalization;

pub const FORMAT: &str = "dace-soft-labels/1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelsMeta {
    pub format: String,
    pub items: usize,
    pub classes: usize,
    /// Seed `seeds[e]` is the augmentation seed of epoch `e`.
    pub seeds: Vec<u64>,
    pub augment: AugmentConfig,
    /// What the items are (must match the training set they are used with).
    pub set: String,
    /// sha256 of the set's images and labels: labels never meet other images.
    #[serde(default)]
    pub set_fingerprint: String,
    /// The teacher that produced them (`checkpoint::fingerprint`, when known).
    #[serde(default)]
    pub teacher: String,
}

/// Teacher logits `[seed][item][class]`.
#[derive(Clone, Debug)]
pub struct StoredLabels {
    pub meta: LabelsMeta,
    pub logits: Vec<f32>,
}

impl StoredLabels {
    /// Logits of `item` under seed number `s`.
    pub fn get(&self, s: usize, item: usize) -> &[f32] {
        let k = self.meta.classes;
        let at = (s * self.meta.items + item) * k;
        &self.logits[at..at + k]
    }

    /// Runs the teacher on every item's view under every seed.
    pub fn compute<B: DaceBackend>(
        set: &TrainingSet,
        teacher: &Classifier<B>,
        norm: &Normalization,
        augment: &AugmentConfig,
        seeds: Vec<u64>,
        device: &B::Device,
    ) -> Result<Self> {
        let mut logits = Vec::with_capacity(seeds.len() * set.len() * set.num_classes);
        let bar = crate::train::progress::bar(seeds.len() as u64, "soft labels");
        for &seed in &seeds {
            logits.extend(teacher_logits(set, &set.images, seed, teacher, norm, augment, device)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let meta = LabelsMeta {
            format: FORMAT.into(),
            items: set.len(),
            classes: set.num_classes,
            seeds,
            augment: augment.clone(),
            set: set.description.clone(),
            set_fingerprint: set.fingerprint(),
            teacher: String::new(),
        };
        Ok(StoredLabels { meta, logits })
    }

    /// `labels.json` + `labels.bin` (f32 little-endian).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let bytes: Vec<u8> = self.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        fsio::write_atomic(&dir.join("labels.bin"), &bytes)?;
        fsio::write_json(&dir.join("labels.json"), &self.meta)
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("labels.json");
        let meta: LabelsMeta = fsio::read_json(&meta_path)?;
        if meta.format != FORMAT {
            return Err(DaceError::bad_file(&meta_path, format!("format `{}`, expected `{FORMAT}`", meta.format)));
        }
        let path = dir.join("labels.bin");
        let bytes = fsio::read(&path)?;
        let expected = meta.seeds.len() * meta.items * meta.classes * 4;
        if bytes.len() != expected {
            return Err(DaceError::bad_file(&path, format!("{} bytes, expected {expected}", bytes.len())));
        }
        let logits: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(DaceError::bad_file(&path, "non-finite logits"));
        }
        Ok(StoredLabels { meta, logits })
    }

    /// Checks these labels were made for `set` with `augment`.
    pub fn check_fits(&self, set: &TrainingSet, augment: &AugmentConfig) -> Result<()> {
        let m = &self.meta;
        if m.items != set.len()
            || m.classes != set.num_classes
            || m.set != set.description
            || &m.augment != augment
            || m.set_fingerprint != set.fingerprint()
        {
            return Err(DaceError::Invalid(format!(
                "stored labels are for `{}` ({} items, {:?}), not `{}` ({} items, {:?})",
                m.set,
                m.items,
                m.augment,
                set.description,
                set.len(),
                augment
            )));
        }
        Ok(())
    }
}

/// Teacher logits `[item][class]` of every item's view under `seed`, the set's images replaced by
/// `images` (the set's own, or their expansions under `seed`).
pub fn teacher_logits<B: DaceBackend>(
    set: &TrainingSet,
    images: &[u8],
    seed: u64,
    teacher: &Classifier<B>,
    norm: &Normalization,
    augment: &AugmentConfig,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let items: Vec<usize> = (0..set.len()).collect();
    teacher_logits_of(set, images, &items, seed, teacher, norm, augment, device)
}

/// [`teacher_logits`] of `items` only (`[item][class]` in their order): what a package shard
/// labels. `images` needs the expansions of `items` and of their CutMix partners
/// ([`TrainingSet::cutmix_partner`]); the other items' bytes are not read.
#[allow(clippy::too_many_arguments)]
pub fn teacher_logits_of<B: DaceBackend>(
    set: &TrainingSet,
    images: &[u8],
    items: &[usize],
    seed: u64,
    teacher: &Classifier<B>,
    norm: &Normalization,
    augment: &AugmentConfig,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let (c, h, w) = (set.channels, set.height, set.width);
    let mut logits = Vec::with_capacity(items.len() * set.num_classes);
    for chunk in items.chunks(256) {
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(set.views_in(images, chunk, seed, augment, norm), [chunk.len(), c, h, w]), device);
        let out: Vec<f32> = teacher.forward(x).into_data().to_vec().map_err(|e| DaceError::Invalid(format!("teacher output: {e:?}")))?;
        if out.iter().any(|v| !v.is_finite()) {
            return Err(DaceError::Invalid(format!("the teacher produced non-finite logits under seed {seed}")));
        }
        logits.extend(out);
    }
    Ok(logits)
}

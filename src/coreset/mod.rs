//! RDED-style coreset selection (Sun et al. 2024, "On the Diversity and Realism of Distilled Dataset").
//!
//! Per class: up to `mipc` real images; per image `crops` random square crops, each stored at the
//! patch size `H/r x W/r`, upsampled back to `H x W` and scored by the teacher's cross-entropy on
//! the true label. The lowest-CE crop of each image is its candidate; the `ipc * r^2` lowest
//! candidates of the class form the coreset. Scoring the upsampled low-resolution patch (not the
//! full-resolution crop) scores exactly what a student will later see.

pub mod crop;
pub mod shard;

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::transform::resize_u8;
use crate::data::{augment, Dataset};
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::DaceBackend;
use crate::models::Classifier;
use crate::rng::{SeedRng, Stream};
use crate::train::{ModelMeta, Normalization};
use crate::viz;

pub use crop::CropBox;

pub const META_FILE: &str = "coreset.json";
pub const PATCHES_FILE: &str = "patches.bin";
const FORMAT: &str = "dace-coreset/1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoresetConfig {
    /// Images per class of the pixel budget (`K`).
    pub ipc: usize,
    /// Patch factor `r`: patches are `H/r x W/r`, `ipc * r^2` of them per class.
    pub factor: usize,
    /// Random crops scored per image.
    pub crops: usize,
    /// Real images considered per class (raised to `ipc * r^2` when smaller, reported).
    pub mipc: usize,
    pub seed: u64,
}

/// One selected patch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchInfo {
    pub class: u32,
    /// Index of the source image in the training split.
    pub source: usize,
    pub crop: CropBox,
    /// Teacher cross-entropy of the (upsampled) patch on its true label.
    pub ce: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoresetMeta {
    pub format: String,
    pub dataset: String,
    pub classes: Vec<String>,
    pub channels: usize,
    pub image_size: [usize; 2],
    pub patch_size: [usize; 2],
    pub config: CoresetConfig,
    /// Images actually considered per class (the fewest over classes): `mipc`, raised to
    /// `ipc * r^2` when smaller, capped by the class size.
    pub mipc_used: usize,
    /// Patches grouped by class, each class sorted by ascending CE (best first).
    pub patches: Vec<PatchInfo>,
    pub teacher_evals: usize,
    pub seconds: f64,
    /// The teacher that scored the crops (`checkpoint::fingerprint`, when known).
    #[serde(default)]
    pub teacher: String,
    /// A coreset shard (`dace coreset --shard i/n`) holds the patches of these classes only;
    /// `dace coreset merge` joins shards into the whole coreset. Absent for a whole coreset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Vec<u32>>,
}

/// A coreset: metadata and the patches as u8 CHW, in the order of `meta.patches`.
#[derive(Clone, Debug)]
pub struct Coreset {
    pub meta: CoresetMeta,
    pub patches: Vec<u8>,
}

/// Training images built from a coreset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Each patch upsampled to full size on its own (the paper's layout): `ipc * r^2` per class.
    Patches,
    /// RDED's collages: `r x r` patches per image, `ipc` per class.
    Collage,
}

impl Coreset {
    pub fn patch_len(&self) -> usize {
        let [ph, pw] = self.meta.patch_size;
        self.meta.channels * ph * pw
    }

    pub fn patch(&self, i: usize) -> &[u8] {
        let len = self.patch_len();
        &self.patches[i * len..(i + 1) * len]
    }

    /// Indices into `meta.patches` of class `class`, best first.
    pub fn class_patches(&self, class: u32) -> Vec<usize> {
        (0..self.meta.patches.len()).filter(|&i| self.meta.patches[i].class == class).collect()
    }

    /// Full-size training images `(u8 CHW back to back, labels)` in `layout`.
    pub fn training_images(&self, layout: Layout) -> Result<(Vec<u8>, Vec<u32>)> {
        let m = &self.meta;
        let (c, [h, w], [ph, pw], r) = (m.channels, m.image_size, m.patch_size, m.config.factor);
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for class in 0..m.classes.len() as u32 {
            let idx = self.class_patches(class);
            match layout {
                Layout::Patches => {
                    for &i in &idx {
                        images.extend(resize_u8(self.patch(i), c, ph, pw, h, w));
                        labels.push(class);
                    }
                }
                Layout::Collage => {
                    if ph * r != h || pw * r != w {
                        return Err(DaceError::Invalid(format!("collages need H and W divisible by r = {r}, image is {h}x{w}")));
                    }
                    // Block k of the sorted list fills cell k: the best `ipc` patches go to cell 0
                    // of each collage, the next `ipc` to cell 1, ...
                    let k = idx.len() / (r * r);
                    for j in 0..k {
                        let cells: Vec<&[u8]> = (0..r * r).map(|cell| self.patch(idx[cell * k + j])).collect();
                        images.extend(crop::collage(&cells, c, ph, pw, r));
                        labels.push(class);
                    }
                }
            }
        }
        Ok((images, labels))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DaceError::io(dir, e))?;
        fsio::write_atomic(&dir.join(PATCHES_FILE), &self.patches)?;
        fsio::write_json(&dir.join(META_FILE), &self.meta)?;
        // One row per class: its best patches, left to right.
        let [ph, pw] = self.meta.patch_size;
        let shown = (self.meta.patches.len() / self.meta.classes.len().max(1)).clamp(1, 16);
        let mut rows = Vec::new();
        for class in 0..self.meta.classes.len() as u32 {
            let idx = self.class_patches(class);
            for k in 0..shown {
                match idx.get(k) {
                    Some(&i) => rows.extend_from_slice(self.patch(i)),
                    None => rows.extend(std::iter::repeat_n(255u8, self.patch_len())),
                }
            }
        }
        viz::write_grid(&dir.join("patches.png"), &rows, self.meta.channels, ph, pw, shown, 48)?;
        Ok(())
    }

    /// Loads a whole coreset; a shard is refused (it lacks classes: merge the shards first).
    pub fn load(dir: &Path) -> Result<Coreset> {
        let c = Self::load_shard(dir)?;
        if let Some(classes) = &c.meta.shard {
            return Err(DaceError::bad_file(
                dir.join(META_FILE),
                format!(
                    "is a coreset shard of {} of {} classes: join the shards with `dace coreset merge` first",
                    classes.len(),
                    c.meta.classes.len()
                ),
            ));
        }
        Ok(c)
    }

    /// Loads a whole coreset or a shard of one.
    pub fn load_shard(dir: &Path) -> Result<Coreset> {
        let meta_path = dir.join(META_FILE);
        let meta: CoresetMeta = fsio::read_json(&meta_path)?;
        if meta.format != FORMAT {
            return Err(DaceError::bad_file(&meta_path, format!("format `{}`, expected `{FORMAT}`", meta.format)));
        }
        let path = dir.join(PATCHES_FILE);
        let patches = fsio::read(&path)?;
        let [ph, pw] = meta.patch_size;
        let expected = meta.patches.len() * meta.channels * ph * pw;
        if patches.len() != expected {
            return Err(DaceError::bad_file(
                &path,
                format!("{} bytes, expected {expected} for {} patches of {}x{ph}x{pw}", patches.len(), meta.patches.len(), meta.channels),
            ));
        }
        if meta.patches.iter().any(|p| p.class as usize >= meta.classes.len()) {
            return Err(DaceError::bad_file(&meta_path, "a patch has a class outside the class list"));
        }
        // Every class (of a shard: every class it holds) has exactly ipc * r^2 patches of
        // H/r x W/r, grouped by class in class order: students and merges rely on it.
        let r = meta.config.factor.max(1);
        let per_class = meta.config.ipc * r * r;
        let held: Vec<u32> = match &meta.shard {
            Some(classes) => classes.clone(),
            None => (0..meta.classes.len() as u32).collect(),
        };
        if held.is_empty() || held.windows(2).any(|w| w[0] >= w[1]) || held.iter().any(|&k| k as usize >= meta.classes.len()) {
            return Err(DaceError::bad_file(&meta_path, format!("shard classes {held:?} are not ascending class indices")));
        }
        let expected_classes = held.iter().flat_map(|&k| std::iter::repeat_n(k, per_class));
        if !meta.patches.iter().map(|p| p.class).eq(expected_classes) {
            let count = |k: u32| meta.patches.iter().filter(|p| p.class == k).count();
            let what = match held.iter().find(|&&k| count(k) != per_class) {
                Some(&k) => format!("class `{}` has {} patches, expected ipc * r^2 = {per_class}", meta.classes[k as usize], count(k)),
                None => format!("patches of classes outside {held:?}, or not grouped by class in class order"),
            };
            return Err(DaceError::bad_file(&meta_path, what));
        }
        if meta.patch_size != [meta.image_size[0] / r, meta.image_size[1] / r] {
            return Err(DaceError::bad_file(
                &meta_path,
                format!("patch size {:?} does not match image size {:?} / r = {r}", meta.patch_size, meta.image_size),
            ));
        }
        Ok(Coreset { meta, patches })
    }
}

/// Selects the coreset of `ds` with `teacher`. Sources are drawn per class with the portable RNG.
pub fn select<B: DaceBackend>(
    ds: &Dataset,
    teacher: &Classifier<B>,
    teacher_meta: &ModelMeta,
    config: &CoresetConfig,
    device: &B::Device,
) -> Result<Coreset> {
    let all: Vec<u32> = (0..ds.num_classes() as u32).collect();
    let mut c = select_shard(ds, teacher, teacher_meta, config, &all, device)?;
    c.meta.shard = None;
    Ok(c)
}

/// The coreset shard of `classes` (ascending indices): a class's patches depend on the class, the
/// settings and the teacher only, so merged shards equal [`select`]'s coreset.
pub fn select_shard<B: DaceBackend>(
    ds: &Dataset,
    teacher: &Classifier<B>,
    teacher_meta: &ModelMeta,
    config: &CoresetConfig,
    classes: &[u32],
    device: &B::Device,
) -> Result<Coreset> {
    let start = Instant::now();
    if classes.is_empty() || classes.windows(2).any(|w| w[0] >= w[1]) || classes.iter().any(|&k| k as usize >= ds.num_classes()) {
        return Err(DaceError::Invalid(format!("coreset shard classes {classes:?}: not ascending indices below {}", ds.num_classes())));
    }
    let (c, h, w, r) = (ds.channels, ds.height, ds.width, config.factor);
    if r == 0 || h / r == 0 || w / r == 0 || config.ipc == 0 || config.crops == 0 {
        return Err(DaceError::Invalid(format!("bad coreset settings {config:?} for {h}x{w} images")));
    }
    let (ph, pw) = (h / r, w / r);
    let per_class = config.ipc * r * r;
    let mipc = config.mipc.max(per_class);
    let counts = Dataset::class_counts(&ds.train, ds.num_classes());
    if let Some((class, &n)) = counts.iter().enumerate().find(|(_, &n)| n < per_class) {
        return Err(DaceError::Invalid(format!(
            "class `{}` has {n} training images, fewer than ipc * r^2 = {per_class}",
            ds.classes[class]
        )));
    }
    let plen = c * ph * pw;
    let mut patches_out = Vec::new();
    let mut infos = Vec::new();
    let mut evals = 0;
    let mut fewest_considered = usize::MAX;
    let scorer = CropScorer { ds, teacher, norm: &teacher_meta.normalization, config, patch: [ph, pw], device };
    let bar = crate::train::progress::bar(classes.len() as u64, "coreset");
    for &class in classes {
        let pool = class_pool(ds, class, mipc, config.seed);
        fewest_considered = fewest_considered.min(pool.len());
        let mut best = Vec::with_capacity(pool.len());
        for chunk in pool.chunks(64) {
            evals += scorer.best_crops(chunk, class, &mut best)?;
        }
        best.sort_by(|a, b| a.ce.total_cmp(&b.ce).then(a.source.cmp(&b.source)));
        for cand in best.into_iter().take(per_class) {
            debug_assert_eq!(cand.patch.len(), plen);
            patches_out.extend(cand.patch);
            infos.push(PatchInfo { class, source: cand.source, crop: cand.crop, ce: cand.ce });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Coreset {
        meta: CoresetMeta {
            format: FORMAT.into(),
            dataset: ds.name.clone(),
            classes: ds.classes.clone(),
            channels: c,
            image_size: [h, w],
            patch_size: [ph, pw],
            config: config.clone(),
            mipc_used: fewest_considered,
            patches: infos,
            teacher_evals: evals,
            seconds: start.elapsed().as_secs_f64(),
            teacher: String::new(),
            shard: Some(classes.to_vec()),
        },
        patches: patches_out,
    })
}

/// A seeded random subset of `mipc` images of `class` (partial Fisher-Yates with the portable RNG).
fn class_pool(ds: &Dataset, class: u32, mipc: usize, seed: u64) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..ds.train.len()).filter(|&i| ds.train.labels[i] == class).collect();
    let take = mipc.min(pool.len());
    let rng = SeedRng::new(seed, class as u64, Stream::Shuffle);
    for i in 0..take {
        let j = i + rng.below_at(i as u64, (pool.len() - i) as u32) as usize;
        pool.swap(i, j);
    }
    pool.truncate(take);
    pool
}

/// One source image's best crop: its teacher cross-entropy and the patch (at patch size).
struct Candidate {
    ce: f32,
    source: usize,
    crop: CropBox,
    patch: Vec<u8>,
}

/// Scores random crops of source images by the teacher's cross-entropy on their class.
struct CropScorer<'a, B: DaceBackend> {
    ds: &'a Dataset,
    teacher: &'a Classifier<B>,
    norm: &'a Normalization,
    config: &'a CoresetConfig,
    patch: [usize; 2],
    device: &'a B::Device,
}

impl<B: DaceBackend> CropScorer<'_, B> {
    /// Every crop of every image of `sources`, stored at patch size and scored upsampled; pushes
    /// each image's lowest-CE crop (ties go to the earlier crop) and returns the teacher evaluations.
    fn best_crops(&self, sources: &[usize], class: u32, best: &mut Vec<Candidate>) -> Result<usize> {
        let (ds, config) = (self.ds, self.config);
        let (c, h, w) = (ds.channels, ds.height, ds.width);
        let [ph, pw] = self.patch;
        let mut cand = Vec::new();
        for &src in sources {
            for k in 0..config.crops {
                let cb = crop::random_square(config.seed, src as u64, k as u64, h, w);
                cand.push((src, cb, crop::crop_resize(&ds.image(&ds.train, src)?, c, h, w, cb, ph, pw)));
            }
        }
        let upsampled: Vec<Vec<u8>> = cand.iter().map(|x| resize_u8(&x.2, c, ph, pw, h, w)).collect();
        let ce = teacher_ce(self.teacher, &upsampled, class, c, h, w, self.norm, self.device)?;
        for (j, &src) in sources.iter().enumerate() {
            let range = j * config.crops..(j + 1) * config.crops;
            let k = range.clone().min_by(|&a, &b| ce[a].total_cmp(&ce[b])).expect("crops > 0");
            best.push(Candidate { ce: ce[k], source: src, crop: cand[k].1, patch: cand[k].2.clone() });
        }
        Ok(cand.len())
    }
}

/// Teacher cross-entropy of each image (u8 CHW) on `class`.
fn teacher_ce<B: DaceBackend>(
    teacher: &Classifier<B>,
    images: &[Vec<u8>],
    class: u32,
    c: usize,
    h: usize,
    w: usize,
    norm: &crate::train::Normalization,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let len = c * h * w;
    let mut buf = vec![0f32; images.len() * len];
    for (img, out) in images.iter().zip(buf.chunks_mut(len)) {
        augment::to_f32_normalized(img, &norm.mean, &norm.std, c, out);
    }
    let x = Tensor::<B, 4>::from_data(TensorData::new(buf, [images.len(), c, h, w]), device);
    let logp = burn::tensor::activation::log_softmax(teacher.forward(x), 1);
    let ce: Vec<f32> =
        logp.narrow(1, class as usize, 1).neg().into_data().to_vec().map_err(|e| DaceError::Invalid(format!("teacher output: {e:?}")))?;
    if ce.iter().any(|v| !v.is_finite()) {
        return Err(DaceError::Invalid("teacher produced a non-finite cross-entropy".into()));
    }
    Ok(ce)
}

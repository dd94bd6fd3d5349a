//! The sending side, `dace distill`: coreset -> expansions under every seed -> the student's seeded
//! augmentation -> teacher soft labels -> package. Long runs checkpoint the labels done so far
//! next to the package (`.PKG.partial.json` + `.bin`) and resume from them when rerun with the
//! same settings.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::coreset::Coreset;
use crate::error::{DaceError, Result};
use crate::expand::Expander;
use crate::fsio;
use crate::kernels::diffusion::DiffusionKernels;
use crate::kernels::DaceBackend;
use crate::models::Classifier;
use crate::package::shard::{self, Shard};
use crate::package::{Manifest, Package, Resolutions, SizeReport, TeacherRef};
use crate::prior::bundle::Prior;
use crate::student::labels::{teacher_logits, teacher_logits_of};
use crate::student::TrainingSet;
use crate::train::{ModelMeta, Normalization};

/// Seconds between checkpoints of a running distillation; the environment variable
/// `DACE_CHECKPOINT_SECONDS` overrides it (0: after every seed).
fn checkpoint_seconds() -> f64 {
    std::env::var("DACE_CHECKPOINT_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60.0)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillReport {
    pub package: String,
    pub description: String,
    /// The student's image size, the patches' and the prior's working size.
    pub resolutions: Resolutions,
    pub patches: usize,
    pub seeds: usize,
    pub expansions: usize,
    /// Wall time of the expansions alone and their throughput (images/s).
    pub expand_seconds: f64,
    pub expansions_per_s: f64,
    pub label_seconds: f64,
    /// Share of stored labels whose argmax is the patch's class.
    pub label_argmax_is_class: f64,
    /// Seeds taken from a checkpoint instead of computed in this run.
    pub resumed_seeds: usize,
    pub size: SizeReport,
    pub seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct Partial {
    /// The manifest (without file hashes) the partial labels belong to.
    manifest: Manifest,
    seeds_done: usize,
    /// The classes of a shard's partial labels (absent for a whole package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<Vec<u32>>,
}

fn partial_paths(out: &Path) -> (PathBuf, PathBuf) {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (out.with_file_name(format!(".{name}.partial.json")), out.with_file_name(format!(".{name}.partial.bin")))
}

/// Expansions of the first patch of each class under the first seeds, for the PNG grid.
pub struct Preview {
    pub per_class: Vec<usize>,
    pub images: Vec<Vec<u8>>,
}

/// The logits of the seeds an interrupted distillation into `out` finished, when it was made
/// with exactly this manifest and shard classes (`row` logits per seed); otherwise none.
fn resumed_logits(out: &Path, manifest: &Manifest, classes: Option<&[u32]>, row: usize) -> Result<Vec<f32>> {
    let (partial_json, partial_bin) = partial_paths(out);
    let mut logits: Vec<f32> = Vec::with_capacity(manifest.seeds.len() * row);
    if let Ok(p) = fsio::read_json::<Partial>(&partial_json) {
        if p.manifest == *manifest && p.classes.as_deref() == classes {
            let bytes = fsio::read(&partial_bin)?;
            if bytes.len() == p.seeds_done * row * 4 {
                logits = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            }
        }
    }
    Ok(logits)
}

/// Checkpoints the logits of the first `seeds_done` seeds (the bytes first, then the JSON that
/// vouches for them).
fn save_partial(out: &Path, manifest: &Manifest, classes: Option<&[u32]>, seeds_done: usize, logits: &[f32]) -> Result<()> {
    let (partial_json, partial_bin) = partial_paths(out);
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    fsio::write_atomic(&partial_bin, &bytes)?;
    fsio::write_json(&partial_json, &Partial { manifest: manifest.clone(), seeds_done, classes: classes.map(<[u32]>::to_vec) })
}

fn remove_partial(out: &Path) {
    let (partial_json, partial_bin) = partial_paths(out);
    let _ = std::fs::remove_file(&partial_json);
    let _ = std::fs::remove_file(&partial_bin);
}

/// Runs the expansion + labelling of `coreset` into a package at `out`. `manifest` is the
/// package's ([`Manifest::new`] of this coreset). `on_seed(s, images)` sees the expansions of seed
/// number `s` as they are made (not called for seeds resumed from a checkpoint).
#[allow(clippy::too_many_arguments)]
pub fn distill<B: DaceBackend + DiffusionKernels>(
    coreset: &Coreset,
    prior: Option<&Prior<B>>,
    teacher: &Classifier<B>,
    manifest: Manifest,
    full_dataset_images: usize,
    out: &Path,
    on_seed: &mut dyn FnMut(usize, &[u8]),
    device: &B::Device,
) -> Result<(Package, DistillReport, Preview)> {
    let start = Instant::now();
    check_coreset(&manifest, coreset)?;
    manifest.check_prior(prior.map(|p| p.fingerprint.as_str()))?;
    let expander = Expander::for_manifest(prior, &manifest, &coreset.patches, manifest.batch, device)?;
    let set = TrainingSet::from_package(&manifest, &coreset.patches);
    let k = manifest.num_classes();
    let n = set.len();
    let norm: Normalization = manifest.normalization.clone();

    let mut logits = resumed_logits(out, &manifest, None, n * k)?;
    let resumed = logits.len() / (n * k).max(1);
    let preview_cols = manifest.seeds.len().min(7);
    let per_class: Vec<usize> = (0..k as u32).filter_map(|c| manifest.items.iter().position(|&i| i == c)).collect();
    let mut preview = Preview { per_class: per_class.clone(), images: Vec::new() };
    for &seed in &manifest.seeds[..preview_cols.min(resumed)] {
        preview.images.push(expander.expand(&per_class, seed)?);
    }

    let bar = crate::train::progress::bar(manifest.seeds.len() as u64, format!("distill {}", manifest.description()));
    bar.set_position(resumed as u64);
    let (mut expand_s, mut label_s) = (0.0, 0.0);
    let mut last_checkpoint = Instant::now();
    let every = checkpoint_seconds();
    for (s, &seed) in manifest.seeds.iter().enumerate().skip(resumed) {
        let t = Instant::now();
        let images = expander.expand_all(seed)?;
        expand_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        logits.extend(teacher_logits(&set, &images, seed, teacher, &norm, &manifest.augment, device)?);
        label_s += t.elapsed().as_secs_f64();
        on_seed(s, &images);
        if s < preview_cols {
            let len = set.image_len();
            preview.images.push(per_class.iter().flat_map(|&i| images[i * len..(i + 1) * len].iter().copied()).collect());
        }
        bar.inc(1);
        let done = s + 1;
        if done < manifest.seeds.len() && last_checkpoint.elapsed().as_secs_f64() >= every {
            save_partial(out, &manifest, None, done, &logits)?;
            last_checkpoint = Instant::now();
        }
    }
    bar.finish_and_clear();
    let computed = (manifest.seeds.len() - resumed) * n;
    let agree =
        (0..manifest.seeds.len() * n).filter(|&row| argmax(&logits[row * k..(row + 1) * k]) == manifest.items[row % n] as usize).count();
    let mut package = Package { manifest, patches: coreset.patches.clone(), logits };
    let size = package.save(out, full_dataset_images)?;
    remove_partial(out);
    let report = DistillReport {
        package: out.display().to_string(),
        description: package.manifest.description(),
        resolutions: package.manifest.resolutions(),
        patches: n,
        seeds: package.manifest.seeds.len(),
        expansions: computed,
        expand_seconds: expand_s,
        expansions_per_s: computed as f64 / expand_s.max(1e-9),
        label_seconds: label_s,
        label_argmax_is_class: 100.0 * agree as f64 / (package.manifest.seeds.len() * n).max(1) as f64,
        resumed_seeds: resumed,
        size,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((package, report, preview))
}

/// What a shard's distillation did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardReport {
    pub shard: String,
    pub classes: Vec<String>,
    pub items: usize,
    pub seeds: usize,
    /// Expansions of the shard's own items, and of other shards' items that its labels' CutMix
    /// pastes from (made again here: a single process has them for free).
    pub expansions: usize,
    pub partner_expansions: usize,
    pub expand_seconds: f64,
    pub label_seconds: f64,
    pub resumed_seeds: usize,
    pub seconds: f64,
}

/// The items whose expansions label `own` under `seed`: `own` and their CutMix partners, sorted.
fn items_needed(set: &TrainingSet, own: &[usize], seed: u64, augment: &crate::package::AugmentConfig) -> Vec<usize> {
    let mut needed: Vec<usize> = own.iter().copied().chain(own.iter().filter_map(|&i| set.cutmix_partner(i, seed, augment))).collect();
    needed.sort_unstable();
    needed.dedup();
    needed
}

/// Distills the items of `classes` only, into a package shard at `out` ([`crate::package::shard`]):
/// the same expansions and logits the whole distillation makes for them. Checkpoints and resumes
/// like [`distill`].
pub fn distill_shard<B: DaceBackend + DiffusionKernels>(
    coreset: &Coreset,
    prior: Option<&Prior<B>>,
    teacher: &Classifier<B>,
    manifest: Manifest,
    classes: Vec<u32>,
    out: &Path,
    device: &B::Device,
) -> Result<(Shard, ShardReport)> {
    let start = Instant::now();
    check_coreset(&manifest, coreset)?;
    manifest.check_prior(prior.map(|p| p.fingerprint.as_str()))?;
    let expander = Expander::for_manifest(prior, &manifest, &coreset.patches, manifest.batch, device)?;
    let set = TrainingSet::from_package(&manifest, &coreset.patches);
    let own = shard::items_of(&manifest, &classes);
    let (k, len) = (manifest.num_classes(), set.image_len());
    let mut logits = resumed_logits(out, &manifest, Some(&classes), own.len() * k)?;
    let resumed = logits.len() / (own.len() * k).max(1);
    let bar = crate::train::progress::bar(manifest.seeds.len() as u64, format!("distill shard of {} classes", classes.len()));
    bar.set_position(resumed as u64);
    let (mut expand_s, mut label_s, mut partners) = (0.0, 0.0, 0);
    let mut last_checkpoint = Instant::now();
    // Only the needed items' bytes are written; the views read no others.
    let mut images = vec![0u8; set.len() * len];
    for (s, &seed) in manifest.seeds.iter().enumerate().skip(resumed) {
        let t = Instant::now();
        let needed = items_needed(&set, &own, seed, &manifest.augment);
        partners += needed.len() - own.len();
        let made = expander.expand(&needed, seed)?;
        for (j, &i) in needed.iter().enumerate() {
            images[i * len..(i + 1) * len].copy_from_slice(&made[j * len..(j + 1) * len]);
        }
        expand_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        logits.extend(teacher_logits_of(&set, &images, &own, seed, teacher, &manifest.normalization, &manifest.augment, device)?);
        label_s += t.elapsed().as_secs_f64();
        bar.inc(1);
        if s + 1 < manifest.seeds.len() && last_checkpoint.elapsed().as_secs_f64() >= checkpoint_seconds() {
            save_partial(out, &manifest, Some(&classes), s + 1, &logits)?;
            last_checkpoint = Instant::now();
        }
    }
    bar.finish_and_clear();
    let names = classes.iter().map(|&c| manifest.classes[c as usize].clone()).collect();
    let seeds = manifest.seeds.len();
    let shard = Shard { manifest, classes, patches: coreset.patches.clone(), logits };
    shard.save(out)?;
    remove_partial(out);
    let report = ShardReport {
        shard: out.display().to_string(),
        classes: names,
        items: own.len(),
        seeds,
        expansions: (seeds - resumed) * own.len(),
        partner_expansions: partners,
        expand_seconds: expand_s,
        label_seconds: label_s,
        resumed_seeds: resumed,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((shard, report))
}

/// The coreset a manifest was built from: same classes, shapes and patches per class.
fn check_coreset(m: &Manifest, coreset: &Coreset) -> Result<()> {
    let cm = &coreset.meta;
    let items: Vec<u32> = cm.patches.iter().map(|p| p.class).collect();
    if items != m.items || cm.patch_size != m.patch_size || cm.channels != m.channels || cm.classes != m.classes {
        return Err(DaceError::Invalid(format!(
            "the manifest ({}) was not built from this coreset ({} patches of {:?})",
            m.description(),
            items.len(),
            cm.patch_size
        )));
    }
    Ok(())
}

/// Index of the largest logit (the first of equal ones; NaN never wins).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}

/// PNG grid: one row per class: the upsampled patch, then its expansions under the first seeds.
pub fn write_preview(path: &Path, m: &Manifest, set: &TrainingSet, preview: &Preview) -> Result<()> {
    let len = set.image_len();
    let mut cells = Vec::new();
    for (row, &i) in preview.per_class.iter().enumerate() {
        cells.extend_from_slice(&set.images[i * len..(i + 1) * len]);
        for imgs in &preview.images {
            cells.extend_from_slice(&imgs[row * len..(row + 1) * len]);
        }
    }
    crate::viz::write_grid(path, &cells, m.channels, m.image_size[0], m.image_size[1], preview.images.len() + 1, 28)
}

/// What a package records about its teacher (read from the teacher directory).
pub fn teacher_ref(dir: &Path, meta: &ModelMeta) -> Result<TeacherRef> {
    let report = fsio::read_json::<crate::train::TeacherReport>(&dir.join(crate::train::teacher::REPORT_FILE)).ok();
    Ok(TeacherRef {
        fingerprint: crate::train::checkpoint::fingerprint(dir)?,
        arch: meta.config.arch.name().into(),
        test_accuracy: report.and_then(|r| r.final_eval.map(|e| e.accuracy)),
    })
}

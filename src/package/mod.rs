//! The distilled package (docs/FORMAT.md, "Distilled package"): low-resolution patches, the
//! expansion settings, the seed list and the teacher's soft label for every (seed, patch). Nothing
//! else crosses the wire: the receiver regenerates every training image from the seeds with the
//! same prior (checked by fingerprint).
//!
//! ```text
//! PKG/manifest.json   format, dataset, shapes, prior fingerprint, settings, seeds, file hashes
//! PKG/patches.bin     u8 [item][c][H/r][W/r]
//! PKG/labels.bin      [seed][item] rows of the label encoding (see `labels`)
//! ```
//!
//! A package directory is written next to its final place and renamed into it, so a reader never
//! sees half of one; every file's size and sha256 are checked on load.

pub mod labels;

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use labels::LabelEncoding;

use crate::error::{DaceError, Result};
use crate::expand::ExpandConfig;
use crate::fsio;
use crate::student::AugmentConfig;
use crate::train::Normalization;

pub const FORMAT: &str = "dace-package/1";
/// The RNG scheme of docs/FORMAT.md the seeds are interpreted with.
pub const RNG_SCHEME: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const PATCHES: &str = "patches.bin";
pub const LABELS: &str = "labels.bin";

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
    /// Size of the regenerated images `[h, w]`.
    pub image_size: [usize; 2],
    pub patch_size: [usize; 2],
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
    pub files: std::collections::BTreeMap<String, FileEntry>,
}

/// A package in memory: manifest, patches, and the decoded logits `[seed][item][class]`.
#[derive(Clone, Debug)]
pub struct Package {
    pub manifest: Manifest,
    pub patches: Vec<u8>,
    pub logits: Vec<f32>,
}

/// Sizes of a package against what it replaces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizeReport {
    pub patches_bytes: u64,
    pub labels_bytes: u64,
    pub manifest_bytes: u64,
    pub total_bytes: u64,
    /// `ipc` full-size u8 images per class: the budget the patches fit in.
    pub ipc_budget_bytes: u64,
    /// The full training split as u8 pixels plus one byte per label.
    pub full_dataset_bytes: u64,
    pub total_over_budget: f64,
    pub total_over_full_dataset: f64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl Manifest {
    pub fn patch_len(&self) -> usize {
        self.channels * self.patch_size[0] * self.patch_size[1]
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.image_size[0] * self.image_size[1]
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
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

    fn check_shapes(&self, path: &Path) -> Result<()> {
        let bad = |why: String| Err(DaceError::bad_file(path, why));
        if self.format != FORMAT {
            return bad(format!("package format `{}`, this dace reads `{FORMAT}`", self.format));
        }
        if self.rng_scheme != RNG_SCHEME {
            return bad(format!("RNG scheme {}, this dace implements scheme {RNG_SCHEME}", self.rng_scheme));
        }
        let r = self.factor.max(1);
        if self.patch_size != [self.image_size[0] / r, self.image_size[1] / r] || self.patch_len() == 0 {
            return bad(format!("patch size {:?} is not image size {:?} / r = {r}", self.patch_size, self.image_size));
        }
        if self.classes.is_empty() || self.items.iter().any(|&k| k as usize >= self.classes.len()) {
            return bad("a patch's class is outside the class list".into());
        }
        if self.seeds.is_empty() || self.items.is_empty() {
            return bad("no seeds or no patches".into());
        }
        if self.normalization.mean.len() != self.channels || self.normalization.std.len() != self.channels {
            return bad(format!("normalisation is not per channel ({} channels)", self.channels));
        }
        Ok(())
    }
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}

impl Package {
    pub fn num_items(&self) -> usize {
        self.manifest.items.len()
    }

    /// Logits of `item` under seed number `s`.
    pub fn logits(&self, s: usize, item: usize) -> &[f32] {
        let k = self.manifest.num_classes();
        let at = (s * self.num_items() + item) * k;
        &self.logits[at..at + k]
    }

    /// Writes the package to `dir` atomically: into a sibling temporary directory, then renamed
    /// over `dir` (an existing package there is replaced only once the new one is complete).
    /// Fills in `manifest.files` and replaces the logits by their encoded-then-decoded values.
    /// Returns the sizes.
    pub fn save(&mut self, dir: &Path, full_dataset_images: usize) -> Result<SizeReport> {
        let m = &self.manifest;
        if self.patches.len() != m.items.len() * m.patch_len() {
            return Err(DaceError::Invalid(format!("{} patch bytes for {} patches of {}", self.patches.len(), m.items.len(), m.patch_len())));
        }
        if self.logits.len() != m.seeds.len() * m.items.len() * m.num_classes() {
            return Err(DaceError::Invalid("logits do not cover every (seed, patch)".into()));
        }
        let labels = m.labels.encode(&self.logits, m.num_classes());
        // Keep in memory what a reader of the file gets, so this process trains on the same labels.
        self.logits = m.labels.decode(&labels, m.num_classes()).map_err(DaceError::Invalid)?;
        let files = [(PATCHES, &self.patches), (LABELS, &labels)];
        self.manifest.files = files
            .iter()
            .map(|(name, bytes)| (name.to_string(), FileEntry { bytes: bytes.len() as u64, sha256: sha256_hex(bytes) }))
            .collect();
        let manifest = serde_json::to_vec_pretty(&self.manifest).map_err(|e| DaceError::Invalid(format!("manifest: {e}")))?;
        let tmp = fsio::sibling(dir, "tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| DaceError::io(&tmp, e))?;
        for (name, bytes) in files {
            fsio::write_atomic(&tmp.join(name), bytes)?;
        }
        fsio::write_atomic(&tmp.join(MANIFEST), &manifest)?;
        fsio::replace_dir(&tmp, dir)?;
        let m = &self.manifest;
        let total = (self.patches.len() + labels.len() + manifest.len()) as u64;
        let budget = (m.ipc * m.num_classes() * m.image_len()) as u64;
        let full = (full_dataset_images * (m.image_len() + 1)) as u64;
        Ok(SizeReport {
            patches_bytes: self.patches.len() as u64,
            labels_bytes: labels.len() as u64,
            manifest_bytes: manifest.len() as u64,
            total_bytes: total,
            ipc_budget_bytes: budget,
            full_dataset_bytes: full,
            total_over_budget: total as f64 / budget.max(1) as f64,
            total_over_full_dataset: total as f64 / full.max(1) as f64,
        })
    }

    /// Reads and checks a package: format and RNG versions, shapes, each file's size and sha256,
    /// label rows. Every error names the file and what is wrong.
    pub fn load(dir: &Path) -> Result<Package> {
        let mpath = dir.join(MANIFEST);
        if !mpath.exists() {
            return Err(DaceError::bad_file(&mpath, "not a dace package (no manifest.json)"));
        }
        Self::from_files(dir, &|name| fsio::read(&dir.join(name)))
    }

    /// [`Package::load`] from any source of the package's files (`read(name)` returns the bytes
    /// of `manifest.json`, `patches.bin`, `labels.bin`), e.g. files fetched by a browser; `dir`
    /// only names them in errors.
    pub fn from_files(dir: &Path, read: &dyn Fn(&str) -> Result<Vec<u8>>) -> Result<Package> {
        let mpath = dir.join(MANIFEST);
        let manifest: Manifest = serde_json::from_slice(&read(MANIFEST)?)
            .map_err(|e| DaceError::bad_file(&mpath, format!("invalid JSON: {e}")))?;
        manifest.check_shapes(&mpath)?;
        let read_checked = |name: &str| -> Result<Vec<u8>> {
            let path = dir.join(name);
            let Some(entry) = manifest.files.get(name) else {
                return Err(DaceError::bad_file(&mpath, format!("no entry for `{name}`")));
            };
            let bytes = read(name)?;
            if bytes.len() as u64 != entry.bytes {
                return Err(DaceError::bad_file(&path, format!("{} bytes, the manifest says {} (truncated or replaced)", bytes.len(), entry.bytes)));
            }
            let sha = sha256_hex(&bytes);
            if sha != entry.sha256 {
                return Err(DaceError::bad_file(&path, format!("sha256 {} does not match the manifest's {} (corrupted)", short(&sha), short(&entry.sha256))));
            }
            Ok(bytes)
        };
        let patches = read_checked(PATCHES)?;
        let label_bytes = read_checked(LABELS)?;
        let m = &manifest;
        if patches.len() != m.items.len() * m.patch_len() {
            return Err(DaceError::bad_file(
                dir.join(PATCHES),
                format!("{} bytes for {} patches of {}x{}x{}", patches.len(), m.items.len(), m.channels, m.patch_size[0], m.patch_size[1]),
            ));
        }
        let rows = m.seeds.len() * m.items.len();
        if label_bytes.len() != rows * m.labels.row_bytes(m.num_classes()) {
            return Err(DaceError::bad_file(dir.join(LABELS), format!("{} bytes, expected {rows} rows of {}", label_bytes.len(), m.labels)));
        }
        let logits = m.labels.decode(&label_bytes, m.num_classes()).map_err(|e| DaceError::bad_file(dir.join(LABELS), e))?;
        Ok(Package { manifest, patches, logits })
    }
}

impl Package {
    /// The package's labels in the student's form, bound to `set` (its [`crate::expand::distill::patch_set`]).
    pub fn stored_labels(&self, set: &crate::student::TrainingSet) -> crate::student::StoredLabels {
        use crate::student::labels::{LabelsMeta, StoredLabels};
        let m = &self.manifest;
        StoredLabels {
            meta: LabelsMeta {
                format: crate::student::labels::FORMAT.into(),
                items: m.items.len(),
                classes: m.num_classes(),
                seeds: m.seeds.clone(),
                augment: m.augment.clone(),
                set: set.description.clone(),
                set_fingerprint: set.fingerprint(),
                teacher: m.teacher.fingerprint.clone(),
            },
            logits: self.logits.clone(),
        }
    }
}

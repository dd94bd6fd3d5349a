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
pub mod manifest;
pub mod settings;
pub mod shard;

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use labels::LabelEncoding;
pub use manifest::{FileEntry, Manifest, PriorRef, Resolutions, TeacherRef, FORMAT, MAX_PRIOR_SIDE, RNG_SCHEME};
pub use settings::{AugmentConfig, ExpandConfig, Mode, PackageSettings, SchedulerKind, UNetDType, Variant};

use crate::error::{DaceError, Result};
use crate::fsio;
use manifest::short;

pub const MANIFEST: &str = "manifest.json";
pub const PATCHES: &str = "patches.bin";
pub const LABELS: &str = "labels.bin";

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
        m.validate()
            .map_err(|why| DaceError::bad_file(dir.join(MANIFEST), format!("refusing to write a contradictory manifest: {why}")))?;
        if self.patches.len() != m.items.len() * m.patch_len() {
            return Err(DaceError::Invalid(format!(
                "{} patch bytes for {} patches of {}",
                self.patches.len(),
                m.items.len(),
                m.patch_len()
            )));
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
        let manifest: Manifest =
            serde_json::from_slice(&read(MANIFEST)?).map_err(|e| DaceError::bad_file(&mpath, format!("invalid JSON: {e}")))?;
        manifest.validate().map_err(|why| DaceError::bad_file(&mpath, why))?;
        let read_checked = |name: &str| -> Result<Vec<u8>> {
            let path = dir.join(name);
            let Some(entry) = manifest.files.get(name) else {
                return Err(DaceError::bad_file(&mpath, format!("no entry for `{name}`")));
            };
            let bytes = read(name)?;
            if bytes.len() as u64 != entry.bytes {
                return Err(DaceError::bad_file(
                    &path,
                    format!("{} bytes, the manifest says {} (truncated or replaced)", bytes.len(), entry.bytes),
                ));
            }
            let sha = sha256_hex(&bytes);
            if sha != entry.sha256 {
                return Err(DaceError::bad_file(
                    &path,
                    format!("sha256 {} does not match the manifest's {} (corrupted)", short(&sha), short(&entry.sha256)),
                ));
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
            return Err(DaceError::bad_file(
                dir.join(LABELS),
                format!("{} bytes, expected {rows} rows of {}", label_bytes.len(), m.labels),
            ));
        }
        let logits = m.labels.decode(&label_bytes, m.num_classes()).map_err(|e| DaceError::bad_file(dir.join(LABELS), e))?;
        Ok(Package { manifest, patches, logits })
    }
}

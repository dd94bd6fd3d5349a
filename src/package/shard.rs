//! Package shards (docs/FORMAT.md, "Package shards"): one distillation split by class over
//! processes, GPUs or machines, and merged back into the package a single process would write.
//!
//! Every shard holds the whole distillation's manifest (so shards of different settings, priors,
//! teachers or coresets are told apart), the patches of every item (a label's CutMix partner may
//! be any item), and the f32 logits of its own classes' items. An item's expansion and label
//! depend on its index and the seed only, never on which shard made it, so [`merge`] assembles the
//! exact logits of a single run and encodes them as it would: the merged package is
//! byte-identical to a single-process one.
//!
//! ```text
//! SHARD/shard.json    format, the shard's classes, the full manifest, file sizes and sha256
//! SHARD/patches.bin   u8 [item][c][H/r][W/r], every item
//! SHARD/logits.bin    f32 LE [seed][own item][class], own items in package order
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::short;
use super::{sha256_hex, FileEntry, Manifest, Package, PATCHES};
use crate::error::{DaceError, Result};
use crate::fsio;

pub const SHARD_FORMAT: &str = "dace-package-shard/1";
pub const SHARD_JSON: &str = "shard.json";
pub const LOGITS: &str = "logits.bin";

/// Which classes a shard distills.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardSelect {
    /// `--shard i/n`: the i-th (from 0) of n contiguous blocks of classes, as even as they go.
    Part { index: usize, count: usize },
    /// `--classes`: classes by name (or by index, where no class has that name).
    Named(Vec<String>),
}

/// clap value parser of `--shard i/n`.
pub fn parse_part(text: &str) -> std::result::Result<ShardSelect, String> {
    let (i, n) = text.split_once('/').ok_or_else(|| format!("`{text}` is not i/n (e.g. 0/4: the first of 4 shards)"))?;
    let num = |t: &str| t.trim().parse::<usize>().map_err(|_| format!("`{t}` in `{text}` is not a whole number"));
    let (index, count) = (num(i)?, num(n)?);
    if count == 0 || index >= count {
        return Err(format!("`{text}`: the shard index runs from 0 to n - 1, and n is at least 1"));
    }
    Ok(ShardSelect::Part { index, count })
}

impl ShardSelect {
    /// The sorted class indices this selection takes out of `classes` (the package's names).
    pub fn classes(&self, classes: &[String]) -> Result<Vec<u32>> {
        let total = classes.len();
        let mut picked: Vec<u32> = match self {
            ShardSelect::Part { index, count } if *count > total => {
                return Err(DaceError::Invalid(format!(
                    "--shard {index}/{count}: {count} shards of {total} classes would leave some empty"
                )));
            }
            ShardSelect::Part { index, count } => (index * total / count..(index + 1) * total / count).map(|c| c as u32).collect(),
            ShardSelect::Named(names) => {
                let mut picked = Vec::with_capacity(names.len());
                for name in names {
                    let by_name = classes.iter().position(|c| c == name);
                    let by_index = name.parse::<usize>().ok().filter(|&i| i < total);
                    let class = by_name.or(by_index).ok_or_else(|| {
                        DaceError::Invalid(format!("--classes: `{name}` is not one of the {total} classes ({})", preview(classes)))
                    })? as u32;
                    if picked.contains(&class) {
                        return Err(DaceError::Invalid(format!("--classes: class `{}` is listed twice", classes[class as usize])));
                    }
                    picked.push(class);
                }
                picked
            }
        };
        picked.sort_unstable();
        Ok(picked)
    }
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    if names.len() > shown.len() {
        format!("{}, ...", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// One shard in memory: the full manifest (no file hashes), its classes, every item's patch, and
/// the logits `[seed][own item][class]`.
#[derive(Clone, Debug)]
pub struct Shard {
    pub manifest: Manifest,
    pub classes: Vec<u32>,
    pub patches: Vec<u8>,
    pub logits: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct ShardFile {
    format: String,
    classes: Vec<u32>,
    manifest: Manifest,
    files: BTreeMap<String, FileEntry>,
}

/// The items (package indices, ascending) whose class is in `classes`.
pub fn items_of(manifest: &Manifest, classes: &[u32]) -> Vec<usize> {
    (0..manifest.items.len()).filter(|&i| classes.contains(&manifest.items[i])).collect()
}

impl Shard {
    pub fn items(&self) -> Vec<usize> {
        items_of(&self.manifest, &self.classes)
    }

    /// Writes the shard to `dir` atomically (a sibling temporary directory renamed over it).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.check(dir)?;
        let logits: Vec<u8> = self.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let files = [(PATCHES, &self.patches), (LOGITS, &logits)];
        let entries = files
            .iter()
            .map(|(name, bytes)| (name.to_string(), FileEntry { bytes: bytes.len() as u64, sha256: sha256_hex(bytes) }))
            .collect();
        let mut manifest = self.manifest.clone();
        manifest.files.clear();
        let json = ShardFile { format: SHARD_FORMAT.into(), classes: self.classes.clone(), manifest, files: entries };
        let tmp = fsio::sibling(dir, "tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| DaceError::io(&tmp, e))?;
        for (name, bytes) in files {
            fsio::write_atomic(&tmp.join(name), bytes)?;
        }
        fsio::write_json(&tmp.join(SHARD_JSON), &json)?;
        fsio::replace_dir(&tmp, dir)
    }

    /// Reads and checks a shard: format, classes, each file's size and sha256, logits rows.
    pub fn load(dir: &Path) -> Result<Shard> {
        let jpath = dir.join(SHARD_JSON);
        if !jpath.exists() {
            let hint = if dir.join(super::MANIFEST).exists() { " (a merged package, not a shard)" } else { "" };
            return Err(DaceError::bad_file(&jpath, format!("not a dace package shard (no {SHARD_JSON}){hint}")));
        }
        let file: ShardFile = fsio::read_json(&jpath)?;
        if file.format != SHARD_FORMAT {
            return Err(DaceError::bad_file(&jpath, format!("format `{}`, this dace reads `{SHARD_FORMAT}`", file.format)));
        }
        file.manifest.validate().map_err(|why| DaceError::bad_file(&jpath, why))?;
        let read = |name: &str| -> Result<Vec<u8>> {
            let entry = file.files.get(name).ok_or_else(|| DaceError::bad_file(&jpath, format!("no entry for `{name}`")))?;
            let path = dir.join(name);
            let bytes = fsio::read(&path)?;
            if bytes.len() as u64 != entry.bytes {
                return Err(DaceError::bad_file(
                    &path,
                    format!("{} bytes, {SHARD_JSON} says {} (truncated or replaced)", bytes.len(), entry.bytes),
                ));
            }
            let sha = sha256_hex(&bytes);
            if sha != entry.sha256 {
                return Err(DaceError::bad_file(
                    &path,
                    format!("sha256 {} does not match {SHARD_JSON}'s {} (corrupted)", short(&sha), short(&entry.sha256)),
                ));
            }
            Ok(bytes)
        };
        let patches = read(PATCHES)?;
        let logits = read(LOGITS)?.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let shard = Shard { manifest: file.manifest, classes: file.classes, patches, logits };
        shard.check(dir)?;
        Ok(shard)
    }

    /// Classes in range, ascending and distinct; patches and logits of the manifest's shapes.
    fn check(&self, dir: &Path) -> Result<()> {
        let m = &self.manifest;
        let bad = |why: String| DaceError::bad_file(dir.join(SHARD_JSON), why);
        if self.classes.is_empty() || self.classes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(format!("classes {:?} are not a non-empty ascending list", self.classes)));
        }
        if let Some(c) = self.classes.iter().find(|&&c| c as usize >= m.num_classes()) {
            return Err(bad(format!("class {c} is outside the package's {} classes", m.num_classes())));
        }
        if self.patches.len() != m.items.len() * m.patch_len() {
            return Err(DaceError::bad_file(dir.join(PATCHES), format!("{} bytes for {} patches", self.patches.len(), m.items.len())));
        }
        let want = m.seeds.len() * self.items().len() * m.num_classes();
        if self.logits.len() != want {
            return Err(DaceError::bad_file(
                dir.join(LOGITS),
                format!("{} logits, expected {want} (seeds x own items x classes)", self.logits.len()),
            ));
        }
        if let Some(i) = self.logits.iter().position(|v| !v.is_finite()) {
            return Err(DaceError::bad_file(dir.join(LOGITS), format!("logit {i} is not finite")));
        }
        Ok(())
    }
}

/// The first top-level manifest field in which `a` and `b` differ.
fn first_difference(a: &Manifest, b: &Manifest) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return "manifest".into();
    };
    a.keys().chain(b.keys()).find(|k| a.get(*k) != b.get(*k)).cloned().unwrap_or_else(|| "manifest".into())
}

/// The package of `shards` (each with the directory it was read from, named in errors): the same
/// manifest, patches and logits a single process would have made. Refuses shards of another
/// distillation, shards that share a class, and a set that leaves a class out.
pub fn merge(shards: &[(PathBuf, Shard)]) -> Result<Package> {
    let Some((first_dir, first)) = shards.first() else {
        return Err(DaceError::Invalid("package merge: no shards given".into()));
    };
    let m = &first.manifest;
    let mut owner: Vec<Option<usize>> = vec![None; m.num_classes()];
    for (s, (dir, shard)) in shards.iter().enumerate() {
        if shard.manifest != *m {
            return Err(DaceError::bad_file(
                dir.join(SHARD_JSON),
                format!(
                    "its manifest's `{}` differs from that of {}: shards must come from one distillation (settings, prior, teacher, coreset, seeds)",
                    first_difference(&shard.manifest, m),
                    first_dir.display()
                ),
            ));
        }
        if shard.patches != first.patches {
            return Err(DaceError::bad_file(
                dir.join(PATCHES),
                format!("differs from {}'s: the shards were made from other coresets", first_dir.display()),
            ));
        }
        for &c in &shard.classes {
            if let Some(other) = owner[c as usize] {
                return Err(DaceError::Invalid(format!(
                    "shards {} and {} both hold class `{}`",
                    shards[other].0.display(),
                    dir.display(),
                    m.classes[c as usize]
                )));
            }
            owner[c as usize] = Some(s);
        }
    }
    let missing: Vec<&str> = (0..m.num_classes()).filter(|&c| owner[c].is_none()).map(|c| m.classes[c].as_str()).collect();
    if !missing.is_empty() {
        return Err(DaceError::Invalid(format!(
            "no shard holds {} of the {} classes (e.g. {}): merge needs every shard",
            missing.len(),
            m.num_classes(),
            missing.iter().take(5).copied().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Package { manifest: m.clone(), patches: first.patches.clone(), logits: assemble(m, shards, &owner) })
}

/// The logits `[seed][item][class]` of the package, each item's rows from the shard that owns its
/// class.
fn assemble(m: &Manifest, shards: &[(PathBuf, Shard)], owner: &[Option<usize>]) -> Vec<f32> {
    let k = m.num_classes();
    let own: Vec<usize> = shards.iter().map(|(_, s)| s.items().len()).collect();
    // The position of each item among its owner's items.
    let mut next = vec![0usize; shards.len()];
    let place: Vec<(usize, usize)> = m
        .items
        .iter()
        .map(|&c| {
            let s = owner[c as usize].expect("every class has an owner");
            next[s] += 1;
            (s, next[s] - 1)
        })
        .collect();
    let mut logits = Vec::with_capacity(m.seeds.len() * m.items.len() * k);
    for seed in 0..m.seeds.len() {
        for &(s, pos) in &place {
            let at = (seed * own[s] + pos) * k;
            logits.extend_from_slice(&shards[s].1.logits[at..at + k]);
        }
    }
    logits
}

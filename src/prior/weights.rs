//! diffusers safetensors in and out, with diffusers' key names.
//!
//! dace's modules are named field for field like diffusers' (`layers`), so keys map one to one;
//! burn-store's PyTorch adapters transpose linear weights and rename norm parameters
//! (`weight`/`bias` <-> `gamma`/`beta`). The only renames are the feed-forward's
//! `ff.net.0.proj` / `ff.net.2` (a PyTorch list of mixed layers) <-> `ff.geglu` / `ff.out`.
//!
//! A module's weights are one safetensors file or, as diffusers and transformers save anything
//! over their shard size, an index (`*.safetensors.index.json`: tensor -> shard) and its shards;
//! both load through one path ([`Weights`]), from memory-mapped files, tensor by tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::prelude::*;
use burn_store::{BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, SafetensorsStore, TensorSnapshot};
use serde_json::Value;

use crate::error::{DaceError, Result};
use crate::fsio::{self, FileBytes};
use crate::torch_weights::{self, SafetensorsEntry};

/// File names of a diffusers component directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// The index of a component whose weights are sharded (diffusers' `SAFE_WEIGHTS_INDEX_NAME`).
pub const WEIGHTS_INDEX_FILE: &str = "diffusion_pytorch_model.safetensors.index.json";

const FROM_DIFFUSERS: [(&str, &str); 2] = [(r"\.ff\.net\.0\.proj\.", ".ff.geglu."), (r"\.ff\.net\.2\.", ".ff.out.")];
const TO_DIFFUSERS: [(&str, &str); 2] = [(r"\.ff\.geglu\.", ".ff.net.0.proj."), (r"\.ff\.out\.", ".ff.net.2.")];

/// One safetensors file and the path that names it in errors.
struct WeightsFile {
    path: PathBuf,
    bytes: FileBytes,
}

impl Deref for WeightsFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The index of a sharded checkpoint, as diffusers and transformers write it:
/// `{"metadata": {"total_size": bytes, ...}, "weight_map": {tensor: shard file}}`.
#[derive(Clone, Debug)]
pub struct ShardIndex {
    pub path: PathBuf,
    pub weight_map: BTreeMap<String, String>,
    /// Bytes of tensor data over all shards, when the index records it.
    pub total_size: Option<u64>,
}

impl ShardIndex {
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| DaceError::bad_file(path, why);
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let map = v.get("weight_map").and_then(Value::as_object).ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut weight_map = BTreeMap::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| bad(format!("`weight_map` entry of `{tensor}` is not a file name")))?;
            // A shard is a file beside the index: no path may lead elsewhere.
            if !shard.ends_with(".safetensors") || shard.contains(['/', '\\']) || shard.starts_with('.') {
                return Err(bad(format!("shard {shard:?} of `{tensor}` is not a .safetensors file beside the index")));
            }
            weight_map.insert(tensor.clone(), shard.to_string());
        }
        if weight_map.is_empty() {
            return Err(bad("the `weight_map` names no tensor".into()));
        }
        let total_size = match v.get("metadata").and_then(|m| m.get("total_size")) {
            None | Some(Value::Null) => None,
            Some(n) => Some(n.as_u64().ok_or_else(|| bad(format!("`metadata.total_size` {n} is not a byte count")))?),
        };
        Ok(ShardIndex { path: path.to_path_buf(), weight_map, total_size })
    }

    /// The shard file names in name order (diffusers' `-0000k-of-0000n` order).
    pub fn shards(&self) -> Vec<String> {
        self.weight_map.values().cloned().collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Each shard's path: beside the index.
    pub fn shard_path(&self, shard: &str) -> PathBuf {
        self.path.with_file_name(shard)
    }
}

/// A module's weights: one safetensors file, or an index and its shards (in [`ShardIndex::shards`]
/// order). Loading either is the same: every tensor of every file, then one `apply`.
pub struct Weights {
    pub index: Option<ShardIndex>,
    /// Never empty: the one file, or at least one shard (an index maps at least one tensor).
    files: Vec<Arc<WeightsFile>>,
}

/// Where one tensor lies: its file, and its type, shape and byte range in that file.
struct Entry {
    file: usize,
    tensor: SafetensorsEntry,
}

impl Weights {
    pub fn single(path: &Path, bytes: FileBytes) -> Self {
        Weights { index: None, files: vec![Arc::new(WeightsFile { path: path.to_path_buf(), bytes })] }
    }

    /// The shards of `index`, each read by `read(shard file name)`.
    pub fn sharded(index: ShardIndex, read: &mut dyn FnMut(&str) -> Result<FileBytes>) -> Result<Self> {
        let mut files = Vec::new();
        for shard in index.shards() {
            let bytes = read(&shard)?;
            files.push(Arc::new(WeightsFile { path: index.shard_path(&shard), bytes }));
        }
        Ok(Weights { index: Some(index), files })
    }

    /// The file that names the weights as a whole in errors: the index, or the one file.
    pub fn origin(&self) -> &Path {
        match &self.index {
            Some(index) => &index.path,
            None => &self.files[0].path,
        }
    }

    /// Every file: the index first when there is one, then the weights files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.index.iter().map(|i| i.path.clone()).chain(self.files.iter().map(|f| f.path.clone())).collect()
    }

    /// Parses every file's header and checks the shards against the index: what loading checks
    /// before it reads a tensor (cheap: the tensor data is not touched).
    pub fn check(&self) -> Result<()> {
        self.entries().map(|_| ())
    }

    /// Every tensor of every file by name; with an index, exactly the tensors it maps, each in
    /// the shard it names, with as many bytes as its `total_size`.
    fn entries(&self) -> Result<BTreeMap<String, Entry>> {
        let mut entries = BTreeMap::new();
        for i in 0..self.files.len() {
            self.file_entries(i, &mut entries)?;
        }
        if let Some(index) = &self.index {
            self.check_index(index, &entries)?;
        }
        Ok(entries)
    }

    fn file_entries(&self, i: usize, entries: &mut BTreeMap<String, Entry>) -> Result<()> {
        let file = &self.files[i];
        for tensor in torch_weights::safetensors_entries(&file.path, &file.bytes)? {
            let name = tensor.name.clone();
            if let Some(before) = entries.insert(name.clone(), Entry { file: i, tensor }) {
                let why = format!("tensor `{name}` is also in {}", self.files[before.file].path.display());
                return Err(DaceError::bad_file(&file.path, why));
            }
        }
        Ok(())
    }

    fn check_index(&self, index: &ShardIndex, entries: &BTreeMap<String, Entry>) -> Result<()> {
        for (tensor, shard) in &index.weight_map {
            let Some(entry) = entries.get(tensor) else {
                return Err(DaceError::bad_file(
                    index.shard_path(shard),
                    format!("has no tensor `{tensor}`, which {} puts in this shard", index.path.display()),
                ));
            };
            let found = &self.files[entry.file].path;
            if found.file_name().and_then(|n| n.to_str()) != Some(shard.as_str()) {
                return Err(DaceError::bad_file(&index.path, format!("puts `{tensor}` in {shard}, but it is in {}", found.display())));
            }
        }
        if let Some(extra) = entries.keys().find(|k| !index.weight_map.contains_key(*k)) {
            let file = &self.files[entries[extra].file].path;
            return Err(DaceError::bad_file(file, format!("holds `{extra}`, which {} does not map", index.path.display())));
        }
        let bytes: u64 = entries.values().map(|e| e.tensor.range.len() as u64).sum();
        match index.total_size {
            Some(total) if total != bytes => Err(DaceError::bad_file(
                &index.path,
                format!("`metadata.total_size` is {total} bytes, the shards hold {bytes} bytes of tensors (a shard of another save?)"),
            )),
            _ => Ok(()),
        }
    }

    /// Lazy snapshots of every tensor: a tensor's bytes are copied out of its file only when the
    /// module takes it.
    fn snapshots(&self) -> Result<Vec<TensorSnapshot>> {
        let entries = self.entries()?;
        let snapshot = |(name, e): (String, Entry)| {
            torch_weights::lazy_snapshot(Arc::clone(&self.files[e.file]), &e.tensor, name.split('.').map(String::from).collect())
        };
        Ok(entries.into_iter().map(snapshot).collect())
    }
}

/// The weights at `path`: a safetensors file, or a sharded checkpoint's index (`*.json`) and the
/// shards beside it, every file memory-mapped.
pub fn open(path: &Path) -> Result<Weights> {
    if path.extension().and_then(|e| e.to_str()) != Some("json") {
        return Ok(Weights::single(path, fsio::map(path)?));
    }
    let index = ShardIndex::parse(path, &fsio::read(path)?)?;
    let index_path = index.path.clone();
    Weights::sharded(index, &mut |shard| {
        let shard_path = index_path.with_file_name(shard);
        if !shard_path.is_file() {
            return Err(DaceError::bad_file(&shard_path, format!("shard missing ({} names it)", index_path.display())));
        }
        fsio::map(&shard_path)
    })
}

/// Loads every parameter of `module` from safetensors bytes (f32, or f16/bf16 upcast to f32); `origin` names the file in errors.
/// Missing, unexpected or wrongly shaped tensors are errors: a checkpoint that does not match the
/// config never loads partially.
pub fn load_bytes<B: Backend, M: Module<B>>(module: &mut M, bytes: Vec<u8>, origin: &Path) -> Result<()> {
    load_weights(module, &Weights::single(origin, bytes.into()))
}

/// [`load_bytes`] with other key renames (regex, replacement) applied to the file's keys.
pub fn load_bytes_remapped<B: Backend, M: Module<B>>(module: &mut M, bytes: Vec<u8>, origin: &Path, remaps: &[(&str, &str)]) -> Result<()> {
    load_weights_remapped(module, &Weights::single(origin, bytes.into()), remaps)
}

/// [`load_bytes`] from one file or the shards of one ([`Weights`]).
pub fn load_weights<B: Backend, M: Module<B>>(module: &mut M, weights: &Weights) -> Result<()> {
    load_weights_remapped(module, weights, &FROM_DIFFUSERS)
}

/// [`load_weights`] with other key renames (regex, replacement) applied to the files' keys.
pub fn load_weights_remapped<B: Backend, M: Module<B>>(module: &mut M, weights: &Weights, remaps: &[(&str, &str)]) -> Result<()> {
    let origin = weights.origin();
    let mut remapper = KeyRemapper::new();
    for &(from, to) in remaps {
        remapper = remapper.add_pattern(from, to).map_err(|e| DaceError::Invalid(format!("key rename {from:?}: {e}")))?;
    }
    // As burn-store's own store does: rename, then one snapshot per (renamed) key.
    let (renamed, _) = remapper.remap(weights.snapshots()?);
    let by_key: BTreeMap<String, TensorSnapshot> = renamed.into_iter().map(|s| (s.full_path(), s)).collect();
    torch_weights::apply(module, by_key.into_values().collect(), origin)
}

/// Loads `module` from a safetensors file or a sharded checkpoint's index ([`open`]).
pub fn load<B: Backend, M: Module<B>>(module: &mut M, path: &Path) -> Result<()> {
    load_weights(module, &open(path)?)
}

/// The module's parameters as diffusers-named safetensors bytes.
pub fn to_bytes<B: Backend, M: Module<B>>(module: &M) -> Result<Vec<u8>> {
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter).skip_enum_variants(true);
    for (from, to) in TO_DIFFUSERS {
        store = store.with_key_remapping(from, to);
    }
    module.save_into(&mut store).map_err(|e| DaceError::Invalid(format!("cannot serialise weights: {e}")))?;
    let bytes = store.get_bytes().map_err(|e| DaceError::Invalid(format!("cannot serialise weights: {e}")))?;
    canonical_header(bytes)
}

/// The same safetensors file with its JSON header's keys in sorted order.
///
/// burn-store writes the `__metadata__` entries from a hash map, so their order (and the file's
/// bytes, and a prior's fingerprint) changed from one run to the next: importing one checkpoint
/// twice gave two priors that refuse each other's packages. The tensor data is untouched.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    use std::collections::BTreeMap;
    let bad = |why: &str| DaceError::Invalid(format!("cannot serialise weights: {why}"));
    let len = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize).ok_or_else(|| bad("no header"))?;
    let header = bytes.get(8..8 + len).ok_or_else(|| bad("header past the end"))?;
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let sorted: BTreeMap<String, serde_json::Value> = entries
        .into_iter()
        .map(|(k, v)| match v {
            // Nested objects (the metadata, each tensor's info) sorted as well.
            serde_json::Value::Object(m) => (k, serde_json::to_value(m.into_iter().collect::<BTreeMap<_, _>>()).expect("JSON values")),
            v => (k, v),
        })
        .collect();
    let mut json = serde_json::to_vec(&sorted).expect("JSON values serialise");
    // safetensors pads the header with spaces so the data starts 8-byte aligned.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// Writes the module's weights atomically.
pub fn save<B: Backend, M: Module<B>>(module: &M, path: &Path) -> Result<()> {
    fsio::write_atomic(path, &to_bytes(module)?)
}

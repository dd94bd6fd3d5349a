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
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use burn::module::{Module, ParamId};
use burn::prelude::*;
use burn::tensor::{BoolStore, DType};
use burn_store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot,
    TensorSnapshotError,
};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::error::{DaceError, Result};
use crate::fsio::{self, FileBytes};

/// File names of a diffusers component directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// The index of a component whose weights are sharded (diffusers' `SAFE_WEIGHTS_INDEX_NAME`).
pub const WEIGHTS_INDEX_FILE: &str = "diffusion_pytorch_model.safetensors.index.json";

const FROM_DIFFUSERS: [(&str, &str); 2] = [(r"\.ff\.net\.0\.proj\.", ".ff.geglu."), (r"\.ff\.net\.2\.", ".ff.out.")];
const TO_DIFFUSERS: [(&str, &str); 2] = [(r"\.ff\.geglu\.", ".ff.net.0.proj."), (r"\.ff\.out\.", ".ff.net.2.")];

fn listing(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    let more = keys.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// PyTorch layouts and names to burn's, with half-precision tensors (diffusers' fp16 variant
/// files) upcast to f32: dace computes in f32 on every backend, so an fp16 checkpoint gives the
/// outputs of its weights in f32.
#[derive(Clone, Default)]
struct FromPyTorchAsF32;

impl ModuleAdapter for FromPyTorchAsF32 {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let s = PyTorchToBurnAdapter.adapt(snapshot);
        if !matches!(s.dtype, DType::F16 | DType::BF16) {
            return s;
        }
        let data = s.clone_data_fn();
        TensorSnapshot::from_closure(
            std::rc::Rc::new(move || data().map(|d| d.convert_dtype(DType::F32))),
            DType::F32,
            s.shape.clone(),
            s.path_stack.clone().unwrap_or_default(),
            s.container_stack.clone().unwrap_or_default(),
            s.tensor_id.unwrap_or_default(),
        )
    }

    fn get_alternative_param_name(&self, param_name: &str, container_type: &str) -> Option<String> {
        PyTorchToBurnAdapter.get_alternative_param_name(param_name, container_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// One safetensors file and the path that names it in errors.
struct WeightsFile {
    path: PathBuf,
    bytes: FileBytes,
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

/// Where one tensor lies: its file, type, shape and byte range in that file.
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// safetensors' element types as burn's (the ones burn-store's own reader accepts).
fn burn_dtype(dtype: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match dtype {
        S::F64 => DType::F64,
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::I16 => DType::I16,
        S::I8 => DType::I8,
        S::U64 => DType::U64,
        S::U32 => DType::U32,
        S::U8 => DType::U8,
        S::BOOL => DType::Bool(BoolStore::Native),
        _ => return None,
    })
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
        let bad = |why: String| DaceError::bad_file(&file.path, why);
        // Checks that the header is valid and that the file holds exactly the data it describes
        // (a truncated file is refused here).
        let (header, meta) = SafeTensors::read_metadata(&file.bytes).map_err(|e| bad(format!("cannot read weights: {e}")))?;
        let data_start = 8 + header;
        for (name, info) in meta.tensors() {
            let dtype =
                burn_dtype(info.dtype).ok_or_else(|| bad(format!("tensor `{name}` is {:?}, a type dace does not read", info.dtype)))?;
            let range = data_start + info.data_offsets.0..data_start + info.data_offsets.1;
            let entry = Entry { file: i, dtype, shape: info.shape.clone(), range };
            if let Some(before) = entries.insert(name.clone(), entry) {
                return Err(bad(format!("tensor `{name}` is also in {}", self.files[before.file].path.display())));
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
        let bytes: u64 = entries.values().map(|e| e.range.len() as u64).sum();
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
        let mut snapshots = Vec::new();
        for (name, e) in self.entries()? {
            let file = Arc::clone(&self.files[e.file]);
            let (dtype, shape, range) = (e.dtype, e.shape.clone(), e.range.clone());
            let data = Rc::new(move || -> std::result::Result<TensorData, TensorSnapshotError> {
                Ok(TensorData::from_bytes_vec(file.bytes[range.clone()].to_vec(), shape.clone(), dtype))
            });
            let path = name.split('.').map(String::from).collect();
            snapshots.push(TensorSnapshot::from_closure(data, e.dtype, e.shape.into(), path, vec![], ParamId::new()));
        }
        Ok(snapshots)
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
    let result = module.apply(by_key.into_values().collect(), None, Some(Box::new(FromPyTorchAsF32)), true);
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| format!("{e:?}")).collect();
        return Err(DaceError::bad_file(origin, format!("weights do not fit the config: {}", listing(&errors))));
    }
    if !result.missing.is_empty() {
        let missing: Vec<String> = result.missing.iter().map(|(k, _)| k.clone()).collect();
        return Err(DaceError::bad_file(origin, format!("missing tensors: {}", listing(&missing))));
    }
    // burn-store reports norm weights it loaded under their burn names (`gamma`/`beta`) as
    // unused under their PyTorch names: those are not left over.
    let applied: std::collections::HashSet<&str> = result.applied.iter().map(String::as_str).collect();
    let consumed = |key: &str| {
        let renamed =
            key.strip_suffix(".weight").map(|p| format!("{p}.gamma")).or_else(|| key.strip_suffix(".bias").map(|p| format!("{p}.beta")));
        renamed.is_some_and(|r| applied.contains(r.as_str()))
    };
    let unused: Vec<String> = result.unused.iter().filter(|k| !consumed(k)).cloned().collect();
    if !unused.is_empty() {
        return Err(DaceError::bad_file(
            origin,
            format!("tensors the config has no place for (a different model variant?): {}", listing(&unused)),
        ));
    }
    Ok(())
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

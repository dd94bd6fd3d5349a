//! Weights saved from PyTorch into burn modules: safetensors files and `torch.save` state dicts
//! (.pth/.pt), read without Python. The prior's diffusers import and the teacher import share it.
//!
//! Tensors stay lazy until a module takes them (a safetensors file is memory-mapped, a .pth zip
//! entry is read when its tensor is), and a module is loaded whole or not at all: missing,
//! unexpected or wrongly shaped tensors are one error naming the file.

use std::collections::{BTreeMap, HashSet};
use std::ops::{Deref, Range};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use burn::module::{Module, ParamId};
use burn::prelude::*;
use burn::tensor::{BoolStore, DType};
use burn_store::{ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot, TensorSnapshotError};
use safetensors::SafeTensors;

use crate::error::{DaceError, Result};
use crate::fsio;

/// The first few of `keys` and how many more there are, for error messages.
pub fn listing(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    let more = keys.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// PyTorch layouts and names to burn's, with half-precision tensors (diffusers' fp16 variant
/// files, f16 .pth checkpoints) upcast to f32: dace computes in f32 on every backend, so an fp16
/// checkpoint gives the outputs of its weights in f32.
#[derive(Clone, Default)]
pub struct FromPyTorchAsF32;

impl ModuleAdapter for FromPyTorchAsF32 {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let s = PyTorchToBurnAdapter.adapt(snapshot);
        if !matches!(s.dtype, DType::F16 | DType::BF16) {
            return s;
        }
        let data = s.clone_data_fn();
        TensorSnapshot::from_closure(
            Rc::new(move || data().map(|d| d.convert_dtype(DType::F32))),
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

/// safetensors' element types as burn's (the ones burn-store's own reader accepts).
pub fn burn_dtype(dtype: safetensors::Dtype) -> Option<DType> {
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

/// Where one tensor of a safetensors file lies: its type, shape and byte range in the file.
pub struct SafetensorsEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// Every tensor of the safetensors file `bytes` (read from `path`, named in errors).
pub fn safetensors_entries(path: &Path, bytes: &[u8]) -> Result<Vec<SafetensorsEntry>> {
    let bad = |why: String| DaceError::bad_file(path, why);
    // Checks that the header is valid and that the file holds exactly the data it describes
    // (a truncated file is refused here).
    let (header, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("cannot read weights: {e}")))?;
    let data_start = 8 + header;
    let mut entries = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = burn_dtype(info.dtype).ok_or_else(|| bad(format!("tensor `{name}` is {:?}, a type dace does not read", info.dtype)))?;
        let range = data_start + info.data_offsets.0..data_start + info.data_offsets.1;
        entries.push(SafetensorsEntry { name, dtype, shape: info.shape.clone(), range });
    }
    Ok(entries)
}

/// A snapshot of `entry` under the module path `path` whose bytes are copied out of `file` only
/// when a module takes it.
pub fn lazy_snapshot<F: Deref<Target = [u8]> + 'static>(file: Arc<F>, entry: &SafetensorsEntry, path: Vec<String>) -> TensorSnapshot {
    let (dtype, shape, range) = (entry.dtype, entry.shape.clone(), entry.range.clone());
    let data = Rc::new(move || -> std::result::Result<TensorData, TensorSnapshotError> {
        Ok(TensorData::from_bytes_vec(file[range.clone()].to_vec(), shape.clone(), dtype))
    });
    TensorSnapshot::from_closure(data, entry.dtype, entry.shape.clone().into(), path, vec![], ParamId::new())
}

/// The tensors of one safetensors file by name, memory-mapped and lazy.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>> {
    let file = Arc::new(fsio::map(path)?);
    let entries = safetensors_entries(path, &file)?;
    Ok(entries
        .iter()
        .map(|e| (e.name.clone(), lazy_snapshot(Arc::clone(&file), e, e.name.split('.').map(String::from).collect())))
        .collect())
}

/// The tensors of a `torch.save` file (zip, legacy or plain pickle, read by burn-store's pickle
/// reader) by name. Nested dicts are flattened with dots: a training checkpoint
/// `{"state_dict": {"conv1.weight": ...}, "epoch": 3}` gives `state_dict.conv1.weight`.
#[cfg(not(target_family = "wasm"))]
pub fn read_pth(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>> {
    use burn_store::pytorch::PytorchReader;
    // The reader opens the file itself: an absent file is an I/O error, not a format error.
    std::fs::metadata(path).map_err(|e| DaceError::io(path, e))?;
    let bad = |why: String| DaceError::bad_file(path, format!("not a readable PyTorch checkpoint: {why}"));
    // The pickle reader trusts the file's structure in places; a malformed file is an error
    // naming it, never a panic.
    let read = std::panic::catch_unwind(|| PytorchReader::new(path));
    let reader = match read {
        Ok(Ok(reader)) => reader,
        Ok(Err(e)) => return Err(bad(e.to_string())),
        Err(_) => return Err(bad("malformed pickle or archive".into())),
    };
    Ok(reader.into_tensors().into_iter().collect())
}

/// The browser build reads no PyTorch checkpoints (see Cargo.toml).
#[cfg(target_family = "wasm")]
pub fn read_pth(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>> {
    Err(DaceError::bad_file(path, "PyTorch checkpoints are not read by the browser build"))
}

/// Loads every parameter of `module` from `snapshots` (PyTorch names and layouts, f16/bf16 upcast
/// to f32); `origin` names the file in errors. Missing, unexpected or wrongly shaped tensors are
/// errors: a checkpoint that does not match the module never loads partially.
pub fn apply<B: Backend, M: Module<B>>(module: &mut M, snapshots: Vec<TensorSnapshot>, origin: &Path) -> Result<()> {
    // Data is read (and may turn out malformed) only now, inside burn-store.
    let applied =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| module.apply(snapshots, None, Some(Box::new(FromPyTorchAsF32)), true)));
    let Ok(result) = applied else {
        return Err(DaceError::bad_file(origin, "malformed tensor data"));
    };
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
    let applied: HashSet<&str> = result.applied.iter().map(String::as_str).collect();
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

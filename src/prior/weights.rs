//! diffusers safetensors in and out, with diffusers' key names.
//!
//! dace's modules are named field for field like diffusers' (`layers`), so keys map one to one;
//! burn-store's PyTorch adapters transpose linear weights and rename norm parameters
//! (`weight`/`bias` <-> `gamma`/`beta`). The only renames are the feed-forward's
//! `ff.net.0.proj` / `ff.net.2` (a PyTorch list of mixed layers) <-> `ff.geglu` / `ff.out`.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{BurnToPyTorchAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot};

use crate::error::{DaceError, Result};
use crate::fsio;

/// File names of a diffusers component directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

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

/// Loads every parameter of `module` from safetensors bytes (f32, or f16/bf16 upcast to f32); `origin` names the file in errors.
/// Missing, unexpected or wrongly shaped tensors are errors: a checkpoint that does not match the
/// config never loads partially.
pub fn load_bytes<B: Backend, M: Module<B>>(module: &mut M, bytes: Vec<u8>, origin: &Path) -> Result<()> {
    load_bytes_remapped(module, bytes, origin, &FROM_DIFFUSERS)
}

/// [`load_bytes`] with other key renames (regex, replacement) applied to the file's keys.
pub fn load_bytes_remapped<B: Backend, M: Module<B>>(module: &mut M, bytes: Vec<u8>, origin: &Path, remaps: &[(&str, &str)]) -> Result<()> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(FromPyTorchAsF32)
        .skip_enum_variants(true)
        .allow_partial(true)
        .validate(false);
    for &(from, to) in remaps {
        store = store.with_key_remapping(from, to);
    }
    let result = module.load_from(&mut store).map_err(|e| DaceError::bad_file(origin, format!("cannot read weights: {e}")))?;
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

pub fn load<B: Backend, M: Module<B>>(module: &mut M, path: &Path) -> Result<()> {
    load_bytes(module, fsio::read(path)?, path)
}

/// The module's parameters as diffusers-named safetensors bytes.
pub fn to_bytes<B: Backend, M: Module<B>>(module: &M) -> Result<Vec<u8>> {
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter).skip_enum_variants(true);
    for (from, to) in TO_DIFFUSERS {
        store = store.with_key_remapping(from, to);
    }
    module.save_into(&mut store).map_err(|e| DaceError::Invalid(format!("cannot serialise weights: {e}")))?;
    store.get_bytes().map_err(|e| DaceError::Invalid(format!("cannot serialise weights: {e}")))
}

/// Writes the module's weights atomically.
pub fn save<B: Backend, M: Module<B>>(module: &M, path: &Path) -> Result<()> {
    fsio::write_atomic(path, &to_bytes(module)?)
}

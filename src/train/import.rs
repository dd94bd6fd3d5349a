//! `dace teacher import`: a pretrained torchvision or timm ResNet as a dace teacher directory,
//! which `dace eval`, `coreset` and `distill` load as they load a trained one.
//!
//! The weights are a safetensors file or a `torch.save` state dict (.pth/.pt, read without
//! Python), possibly wrapped as training scripts save them. The architecture is read off the
//! tensor names and shapes, and every tensor is checked against torchvision's table for it before
//! any is loaded, so that a bad file is refused naming the tensor (and both shapes) instead of
//! loading partially. Half-precision and f64 tensors load as f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::TensorSnapshot;
use sha2::{Digest, Sha256};

use super::checkpoint::{save_model, ModelMeta, ModelSource, Normalization, SourceLibrary};
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::models::torchvision::{describe, detect_resnet, resnet_tensors, TorchTensor};
use crate::models::{Arch, Classifier, ClassifierConfig, ResNetBlock, ResNetShape};
use crate::torch_weights::{self, listing};

/// Which ResNet a weights file must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ImportArch {
    /// Whatever torchvision-layout ResNet the tensors describe (any depth and width).
    Auto,
    Resnet18,
    Resnet50,
}

/// What `dace teacher import` records beside the weights.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub arch: ImportArch,
    pub library: SourceLibrary,
    /// Class names in output order; `None`: `class0`, `class1`, ...
    pub classes: Option<Vec<String>>,
    pub normalization: Normalization,
    pub dataset: String,
    /// Side of the square images the model is run at.
    pub image_size: usize,
}

/// Names of the dicts training scripts wrap a state dict in (`{"state_dict": ...}`,
/// `{"model": ...}`), and DataParallel's `module.` prefix.
const WRAPPERS: [&str; 4] = ["state_dict", "model", "model_state_dict", "module"];

/// A state dict read from a file: torchvision names -> lazy tensors, unwrapped, without the
/// `num_batches_tracked` counters (training bookkeeping, not weights).
pub struct StateDict {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, TensorSnapshot>,
}

impl StateDict {
    /// Reads a safetensors file or a `torch.save` file (by extension, else by its first bytes).
    pub fn read(path: &Path) -> Result<Self> {
        let tensors = if is_torch_save(path)? { torch_weights::read_pth(path)? } else { torch_weights::read_safetensors(path)? };
        Ok(StateDict { path: path.to_path_buf(), tensors: unwrap(tensors) })
    }

    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors.iter().map(|(k, t)| (k.clone(), t.shape.to_vec())).collect()
    }
}

fn is_torch_save(path: &Path) -> Result<bool> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "pth" | "pt" | "ckpt" => return Ok(true),
        "safetensors" => return Ok(false),
        _ => {}
    }
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| DaceError::io(path, e))?;
    let n = file.read(&mut head).map_err(|e| DaceError::io(path, e))?;
    // torch.save writes a zip archive; older versions a pickle (protocol 2: 0x80 0x02).
    Ok(head[..n].starts_with(b"PK\x03\x04") || head[..n].starts_with(&[0x80, 0x02]))
}

/// The tensors under the wrapper prefix in front of `conv1.weight` (`state_dict.module.`, ...),
/// without it; other entries of a wrapped checkpoint (optimizer state, an EMA copy) are left out.
fn unwrap(tensors: BTreeMap<String, TensorSnapshot>) -> BTreeMap<String, TensorSnapshot> {
    let is_wrapper = |prefix: &str| prefix.split_terminator('.').all(|segment| WRAPPERS.contains(&segment));
    let prefix = tensors.keys().filter_map(|k| k.strip_suffix("conv1.weight")).filter(|p| is_wrapper(p)).min_by_key(|p| p.len());
    let prefix = prefix.unwrap_or("").to_string();
    tensors
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|k| (k.to_string(), t)))
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect()
}

/// The net `arch` asks for: what the file holds for `Auto`, else the standard one, whose block
/// type must be the file's.
fn chosen(state: &StateDict, arch: ImportArch) -> Result<(ResNetBlock, ResNetShape, usize, usize)> {
    let found = detect_resnet(&state.shapes()).map_err(|why| DaceError::bad_file(&state.path, why))?;
    let (block, shape) = match arch {
        ImportArch::Auto => return Ok((found.block, found.shape, found.in_channels, found.num_classes)),
        ImportArch::Resnet18 => (ResNetBlock::Basic, ResNetShape::RESNET18),
        ImportArch::Resnet50 => (ResNetBlock::Bottleneck, ResNetShape::RESNET50),
    };
    if found.block != block {
        let why = format!("holds {}, not a {} ({block:?} blocks)", found.describe(), describe(block, &shape));
        return Err(DaceError::bad_file(&state.path, why));
    }
    Ok((block, shape, found.in_channels, found.num_classes))
}

/// Every tensor of `table` is in the file with its shape and a float type, and nothing else is.
fn check_tensors(state: &StateDict, table: &[TorchTensor], net: &str) -> Result<()> {
    let bad = |why: String| Err(DaceError::bad_file(&state.path, why));
    let missing: Vec<String> = table.iter().filter(|t| !state.tensors.contains_key(&t.key)).map(|t| t.key.clone()).collect();
    if !missing.is_empty() {
        return bad(format!("missing tensors of {net}: {}", listing(&missing)));
    }
    let expected: BTreeMap<&str, &TorchTensor> = table.iter().map(|t| (t.key.as_str(), t)).collect();
    let unexpected: Vec<String> = state.tensors.keys().filter(|k| !expected.contains_key(k.as_str())).cloned().collect();
    if !unexpected.is_empty() {
        return bad(format!("tensors {net} has no place for: {}", listing(&unexpected)));
    }
    let mut wrong = Vec::new();
    for t in table {
        let found = &state.tensors[&t.key];
        if found.shape.as_slice() != t.shape.as_slice() {
            wrong.push(format!("`{}` has shape {:?}, {net} needs {:?}", t.key, found.shape.as_slice(), t.shape));
        } else if !matches!(found.dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            wrong.push(format!("`{}` is {:?}, not floating point", t.key, found.dtype));
        }
    }
    if !wrong.is_empty() {
        return bad(listing(&wrong));
    }
    Ok(())
}

/// The file's tensor for `t`, under its path in dace's module, as f32.
fn renamed(state: &StateDict, t: &TorchTensor) -> TensorSnapshot {
    let s = &state.tensors[&t.key];
    let data = s.clone_data_fn();
    let dtype = s.dtype;
    let as_f32 = Rc::new(move || data().map(|d| if dtype == DType::F32 { d } else { d.convert_dtype(DType::F32) }));
    let path = t.path.split('.').map(String::from).collect();
    TensorSnapshot::from_closure(as_f32, DType::F32, s.shape.clone(), path, vec![], ParamId::new())
}

/// The ResNet in `state` as a dace classifier for `image_size`-pixel square images, and its config.
pub fn load_resnet<B: Backend>(
    state: &StateDict,
    arch: ImportArch,
    image_size: usize,
    device: &B::Device,
) -> Result<(Classifier<B>, ClassifierConfig)> {
    let (block, shape, in_channels, num_classes) = chosen(state, arch)?;
    let table = resnet_tensors(block, &shape, in_channels, num_classes);
    check_tensors(state, &table, &describe(block, &shape))?;
    let dace_arch = match block {
        ResNetBlock::Basic => Arch::Resnet18Imagenet,
        ResNetBlock::Bottleneck => Arch::Resnet50Imagenet,
    };
    let standard = dace_arch.resnet().map(|(_, s)| s);
    let config = ClassifierConfig::new(dace_arch, in_channels, num_classes, [image_size, image_size])
        .with_resnet((Some(shape) != standard).then_some(shape));
    config.validate().map_err(|why| DaceError::bad_file(&state.path, why))?;
    let mut model = config.init::<B>(device);
    torch_weights::apply(&mut model, table.iter().map(|t| renamed(state, t)).collect(), &state.path)?;
    Ok((model, config))
}

fn sha256_hex(path: &Path) -> Result<String> {
    Ok(format!("{:x}", Sha256::digest(&*fsio::map(path)?)))
}

/// Imports the ResNet in `weights` into the teacher directory `out` (model.json + model.bin).
pub fn import_teacher<B: Backend>(weights: &Path, options: &ImportOptions, out: &Path, device: &B::Device) -> Result<ModelMeta> {
    let state = StateDict::read(weights)?;
    let (model, config) = load_resnet::<B>(&state, options.arch, options.image_size, device)?;
    let classes = match &options.classes {
        Some(names) if names.len() != config.num_classes => {
            let why =
                format!("{} class names given, the weights in {} have {} classes", names.len(), weights.display(), config.num_classes);
            return Err(DaceError::Invalid(why));
        }
        Some(names) => names.clone(),
        None => (0..config.num_classes).map(|i| format!("class{i}")).collect(),
    };
    let norm = &options.normalization;
    let channels = config.in_channels;
    if norm.mean.len() != channels || norm.std.len() != channels || norm.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(DaceError::Invalid(format!(
            "normalisation mean {:?} / std {:?}: the model takes {channels} channels, each needs a mean and a positive std",
            norm.mean, norm.std
        )));
    }
    let file = weights.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let source = ModelSource { format: options.library, file, sha256: sha256_hex(weights)? };
    let mut meta = ModelMeta::new(config, norm.clone(), &options.dataset, &classes);
    meta.source = Some(source);
    save_model(out, &model, &meta)?;
    Ok(meta)
}

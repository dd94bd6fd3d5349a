//! A trained (or imported) classifier on disk: `model.json` (architecture, input normalisation,
//! class names, and for an imported one where its weights came from) and `model.bin` (weights,
//! burn's binary record at full precision).

use std::path::Path;

use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use serde::{Deserialize, Serialize};

use crate::error::{DaceError, Result};
use crate::fsio;
use crate::models::{Classifier, ClassifierConfig};

pub const MODEL_META: &str = "model.json";
pub const MODEL_WEIGHTS: &str = "model.bin";
const FORMAT: &str = "dace-classifier/1";

/// burn's named MessagePack record: self-describing, and a corrupt file is an error, not a panic
/// (its bincode recorder unwraps).
pub type WeightRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Per-channel input normalisation `(x/255 - mean) / std`, fixed at training time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The library whose model an imported checkpoint is for (torchvision and timm name a ResNet's
/// tensors alike, so this is recorded, not detected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SourceLibrary {
    Torchvision,
    Timm,
}

/// Where an imported model's weights came from (`dace teacher import`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSource {
    pub format: SourceLibrary,
    /// The weights file's name.
    pub file: String,
    /// sha256 (hex) of the weights file.
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: String,
    pub config: ClassifierConfig,
    pub normalization: Normalization,
    pub dataset: String,
    pub classes: Vec<String>,
    /// Imported models only: trained ones have none, left out of the file, and a model.json
    /// written before imports existed reads as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ModelSource>,
}

impl ModelMeta {
    pub fn new(config: ClassifierConfig, normalization: Normalization, dataset: &str, classes: &[String]) -> Self {
        ModelMeta { format: FORMAT.into(), config, normalization, dataset: dataset.into(), classes: classes.to_vec(), source: None }
    }
}

pub fn model_to_bytes<B: Backend>(model: &Classifier<B>) -> Result<Vec<u8>> {
    WeightRecorder::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| DaceError::Invalid(format!("cannot serialise model weights: {e}")))
}

pub fn model_from_bytes<B: Backend>(config: &ClassifierConfig, bytes: Vec<u8>, origin: &Path, device: &B::Device) -> Result<Classifier<B>> {
    // burn panics on some malformed records (e.g. an unparsable parameter id) instead of
    // returning its error: both are a bad file.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| WeightRecorder::default().load(bytes, device)));
    let record = match loaded {
        Ok(Ok(record)) => record,
        Ok(Err(e)) => return Err(DaceError::bad_file(origin, format!("not a dace model for {config:?}: {e}"))),
        Err(_) => return Err(DaceError::bad_file(origin, format!("not a dace model for {config:?}: malformed record"))),
    };
    let fresh = config.init::<B>(device);
    let expected = crate::models::param_shapes(&fresh);
    // burn asserts (panics) when a record has another number of layers than the module, e.g. a
    // model.json edited from convnet3 to convnet4: that is a bad file, not a bug, so it becomes
    // an error naming it. Nothing outlives the closure but its result.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fresh.load_record(record)));
    let Ok(model) = loaded else {
        return Err(DaceError::bad_file(origin, format!("weights do not fit {config:?}: another number of layers")));
    };
    let found = crate::models::param_shapes(&model);
    if found != expected {
        return Err(DaceError::bad_file(origin, format!("weights do not fit {config:?}: parameter shapes differ")));
    }
    Ok(model)
}

pub fn save_model<B: Backend>(dir: &Path, model: &Classifier<B>, meta: &ModelMeta) -> Result<()> {
    fsio::write_atomic(&dir.join(MODEL_WEIGHTS), &model_to_bytes(model)?)?;
    fsio::write_json(&dir.join(MODEL_META), meta)
}

/// sha256 (hex) of a saved model's weights and metadata: identifies a teacher in caches.
pub fn fingerprint(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for file in [MODEL_META, MODEL_WEIGHTS] {
        h.update(fsio::read(&dir.join(file))?);
    }
    Ok(format!("{:x}", h.finalize()))
}

pub fn load_meta(dir: &Path) -> Result<ModelMeta> {
    let path = dir.join(MODEL_META);
    let meta: ModelMeta = fsio::read_json(&path)?;
    if meta.format != FORMAT {
        return Err(DaceError::bad_file(path, format!("format `{}`, expected `{FORMAT}`", meta.format)));
    }
    meta.config.validate().map_err(|why| DaceError::bad_file(&path, why))?;
    let n = meta.config.in_channels;
    if meta.normalization.mean.len() != n || meta.normalization.std.len() != n {
        return Err(DaceError::bad_file(path, format!("normalisation must have {n} channels")));
    }
    Ok(meta)
}

pub fn load_model<B: Backend>(dir: &Path, device: &B::Device) -> Result<(Classifier<B>, ModelMeta)> {
    let meta = load_meta(dir)?;
    let path = dir.join(MODEL_WEIGHTS);
    let model = model_from_bytes(&meta.config, fsio::read(&path)?, &path, device)?;
    Ok((model, meta))
}

//! A prior on disk, in diffusers' directory layout so one loader serves imported checkpoints and
//! the priors dace trains itself:
//!
//! ```text
//! PRIOR/model_index.json                       dace's index: dataset, classes, image shape
//! PRIOR/vae/{config.json, diffusion_pytorch_model.safetensors}
//! PRIOR/unet/{config.json, diffusion_pytorch_model.safetensors}
//! PRIOR/class_embedder/{config.json, diffusion_pytorch_model.safetensors}   (class-conditional)
//! ```
//!
//! The class embedder is a table of `num_classes + 1` rows (the last is the null class used for
//! unconditional prediction); a class's row is the UNet's one-token `encoder_hidden_states`.
//! A prior is identified by its fingerprint: sha256 over each component's config and weights.

use std::path::{Path, PathBuf};

use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{UNetConfig, VaeConfig};
use super::weights::{self, CONFIG_FILE, WEIGHTS_FILE};
use super::{AutoencoderKL, UNet2DConditionModel};
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::DaceBackend;

pub const INDEX_FILE: &str = "model_index.json";
const FORMAT: &str = "dace-prior/1";
const COMPONENTS: [&str; 3] = ["vae", "unet", "class_embedder"];

/// `model_index.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorIndex {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    pub format: String,
    pub dataset: String,
    pub classes: Vec<String>,
    /// Images the prior works on: `[channels, height, width]`.
    pub image_shape: [usize; 3],
}

impl PriorIndex {
    pub fn new(dataset: &str, classes: &[String], image_shape: [usize; 3]) -> Self {
        PriorIndex {
            class_name: "DacePrior".into(),
            format: FORMAT.into(),
            dataset: dataset.into(),
            classes: classes.to_vec(),
            image_shape,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassEmbedderConfig {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    pub num_classes: usize,
    pub embedding_dim: usize,
}

/// Class rows plus a final null row.
#[derive(Module, Debug)]
pub struct ClassEmbedder<B: Backend> {
    pub embedding: Embedding<B>,
}

impl ClassEmbedderConfig {
    pub fn new(num_classes: usize, embedding_dim: usize) -> Self {
        ClassEmbedderConfig { class_name: "ClassEmbedder".into(), num_classes, embedding_dim }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ClassEmbedder<B> {
        ClassEmbedder { embedding: EmbeddingConfig::new(self.num_classes + 1, self.embedding_dim).init(device) }
    }
}

impl<B: Backend> ClassEmbedder<B> {
    pub fn null_class(&self) -> usize {
        self.embedding.weight.dims()[0] - 1
    }

    /// `[batch, 1, dim]` contexts for class ids (`null_class()` for unconditional).
    pub fn context(&self, classes: &[usize], device: &B::Device) -> Tensor<B, 3> {
        let ids: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [classes.len()]), device);
        self.embedding.forward(ids.unsqueeze_dim(1))
    }
}

/// A loaded prior.
pub struct Prior<B: Backend> {
    pub index: PriorIndex,
    pub vae_config: VaeConfig,
    pub unet_config: UNetConfig,
    pub vae: AutoencoderKL<B>,
    pub unet: UNet2DConditionModel<B>,
    pub classes: ClassEmbedder<B>,
    pub fingerprint: String,
}

fn component(dir: &Path, name: &str, file: &str) -> PathBuf {
    dir.join(name).join(file)
}

/// sha256 over every component's config and weights, in a fixed order.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for name in COMPONENTS {
        for file in [CONFIG_FILE, WEIGHTS_FILE] {
            let bytes = fsio::read(&component(dir, name, file))?;
            h.update(format!("{name}/{file}:{}\n", bytes.len()).as_bytes());
            h.update(&bytes);
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

impl<B: DaceBackend> Prior<B> {
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        if !index_path.exists() {
            return Err(DaceError::bad_file(&index_path, "not a dace prior directory (no model_index.json)"));
        }
        let index: PriorIndex = fsio::read_json(&index_path)?;
        if index.format != FORMAT {
            return Err(DaceError::bad_file(&index_path, format!("format `{}`, this dace reads `{FORMAT}`", index.format)));
        }
        let vae_config = VaeConfig::load(&component(dir, "vae", CONFIG_FILE))?;
        let unet_config = UNetConfig::load(&component(dir, "unet", CONFIG_FILE))?;
        let ce_path = component(dir, "class_embedder", CONFIG_FILE);
        let ce_config: ClassEmbedderConfig = fsio::read_json(&ce_path)?;
        if ce_config.num_classes != index.classes.len() || ce_config.embedding_dim != unet_config.cross_attention_dim {
            return Err(DaceError::bad_file(
                &ce_path,
                format!(
                    "{} classes of width {}, but the index lists {} classes and the UNet attends to width {}",
                    ce_config.num_classes,
                    ce_config.embedding_dim,
                    index.classes.len(),
                    unet_config.cross_attention_dim
                ),
            ));
        }
        if unet_config.in_channels != vae_config.latent_channels || unet_config.out_channels != vae_config.latent_channels {
            return Err(DaceError::bad_file(
                component(dir, "unet", CONFIG_FILE),
                format!("UNet works on {} channels, the VAE's latents have {}", unet_config.in_channels, vae_config.latent_channels),
            ));
        }
        let mut vae = vae_config.init::<B>(device);
        weights::load(&mut vae, &component(dir, "vae", WEIGHTS_FILE))?;
        let mut unet = unet_config.init::<B>(device);
        weights::load(&mut unet, &component(dir, "unet", WEIGHTS_FILE))?;
        let mut classes = ce_config.init::<B>(device);
        weights::load(&mut classes, &component(dir, "class_embedder", WEIGHTS_FILE))?;
        Ok(Prior { index, vae_config, unet_config, vae, unet, classes, fingerprint: fingerprint(dir)? })
    }

    /// Latent shape `[channels, h, w]` of the prior's images.
    pub fn latent_shape(&self) -> [usize; 3] {
        let f = self.vae_config.downscale();
        let [_, h, w] = self.index.image_shape;
        [self.vae_config.latent_channels, h / f, w / f]
    }
}

/// Writes one component (config + weights), weights first: a directory whose config exists has
/// its weights too.
pub fn save_component<B: Backend, M: Module<B>>(dir: &Path, name: &str, config: &serde_json::Value, module: &M) -> Result<()> {
    weights::save(module, &component(dir, name, WEIGHTS_FILE))?;
    fsio::write_json(&component(dir, name, CONFIG_FILE), config)
}

pub fn save_index(dir: &Path, index: &PriorIndex) -> Result<()> {
    fsio::write_json(&dir.join(INDEX_FILE), index)
}

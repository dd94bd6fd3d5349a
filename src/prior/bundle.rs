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
//! A component imported from a sharded checkpoint holds diffusers' index
//! (`diffusion_pytorch_model.safetensors.index.json`) and its shards in place of the one file.
//!
//! The class embedder is a table of `num_classes + 1` rows (the last is the null class used for
//! unconditional prediction); a class's row is the UNet's one-token `encoder_hidden_states`.
//! A prior is identified by its fingerprint: sha256 over each component's config and weights
//! (index and shards, for sharded weights).

use std::path::{Path, PathBuf};

use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{UNetConfig, VaeConfig};
use super::pipeline::Cond;
use super::weights::{self, ShardIndex, Weights, CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
use super::{AutoencoderKL, TextTime, UNet2DConditionModel};
use crate::error::{DaceError, Result};
use crate::fsio::{self, FileBytes};
use crate::kernels::DaceBackend;

pub const INDEX_FILE: &str = "model_index.json";
const FORMAT: &str = "dace-prior/1";
const COMPONENTS: [&str; 3] = ["vae", "unet", "class_embedder"];

/// `model_index.json`.
/// The two pipeline families dace imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineKind {
    /// One CLIP text encoder; context = its last hidden state (SD 1.x, SD 2.x, SD-Turbo).
    StableDiffusion,
    /// Two encoders; context = both penultimate states concatenated, pooled embedding and time
    /// ids through the UNet's added embedding (SDXL, SDXL-Turbo).
    StableDiffusionXl,
}

/// Where an imported prior came from (stored in its `model_index.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub source: String,
    pub pipeline: String,
    pub kind: PipelineKind,
    pub prompt: String,
    pub prompts: Vec<String>,
    /// The weights files used, relative to the source directory.
    pub weights: Vec<String>,
    pub tokenizers: Vec<String>,
    pub null_prompt: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorIndex {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    pub format: String,
    pub dataset: String,
    pub classes: Vec<String>,
    /// Images the prior works on: `[channels, height, width]`.
    pub image_shape: [usize; 3],
    /// Set for a prior imported from a diffusers checkpoint (`dace prior import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportRecord>,
}

impl PriorIndex {
    pub fn new(dataset: &str, classes: &[String], image_shape: [usize; 3]) -> Self {
        PriorIndex {
            class_name: "DacePrior".into(),
            format: FORMAT.into(),
            dataset: dataset.into(),
            classes: classes.to_vec(),
            image_shape,
            imported: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassEmbedderConfig {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    pub num_classes: usize,
    /// Width of one context token (the UNet's `cross_attention_dim`).
    pub embedding_dim: usize,
    /// Context tokens per class: 1 for a learnt class embedding, 77 for a prompt's text
    /// embeddings (an imported text-to-image checkpoint).
    #[serde(default = "one_token")]
    pub tokens: usize,
    /// SDXL: width of the pooled text embedding stored per class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled_dim: Option<usize>,
    /// SDXL: the 6 micro-conditioning numbers, the same for every item (original size, crop
    /// top-left, target size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ids: Option<[f32; 6]>,
}

fn one_token() -> usize {
    1
}

/// Class rows plus a final null row. A row holds a class's whole context (`tokens` x width,
/// flattened) and, for SDXL, its pooled embedding.
#[derive(Module, Debug)]
pub struct ClassEmbedder<B: Backend> {
    pub embedding: Embedding<B>,
    pub pooled: Option<Embedding<B>>,
    pub tokens: usize,
    /// SDXL's micro-conditioning, the same for every item (from the config; not a weight).
    pub time_ids: Option<[f32; 6]>,
}

impl ClassEmbedderConfig {
    pub fn new(num_classes: usize, embedding_dim: usize) -> Self {
        ClassEmbedderConfig { class_name: "ClassEmbedder".into(), num_classes, embedding_dim, tokens: 1, pooled_dim: None, time_ids: None }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ClassEmbedder<B> {
        ClassEmbedder {
            embedding: EmbeddingConfig::new(self.num_classes + 1, self.tokens * self.embedding_dim).init(device),
            pooled: self.pooled_dim.map(|d| EmbeddingConfig::new(self.num_classes + 1, d).init(device)),
            tokens: self.tokens,
            time_ids: self.time_ids,
        }
    }
}

impl<B: Backend> ClassEmbedder<B> {
    pub fn null_class(&self) -> usize {
        self.embedding.weight.dims()[0] - 1
    }

    /// `[batch, 1, width]`: the table's rows for `classes`.
    fn rows(table: &Embedding<B>, classes: &[usize], device: &B::Device) -> Tensor<B, 3> {
        let ids: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [classes.len()]), device);
        table.forward(ids.unsqueeze_dim(1))
    }

    /// `[batch, tokens, dim]` contexts for class ids (`null_class()` for unconditional).
    pub fn context(&self, classes: &[usize], device: &B::Device) -> Tensor<B, 3> {
        let flat = Self::rows(&self.embedding, classes, device);
        let [b, _, width] = flat.dims();
        flat.reshape([b, self.tokens, width / self.tokens])
    }

    /// `[batch, pooled_dim]` pooled text embeddings (SDXL), if the table has them.
    pub fn pooled(&self, classes: &[usize], device: &B::Device) -> Option<Tensor<B, 2>> {
        self.pooled.as_ref().map(|table| Self::rows(table, classes, device).squeeze_dim(1))
    }

    /// The UNet's conditioning for `classes` (`null_class()` for unconditional).
    pub fn cond(&self, classes: &[usize], device: &B::Device) -> Cond<B> {
        let text_time = match (self.pooled(classes, device), self.time_ids) {
            (Some(text_embeds), Some(ids)) => Some(TextTime { text_embeds, time_ids: classes.iter().flat_map(|_| ids).collect() }),
            _ => None,
        };
        Cond { context: self.context(classes, device), text_time }
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

impl<B: crate::kernels::DaceBackend> Prior<B> {
    /// The prior with its UNet computing in `dtype` (its weights cast once, here). The
    /// fingerprint is unchanged: it names the weights as stored, and the package records the
    /// compute type beside it (`ExpandConfig::unet_dtype`).
    /// A device without general arithmetic in `dtype` (a wgpu adapter without `shader-f16`, say)
    /// is an error, not a panic inside a kernel.
    pub fn with_unet_dtype(mut self, dtype: burn::tensor::FloatDType) -> Result<Self> {
        if self.unet.dtype() != dtype {
            let device = self.unet.conv_in.weight.val().device();
            if !B::supports_dtype(&device, dtype.into()) {
                return Err(DaceError::Invalid(format!(
                    "the device {device:?} has no general {dtype:?} arithmetic, so the UNet cannot run in that type there \
                     (a package made with --unet-dtype f16 needs an f16-capable GPU or the CPU)"
                )));
            }
            self.unet = self.unet.cast_weights(dtype);
        }
        Ok(self)
    }
}

fn component(dir: &Path, name: &str, file: &str) -> PathBuf {
    dir.join(name).join(file)
}

/// The files a prior consists of, relative to its directory (what loading it reads; its
/// training checkpoints and sample grids are not among them). A sharded component lists its index
/// and shards.
pub fn prior_files(dir: &Path) -> Result<Vec<String>> {
    let mut files = vec![INDEX_FILE.to_string()];
    for name in COMPONENTS {
        files.push(format!("{name}/{CONFIG_FILE}"));
        let index_path = component(dir, name, WEIGHTS_INDEX_FILE);
        if component(dir, name, WEIGHTS_FILE).exists() || !index_path.exists() {
            files.push(format!("{name}/{WEIGHTS_FILE}"));
            continue;
        }
        let index = ShardIndex::parse(&index_path, &fsio::read(&index_path)?)?;
        files.push(format!("{name}/{WEIGHTS_INDEX_FILE}"));
        files.extend(index.shards().into_iter().map(|shard| format!("{name}/{shard}")));
    }
    Ok(files)
}

/// sha256 over every component's config and weights, in a fixed order (see `read_components`).
pub fn fingerprint(dir: &Path) -> Result<String> {
    Ok(read_components(dir, &|rel| fsio::map(&dir.join(rel)))?.0)
}

/// A component's config and weights, as read for loading.
struct ComponentFiles {
    config: FileBytes,
    weights: Weights,
}

/// Config and weights of each component in the fingerprint's order (`vae`, `unet`,
/// `class_embedder`), and the fingerprint: sha256 over `"{component}/{file}:{len}\n"` then the
/// bytes, file after file: `config.json`, then `diffusion_pytorch_model.safetensors` or, for
/// sharded weights, the index followed by its shards in name order.
fn read_components(dir: &Path, read: &dyn Fn(&str) -> Result<FileBytes>) -> Result<(String, Vec<ComponentFiles>)> {
    let mut h = Sha256::new();
    let mut components = Vec::new();
    for name in COMPONENTS {
        let mut read_hashed = |file: &str| -> Result<FileBytes> {
            let rel = format!("{name}/{file}");
            let bytes = read(&rel)?;
            h.update(format!("{rel}:{}\n", bytes.len()).as_bytes());
            h.update(&bytes[..]);
            Ok(bytes)
        };
        let config = read_hashed(CONFIG_FILE)?;
        let weights = read_weights(&dir.join(name), &mut read_hashed)?;
        components.push(ComponentFiles { config, weights });
    }
    Ok((format!("{:x}", h.finalize()), components))
}

/// A component's weights: its one file or, where there is none, its index and shards. The one
/// file's error is the one reported when neither is there.
fn read_weights(dir: &Path, read: &mut dyn FnMut(&str) -> Result<FileBytes>) -> Result<Weights> {
    let single_err = match read(WEIGHTS_FILE) {
        Ok(bytes) => return Ok(Weights::single(&dir.join(WEIGHTS_FILE), bytes)),
        Err(e) => e,
    };
    let Ok(index_bytes) = read(WEIGHTS_INDEX_FILE) else {
        return Err(single_err);
    };
    let index = ShardIndex::parse(&dir.join(WEIGHTS_INDEX_FILE), &index_bytes)?;
    Weights::sharded(index, read)
}

impl<B: DaceBackend> Prior<B> {
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        if !index_path.exists() {
            return Err(DaceError::bad_file(&index_path, "not a dace prior directory (no model_index.json)"));
        }
        // Memory-mapped: a file is paged in as it is hashed and its tensors are taken.
        Self::load_with(dir, &|rel| fsio::map(&dir.join(rel)), device)
    }

    /// [`Prior::load`] from any source of the prior's files (`read("unet/config.json")` returns
    /// that file's bytes), e.g. files fetched by a browser; `dir` only names them in errors. Each
    /// file is read once: the fingerprint is hashed as the files arrive. A component whose
    /// `diffusion_pytorch_model.safetensors` cannot be read is read from its index and shards.
    pub fn from_files(dir: &Path, read: &dyn Fn(&str) -> Result<Vec<u8>>, device: &B::Device) -> Result<Self> {
        Self::load_with(dir, &|rel| read(rel).map(FileBytes::from), device)
    }

    fn load_with(dir: &Path, read: &dyn Fn(&str) -> Result<FileBytes>, device: &B::Device) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let json = |rel: &str, bytes: &[u8]| -> Result<serde_json::Value> {
            serde_json::from_slice(bytes).map_err(|e| DaceError::bad_file(dir.join(rel), format!("invalid JSON: {e}")))
        };
        let index: PriorIndex = serde_json::from_value(json(INDEX_FILE, &read(INDEX_FILE)?)?)
            .map_err(|e| DaceError::bad_file(&index_path, format!("not a dace prior index: {e}")))?;
        if index.format != FORMAT {
            return Err(DaceError::bad_file(&index_path, format!("format `{}`, this dace reads `{FORMAT}`", index.format)));
        }
        // Config and weights of each component, hashed in the fingerprint's order.
        let (fingerprint, components) = read_components(dir, read)?;
        let Ok([vae_files, unet_files, ce_files]) = <[ComponentFiles; 3]>::try_from(components) else {
            unreachable!("read_components reads the three components");
        };
        let vae_path = component(dir, "vae", CONFIG_FILE);
        let unet_path = component(dir, "unet", CONFIG_FILE);
        let ce_path = component(dir, "class_embedder", CONFIG_FILE);
        let vae_config = VaeConfig::from_json(&vae_path, json("vae/config.json", &vae_files.config)?)?;
        let unet_config = UNetConfig::from_json(&unet_path, json("unet/config.json", &unet_files.config)?)?;
        let ce_config: ClassEmbedderConfig = serde_json::from_value(json("class_embedder/config.json", &ce_files.config)?)
            .map_err(|e| DaceError::bad_file(&ce_path, format!("not a class embedder config: {e}")))?;
        if ce_config.num_classes != index.classes.len()
            || ce_config.embedding_dim != unet_config.cross_attention_dim
            || ce_config.tokens == 0
        {
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
        match (unet_config.text_time(), ce_config.pooled_dim, ce_config.time_ids) {
            (None, None, None) => {}
            (Some(spec), Some(pooled), Some(_)) if spec.pooled_dim() == pooled => {}
            (spec, pooled, time_ids) => {
                return Err(DaceError::bad_file(
                    &ce_path,
                    format!(
                        "pooled embeddings of width {pooled:?} and time ids {time_ids:?} do not fit the UNet's added \
                         embedding (pooled width {:?})",
                        spec.map(|s| s.pooled_dim())
                    ),
                ))
            }
        }
        if unet_config.in_channels != vae_config.latent_channels || unet_config.out_channels != vae_config.latent_channels {
            return Err(DaceError::bad_file(
                &unet_path,
                format!("UNet works on {} channels, the VAE's latents have {}", unet_config.in_channels, vae_config.latent_channels),
            ));
        }
        let mut vae = vae_config.init::<B>(device);
        weights::load_weights(&mut vae, &vae_files.weights)?;
        let mut unet = unet_config.init::<B>(device);
        weights::load_weights(&mut unet, &unet_files.weights)?;
        let mut classes = ce_config.init::<B>(device);
        weights::load_weights(&mut classes, &ce_files.weights)?;
        Ok(Prior { index, vae_config, unet_config, vae, unet, classes, fingerprint })
    }

    /// The UNet's conditioning for `classes` (`classes.null_class()` for unconditional).
    pub fn cond(&self, classes: &[usize], device: &B::Device) -> Cond<B> {
        self.classes.cond(classes, device)
    }

    /// `[h, w]` of the images the prior was trained or imported for (its index's `image_shape`).
    pub fn image_size(&self) -> [usize; 2] {
        let [_, h, w] = self.index.image_shape;
        [h, w]
    }

    /// Latent shape `[channels, h, w]` of the prior's images.
    pub fn latent_shape(&self) -> [usize; 3] {
        let [_, h, w] = self.index.image_shape;
        self.latent_shape_at([h, w])
    }

    /// Latent shape `[channels, h, w]` of images of `[h, w]` (a multiple of the VAE's factor).
    pub fn latent_shape_at(&self, [h, w]: [usize; 2]) -> [usize; 3] {
        let f = self.vae_config.downscale();
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

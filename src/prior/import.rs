//! `dace prior import`: a diffusers text-to-image checkpoint (SD-Turbo and other SD 1.x / 2.x
//! epsilon models; SDXL-Turbo and SDXL base) as a dace prior.
//!
//! dace conditions on classes, so the text side runs once, at import: each class's prompt
//! (`"A photo of {class}"`) goes through the checkpoint's tokenizer(s) and text encoder(s) exactly
//! as diffusers' `encode_prompt` does, and the result (77 context tokens, plus SDXL's pooled
//! embedding) becomes the class's row of the prior's class table. The empty prompt is the null row
//! (zeros where the pipeline sets `force_zeros_for_empty_prompt`, as SDXL does). The VAE and UNet
//! files are hard-linked (or copied) unchanged, so an imported prior is the checkpoint's image
//! side plus a small table, loaded by the same code as the priors dace trains.
//!
//! Checkpoints are read as current diffusers and transformers save them: tokenizers as
//! `tokenizer.json` or `vocab.json` + `merges.txt`, any weights as one safetensors file or sharded
//! (an index and its shards, linked as they are).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Param;
use burn::nn::Embedding;
use burn::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::bundle::{self, ClassEmbedder, ClassEmbedderConfig, ImportRecord, PipelineKind, Prior, PriorIndex};
use super::clip::{self, ClipTextConfig};
use super::config::{UNetConfig, VaeConfig};
use super::tokenizer::ClipTokenizer;
use super::weights::{self, Weights, CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::DaceBackend;

const SD_PIPELINES: [&str; 2] = ["StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"];
const SDXL_PIPELINES: [&str; 2] = ["StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"];

/// A diffusers checkpoint directory that passed the structural checks.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub pipeline: String,
    pub kind: PipelineKind,
    /// SDXL pipelines use zeros, not the empty prompt's embedding, as the unconditional input.
    pub force_zeros_for_empty_prompt: bool,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> DaceError {
    DaceError::bad_file(path, why)
}

impl Checkpoint {
    /// Reads `model_index.json` and checks the components and the noise schedule dace supports.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model_index.json");
        if !index_path.exists() {
            return Err(bad(&index_path, "not a diffusers checkpoint directory (no model_index.json)"));
        }
        let index: Value = fsio::read_json(&index_path)?;
        let pipeline = index.get("_class_name").and_then(Value::as_str).unwrap_or("(none)").to_string();
        let kind = if SD_PIPELINES.contains(&pipeline.as_str()) {
            PipelineKind::StableDiffusion
        } else if SDXL_PIPELINES.contains(&pipeline.as_str()) {
            PipelineKind::StableDiffusionXl
        } else {
            return Err(bad(
                &index_path,
                format!("pipeline `{pipeline}` is not supported (dace imports {SD_PIPELINES:?} and {SDXL_PIPELINES:?})"),
            ));
        };
        if index.get("requires_aesthetics_score").and_then(Value::as_bool) == Some(true) {
            return Err(bad(&index_path, "an SDXL refiner (requires_aesthetics_score) is not supported: import the base model"));
        }
        let mut expected = vec![
            ("vae", "AutoencoderKL"),
            ("unet", "UNet2DConditionModel"),
            ("text_encoder", "CLIPTextModel"),
            ("tokenizer", "CLIPTokenizer"),
        ];
        if kind == PipelineKind::StableDiffusionXl {
            expected.push(("text_encoder_2", "CLIPTextModelWithProjection"));
            expected.push(("tokenizer_2", "CLIPTokenizer"));
        }
        for (name, class) in expected {
            let found = index.get(name).and_then(Value::as_array).and_then(|a| a.get(1)).and_then(Value::as_str);
            let ok = match found {
                Some(f) => f == class || (class == "CLIPTokenizer" && f == "CLIPTokenizerFast"),
                None => false,
            };
            if !ok {
                return Err(bad(&index_path, format!("component `{name}` is {found:?}, dace needs a {class}")));
            }
            if !dir.join(name).is_dir() {
                return Err(bad(&dir.join(name), format!("component directory of the {class} is missing")));
            }
        }
        check_scheduler(&dir.join("scheduler").join("scheduler_config.json"))?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            pipeline,
            kind,
            force_zeros_for_empty_prompt: kind == PipelineKind::StableDiffusionXl
                && index.get("force_zeros_for_empty_prompt").and_then(Value::as_bool).unwrap_or(true),
        })
    }

    /// The weights of a component: `{base}.safetensors` or the index of its shards
    /// `{base}.safetensors.index.json`, else the fp16 variant of either (`{base}.fp16.safetensors`,
    /// `{base}.safetensors.index.fp16.json`; loaded upcast to f32). [`weights::open`] reads both kinds.
    pub fn weights_file(&self, component: &str, base: &str) -> Result<PathBuf> {
        let dir = self.dir.join(component);
        let names = [
            format!("{base}.safetensors"),
            format!("{base}.safetensors.index.json"),
            format!("{base}.fp16.safetensors"),
            format!("{base}.safetensors.index.fp16.json"),
        ];
        if let Some(name) = names.iter().find(|n| dir.join(n).is_file()) {
            return Ok(dir.join(name));
        }
        let why = if dir.join(format!("{base}.bin")).exists() || dir.join(format!("{base}.bin.index.json")).exists() {
            "only pickle (.bin) weights: convert them to safetensors (dace never unpickles)"
        } else {
            "no safetensors weights"
        };
        Err(bad(&dir, format!("{why} (looked for {})", names.join(", "))))
    }

    /// `(tokenizer dir, text encoder dir)` per encoder, in diffusers' order.
    fn encoders(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut v = vec![(self.dir.join("tokenizer"), self.dir.join("text_encoder"))];
        if self.kind == PipelineKind::StableDiffusionXl {
            v.push((self.dir.join("tokenizer_2"), self.dir.join("text_encoder_2")));
        }
        v
    }
}

/// dace's expansion uses one noise schedule (SD's scaled-linear betas, epsilon prediction);
/// a checkpoint trained with another is refused rather than sampled wrongly.
fn check_scheduler(path: &Path) -> Result<()> {
    let cfg: Value = fsio::read_json(path)?;
    let num = |k: &str, default: f64| cfg.get(k).and_then(Value::as_f64).unwrap_or(default);
    let text = |k: &str, default: &str| cfg.get(k).and_then(Value::as_str).unwrap_or(default).to_string();
    let checks = [
        ("prediction_type", text("prediction_type", "epsilon") == "epsilon", "epsilon (v-prediction models are not supported)"),
        ("beta_schedule", text("beta_schedule", "linear") == "scaled_linear", "scaled_linear"),
        ("beta_start", (num("beta_start", 0.0001) - 0.00085).abs() < 1e-9, "0.00085"),
        ("beta_end", (num("beta_end", 0.02) - 0.012).abs() < 1e-9, "0.012"),
        ("num_train_timesteps", num("num_train_timesteps", 1000.0) == 1000.0, "1000"),
        ("trained_betas", cfg.get("trained_betas").is_none_or(Value::is_null), "null"),
        ("rescale_betas_zero_snr", cfg.get("rescale_betas_zero_snr").and_then(Value::as_bool) != Some(true), "false"),
    ];
    for (key, ok, want) in checks {
        if !ok {
            return Err(bad(path, format!("`{key}` is {}, dace's sampler needs {want}", cfg.get(key).unwrap_or(&Value::Null))));
        }
    }
    Ok(())
}

/// Per prompt: the context the UNet attends to and, for SDXL, the pooled embedding.
pub struct PromptEmbeds<B: Backend> {
    /// `[prompts, 77, cross_attention_dim]`.
    pub context: Tensor<B, 3>,
    /// `[prompts, pooled_dim]` (SDXL).
    pub pooled: Option<Tensor<B, 2>>,
    /// sha256 of each tokenizer's files.
    pub tokenizers: Vec<String>,
}

/// diffusers' `encode_prompt` without guidance: every prompt through every encoder.
pub fn encode_prompts<B: Backend>(ckpt: &Checkpoint, prompts: &[String], device: &B::Device) -> Result<PromptEmbeds<B>> {
    let mut contexts = Vec::new();
    let mut pooled = None;
    let mut tokenizers = Vec::new();
    let encoders = ckpt.encoders();
    for (i, (tok_dir, enc_dir)) in encoders.iter().enumerate() {
        let tokenizer = ClipTokenizer::from_dir(tok_dir)?;
        let config = ClipTextConfig::load(&enc_dir.join(CONFIG_FILE))?;
        let mut encoder = config.init::<B>(device);
        clip::load_weights(&mut encoder, &ckpt.weights_file(enc_dir.file_name().and_then(|n| n.to_str()).unwrap_or(""), "model")?)?;
        let ids = prompts.iter().map(|p| tokenizer.encode(p)).collect::<Result<Vec<_>>>()?;
        // Chunks bound the activation memory of large class lists.
        let (mut ctx, mut pool) = (Vec::new(), Vec::new());
        for chunk in ids.chunks(16) {
            let out = encoder.forward(chunk, device)?;
            match ckpt.kind {
                PipelineKind::StableDiffusion => ctx.push(out.last_hidden_state),
                PipelineKind::StableDiffusionXl => {
                    ctx.push(out.hidden_states[out.hidden_states.len() - 2].clone());
                    if i + 1 == encoders.len() {
                        let Some(embeds) = out.text_embeds else {
                            return Err(bad(&enc_dir.join(CONFIG_FILE), "SDXL's second text encoder needs a text projection"));
                        };
                        pool.push(embeds);
                    }
                }
            }
        }
        contexts.push(Tensor::cat(ctx, 0));
        if !pool.is_empty() {
            pooled = Some(Tensor::cat(pool, 0));
        }
        tokenizers.push(tokenizer.fingerprint);
    }
    Ok(PromptEmbeds { context: Tensor::cat(contexts, 2), pooled, tokenizers })
}

/// What an import is asked to do.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub dataset: String,
    pub classes: Vec<String>,
    /// Prompt template; `{class}` is replaced by each class name.
    pub prompt: String,
    /// Side of the (square, colour) images the prior works on.
    pub resolution: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    pub command: &'static str,
    pub out: String,
    pub record: ImportRecord,
    pub tokens: usize,
    pub context_dim: usize,
    pub pooled_dim: Option<usize>,
    pub image_shape: [usize; 3],
    pub fingerprint: String,
    pub seconds: f64,
}

/// Links `from` to `to`, copying where a hard link is impossible (another file system).
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map(|_| ()).map_err(|e| DaceError::io(to, e))
}

/// Links a component's weights into `dir` under a prior's names: the one file as
/// `diffusion_pytorch_model.safetensors`, or the index as
/// `diffusion_pytorch_model.safetensors.index.json` beside its shards, which keep their names
/// (the index names them).
fn link_weights(weights: &Weights, dir: &Path) -> Result<()> {
    let Some(index) = &weights.index else {
        return link_or_copy(weights.origin(), &dir.join(WEIGHTS_FILE));
    };
    link_or_copy(&index.path, &dir.join(WEIGHTS_INDEX_FILE))?;
    for shard in index.shards() {
        // A shard under the one-file name would be read as the whole component.
        if shard == WEIGHTS_FILE {
            return Err(bad(&index.path, format!("names a shard `{WEIGHTS_FILE}`, the name of an unsharded file")));
        }
        link_or_copy(&index.shard_path(&shard), &dir.join(&shard))?;
    }
    Ok(())
}

fn class_table<B: Backend>(rows: Tensor<B, 2>) -> Embedding<B> {
    Embedding { weight: Param::from_tensor(rows) }
}

/// The checkpoint's VAE and UNet configurations, each with the file it came from.
struct ImageSide {
    vae_cfg_path: PathBuf,
    unet_cfg_path: PathBuf,
    vae_cfg: VaeConfig,
    unet_cfg: UNetConfig,
}

impl ImageSide {
    fn load(source: &Path) -> Result<Self> {
        let vae_cfg_path = source.join("vae").join(CONFIG_FILE);
        let unet_cfg_path = source.join("unet").join(CONFIG_FILE);
        let vae_cfg = VaeConfig::load(&vae_cfg_path)?;
        let unet_cfg = UNetConfig::load(&unet_cfg_path)?;
        Ok(ImageSide { vae_cfg_path, unet_cfg_path, vae_cfg, unet_cfg })
    }

    /// Refuses options and models dace cannot import, naming the flag or the file.
    fn check(&self, ckpt: &Checkpoint, opts: &ImportOptions) -> Result<()> {
        if opts.classes.is_empty() {
            return Err(DaceError::Invalid("import needs at least one class".into()));
        }
        if !opts.prompt.contains("{class}") {
            return Err(DaceError::Invalid(format!("prompt template {:?} has no `{{class}}`", opts.prompt)));
        }
        let downscale = self.vae_cfg.downscale();
        if opts.resolution == 0 || !opts.resolution.is_multiple_of(downscale) {
            return Err(DaceError::Invalid(format!("resolution {} is not a multiple of the VAE's downscale {downscale}", opts.resolution)));
        }
        match (ckpt.kind, self.unet_cfg.text_time()) {
            (PipelineKind::StableDiffusionXl, None) => {
                return Err(bad(&self.unet_cfg_path, "an SDXL pipeline's UNet needs addition_embed_type \"text_time\""))
            }
            (PipelineKind::StableDiffusion, Some(_)) => {
                return Err(bad(&self.unet_cfg_path, "addition_embed_type \"text_time\" in a non-SDXL pipeline"))
            }
            _ => {}
        }
        if self.vae_cfg.in_channels != 3 {
            return Err(bad(&self.vae_cfg_path, format!("{} image channels: dace imports RGB models", self.vae_cfg.in_channels)));
        }
        Ok(())
    }
}

/// The class table built from the prompt embeddings: one row per class, then the null row.
struct ClassTable<B: Backend> {
    config: ClassEmbedderConfig,
    table: ClassEmbedder<B>,
}

/// Encodes every class's prompt (and the empty prompt, unless the pipeline uses zeros for it)
/// and builds the class table. Returns it with the prompts and the tokenizers used.
fn class_table_of<B: Backend>(
    ckpt: &Checkpoint,
    side: &ImageSide,
    opts: &ImportOptions,
    device: &B::Device,
) -> Result<(ClassTable<B>, Vec<String>, Vec<String>)> {
    let mut prompts: Vec<String> = opts.classes.iter().map(|c| opts.prompt.replace("{class}", c)).collect();
    if !ckpt.force_zeros_for_empty_prompt {
        prompts.push(String::new());
    }
    let embeds = encode_prompts::<B>(ckpt, &prompts, device)?;
    let [_, tokens, dim] = embeds.context.dims();
    if dim != side.unet_cfg.cross_attention_dim {
        return Err(bad(
            &side.unet_cfg_path,
            format!("`cross_attention_dim` is {}, the text encoders give width {dim}", side.unet_cfg.cross_attention_dim),
        ));
    }
    let mut context = embeds.context.reshape([prompts.len(), tokens * dim]);
    let mut pooled = embeds.pooled;
    if ckpt.force_zeros_for_empty_prompt {
        context = Tensor::cat(vec![context, Tensor::zeros([1, tokens * dim], device)], 0);
        pooled = pooled.map(|p| {
            let d = p.dims()[1];
            Tensor::cat(vec![p, Tensor::zeros([1, d], device)], 0)
        });
    }
    let pooled_dim = pooled.as_ref().map(|p| p.dims()[1]);
    let res = opts.resolution as f32;
    let mut config = ClassEmbedderConfig::new(opts.classes.len(), dim);
    config.tokens = tokens;
    config.pooled_dim = pooled_dim;
    // SDXL's micro-conditioning for an uncropped square image of the working size.
    config.time_ids = pooled_dim.map(|_| [res, res, 0.0, 0.0, res, res]);
    let table = ClassEmbedder { embedding: class_table(context), pooled: pooled.map(class_table), tokens, time_ids: config.time_ids };
    prompts.truncate(opts.classes.len());
    Ok((ClassTable { config, table }, prompts, embeds.tokenizers))
}

/// The VAE's and UNet's weights, checked where they are (a truncated file or a shard the index
/// does not match is named in the checkpoint, not in the prior), and every weights file of the
/// checkpoint relative to `source` (recorded; an index before its shards).
fn weight_files(ckpt: &Checkpoint, source: &Path) -> Result<(Weights, Weights, Vec<String>)> {
    let vae = weights::open(&ckpt.weights_file("vae", "diffusion_pytorch_model")?)?;
    let unet = weights::open(&ckpt.weights_file("unet", "diffusion_pytorch_model")?)?;
    vae.check()?;
    unet.check()?;
    let relative = |p: &PathBuf| p.strip_prefix(source).unwrap_or(p).display().to_string();
    let mut all: Vec<String> = vae.paths().iter().chain(&unet.paths()).map(relative).collect();
    for (_, enc) in ckpt.encoders() {
        let name = enc.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        all.extend(weights::open(&ckpt.weights_file(&name, "model")?)?.paths().iter().map(relative));
    }
    Ok((vae, unet, all))
}

/// Imports `source` into a new prior directory `out` (written atomically), checks that it loads
/// as a prior, and returns the report.
pub fn import<B: DaceBackend>(source: &Path, opts: &ImportOptions, out: &Path, device: &B::Device) -> Result<ImportReport> {
    let start = Instant::now();
    let ckpt = Checkpoint::open(source)?;
    let side = ImageSide::load(source)?;
    side.check(&ckpt, opts)?;
    // The image side's files first: they fail fast, before the text encoders run.
    let (vae_weights, unet_weights, weights) = weight_files(&ckpt, source)?;
    let (classes, prompts, tokenizers) = class_table_of::<B>(&ckpt, &side, opts, device)?;
    let record = ImportRecord {
        source: source.display().to_string(),
        pipeline: ckpt.pipeline.clone(),
        kind: ckpt.kind,
        prompt: opts.prompt.clone(),
        prompts,
        weights,
        tokenizers,
        null_prompt: if ckpt.force_zeros_for_empty_prompt { "(zeros)" } else { "" }.into(),
    };
    let mut index = PriorIndex::new(&opts.dataset, &opts.classes, [3, opts.resolution, opts.resolution]);
    index.imported = Some(record.clone());

    let tmp = fsio::sibling(out, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let write = || -> Result<Prior<B>> {
        for (component, cfg, weights) in [("vae", &side.vae_cfg_path, &vae_weights), ("unet", &side.unet_cfg_path, &unet_weights)] {
            let dir = tmp.join(component);
            std::fs::create_dir_all(&dir).map_err(|e| DaceError::io(&dir, e))?;
            fsio::write_atomic(&dir.join(CONFIG_FILE), &fsio::read(cfg)?)?;
            link_weights(weights, &dir)?;
        }
        std::fs::create_dir_all(tmp.join("class_embedder")).map_err(|e| DaceError::io(&tmp, e))?;
        let config = serde_json::to_value(&classes.config).expect("config serialises");
        bundle::save_component(&tmp, "class_embedder", &config, &classes.table)?;
        bundle::save_index(&tmp, &index)?;
        // The imported prior must load as any prior does (configs, weights, table widths).
        Prior::<B>::load(&tmp, device)
    };
    let prior = write().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })?;
    fsio::replace_dir(&tmp, out)?;
    Ok(ImportReport {
        command: "prior import",
        out: out.display().to_string(),
        record,
        tokens: classes.config.tokens,
        context_dim: classes.config.embedding_dim,
        pooled_dim: classes.config.pooled_dim,
        image_shape: prior.index.image_shape,
        fingerprint: prior.fingerprint,
        seconds: start.elapsed().as_secs_f64(),
    })
}

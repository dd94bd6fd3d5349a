//! diffusers `config.json` files for `AutoencoderKL` and `UNet2DConditionModel`.
//!
//! A config is read key by key: every key dace implements is parsed, every key whose value only
//! matters when it differs from diffusers' default must have that default, and any other key is
//! an error naming it. Loading a checkpoint that uses a feature dace does not implement therefore
//! fails up front instead of producing garbage.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{DaceError, Result};
use crate::fsio;

/// Keys diffusers writes for bookkeeping only.
const BOOKKEEPING: [&str; 3] = ["_class_name", "_diffusers_version", "_name_or_path"];

/// Consumes the keys of one config object, turning every problem into an error naming the file.
struct Keys<'a> {
    path: &'a Path,
    map: Map<String, Value>,
}

impl<'a> Keys<'a> {
    fn new(path: &'a Path, value: Value, class: &str) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(DaceError::bad_file(path, "a diffusers config must be a JSON object"));
        };
        if let Some(found) = map.get("_class_name").and_then(Value::as_str) {
            if found != class {
                return Err(DaceError::bad_file(path, format!("expected a {class} config, found {found}")));
            }
        }
        Ok(Keys { path, map })
    }

    fn bad(&self, key: &str, why: impl std::fmt::Display) -> DaceError {
        DaceError::bad_file(self.path, format!("config key `{key}`: {why}"))
    }

    /// A key dace implements; `default` when absent or null (diffusers' own default).
    fn get<T: DeserializeOwned>(&mut self, key: &str, default: T) -> Result<T> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| self.bad(key, format!("{e} (value {v})"))),
        }
    }

    /// A key dace implements and that has no default.
    fn required<T: DeserializeOwned>(&mut self, key: &str) -> Result<T> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Err(self.bad(key, "missing")),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| self.bad(key, format!("{e} (value {v})"))),
        }
    }

    /// A key whose feature dace does not implement: accepted only at one of its neutral values.
    fn neutral(&mut self, key: &str, allowed: &[Value]) -> Result<()> {
        match self.map.remove(key) {
            None => Ok(()),
            Some(v) if allowed.contains(&v) => Ok(()),
            Some(v) => Err(self.bad(key, format!("value {v} is not supported by dace (supported: {allowed:?})"))),
        }
    }

    /// Errors on any key left over: a feature dace does not know about.
    fn finish(mut self) -> Result<()> {
        for key in BOOKKEEPING {
            self.map.remove(key);
        }
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => Err(self.bad(key, format!("unsupported key (value {})", self.map[key]))),
        }
    }
}

/// A per-block setting that diffusers accepts either as one number or as one per block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    pub fn expand(&self, blocks: usize) -> Vec<usize> {
        match self {
            PerBlock::One(n) => vec![*n; blocks],
            PerBlock::Each(v) => v.clone(),
        }
    }
}

/// Keys diffusers writes whose values dace accepts only where they change nothing.
fn unet_neutral_keys(k: &mut Keys, blocks: usize) -> Result<()> {
    k.neutral("mid_block_type", &[json!("UNetMidBlock2DCrossAttn")])?;
    k.neutral("act_fn", &[json!("silu")])?;
    k.neutral("dropout", &[json!(0.0), json!(0)])?;
    k.neutral("only_cross_attention", &[json!(false), json!(vec![false; blocks])])?;
    k.neutral("dual_cross_attention", &[json!(false)])?;
    k.neutral("class_embed_type", &[Value::Null])?;
    k.neutral("num_class_embeds", &[Value::Null])?;
    k.neutral("addition_embed_type_num_heads", &[json!(64)])?;
    k.neutral("encoder_hid_dim", &[Value::Null])?;
    k.neutral("encoder_hid_dim_type", &[Value::Null])?;
    k.neutral("resnet_time_scale_shift", &[json!("default")])?;
    k.neutral("resnet_skip_time_act", &[json!(false)])?;
    k.neutral("resnet_out_scale_factor", &[json!(1.0), json!(1)])?;
    k.neutral("time_embedding_type", &[json!("positional")])?;
    k.neutral("time_embedding_dim", &[Value::Null])?;
    k.neutral("time_embedding_act_fn", &[Value::Null])?;
    k.neutral("timestep_post_act", &[Value::Null])?;
    k.neutral("time_cond_proj_dim", &[Value::Null])?;
    k.neutral("conv_in_kernel", &[json!(3)])?;
    k.neutral("conv_out_kernel", &[json!(3)])?;
    k.neutral("attention_type", &[json!("default")])?;
    k.neutral("class_embeddings_concat", &[json!(false)])?;
    k.neutral("mid_block_only_cross_attention", &[Value::Null, json!(false)])?;
    k.neutral("cross_attention_norm", &[Value::Null])?;
    k.neutral("reverse_transformer_layers_per_block", &[Value::Null])?;
    Ok(())
}

fn check_per_block(keys: &Keys, key: &str, values: &[usize], blocks: usize) -> Result<()> {
    if values.len() != blocks {
        return Err(keys.bad(key, format!("{} values for {blocks} blocks", values.len())));
    }
    if values.contains(&0) {
        return Err(keys.bad(key, "values must be positive"));
    }
    Ok(())
}

/// `AutoencoderKL` (the SD VAE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    /// Latents are multiplied by this after encoding (diffusers pipelines do it, not the VAE).
    pub scaling_factor: f64,
    pub mid_block_add_attention: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    /// diffusers runs such a VAE in fp32 even in fp16 pipelines; dace's VAE always runs in fp32.
    pub force_upcast: bool,
}

impl VaeConfig {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        let mut k = Keys::new(path, value, "AutoencoderKL")?;
        let block_out_channels: Vec<usize> = k.get("block_out_channels", vec![64])?;
        let blocks = block_out_channels.len();
        let down: Vec<String> = k.get("down_block_types", vec!["DownEncoderBlock2D".into(); blocks])?;
        let up: Vec<String> = k.get("up_block_types", vec!["UpDecoderBlock2D".into(); blocks])?;
        if down.len() != blocks || down.iter().any(|t| t != "DownEncoderBlock2D") {
            return Err(k.bad("down_block_types", format!("{down:?}: dace supports {blocks} x DownEncoderBlock2D")));
        }
        if up.len() != blocks || up.iter().any(|t| t != "UpDecoderBlock2D") {
            return Err(k.bad("up_block_types", format!("{up:?}: dace supports {blocks} x UpDecoderBlock2D")));
        }
        let cfg = VaeConfig {
            in_channels: k.get("in_channels", 3)?,
            out_channels: k.get("out_channels", 3)?,
            layers_per_block: k.get("layers_per_block", 1)?,
            latent_channels: k.get("latent_channels", 4)?,
            norm_num_groups: k.get("norm_num_groups", 32)?,
            sample_size: k.get("sample_size", 32)?,
            scaling_factor: k.get("scaling_factor", 0.18215)?,
            mid_block_add_attention: k.get("mid_block_add_attention", true)?,
            use_quant_conv: k.get("use_quant_conv", true)?,
            use_post_quant_conv: k.get("use_post_quant_conv", true)?,
            force_upcast: k.get("force_upcast", true)?,
            block_out_channels,
        };
        k.neutral("act_fn", &[json!("silu")])?;
        k.neutral("shift_factor", &[Value::Null, json!(0.0)])?;
        k.neutral("latents_mean", &[Value::Null])?;
        k.neutral("latents_std", &[Value::Null])?;
        if let Some(&c) = cfg.block_out_channels.iter().find(|&&c| c % cfg.norm_num_groups != 0) {
            return Err(k.bad("norm_num_groups", format!("{} does not divide {c} channels", cfg.norm_num_groups)));
        }
        k.finish()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        Self::from_json(path, fsio::read_json(path)?)
    }

    /// The config as diffusers writes it (every key this struct has, plus the class name).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let m = v.as_object_mut().expect("object");
        m.insert("_class_name".into(), json!("AutoencoderKL"));
        m.insert("act_fn".into(), json!("silu"));
        let n = self.block_out_channels.len();
        m.insert("down_block_types".into(), json!(vec!["DownEncoderBlock2D"; n]));
        m.insert("up_block_types".into(), json!(vec!["UpDecoderBlock2D"; n]));
        v
    }

    /// Image side / latent side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// The block types of `UNet2DConditionModel` dace implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Plain,
    CrossAttn,
}

/// `UNet2DConditionModel`: SD 1.x / 2.x layouts and SDXL's (`text_time` added embedding).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    pub transformer_layers_per_block: PerBlock,
    /// Called `attention_head_dim` in SD configs, where diffusers reads it as the number of heads
    /// (a historical naming bug it keeps for compatibility): see [`UNetConfig::heads`].
    pub attention_head_dim: PerBlock,
    pub num_attention_heads: Option<PerBlock>,
    pub use_linear_projection: bool,
    /// Only changes fp16 numerics (dace's UNet computes attention in fp32 anyway).
    pub upcast_attention: bool,
    /// `Some("text_time")` for SDXL: the pooled text embedding and the 6 size/crop time ids
    /// are embedded and added to the timestep embedding (see [`UNetConfig::text_time`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addition_embed_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_class_embeddings_input_dim: Option<usize>,
}

/// SDXL's added conditioning: `add_embedding(concat(text_embeds, sinusoid(time_ids)))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextTimeSpec {
    /// Width of the sinusoidal embedding of each of the 6 time ids.
    pub time_embed_dim: usize,
    /// Input width of `add_embedding`: pooled text width + 6 * `time_embed_dim`.
    pub input_dim: usize,
}

impl TextTimeSpec {
    pub const TIME_IDS: usize = 6;

    pub fn pooled_dim(&self) -> usize {
        self.input_dim - Self::TIME_IDS * self.time_embed_dim
    }
}

impl UNetConfig {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        let mut k = Keys::new(path, value, "UNet2DConditionModel")?;
        let cfg = UNetConfig {
            sample_size: k.get("sample_size", 64)?,
            in_channels: k.get("in_channels", 4)?,
            out_channels: k.get("out_channels", 4)?,
            center_input_sample: k.get("center_input_sample", false)?,
            flip_sin_to_cos: k.get("flip_sin_to_cos", true)?,
            freq_shift: k.get("freq_shift", 0.0)?,
            down_block_types: k.required("down_block_types")?,
            up_block_types: k.required("up_block_types")?,
            block_out_channels: k.required("block_out_channels")?,
            layers_per_block: k.get("layers_per_block", 2)?,
            downsample_padding: k.get("downsample_padding", 1)?,
            mid_block_scale_factor: k.get("mid_block_scale_factor", 1.0)?,
            norm_num_groups: k.get("norm_num_groups", 32)?,
            norm_eps: k.get("norm_eps", 1e-5)?,
            cross_attention_dim: k.get("cross_attention_dim", 1280)?,
            transformer_layers_per_block: k.get("transformer_layers_per_block", PerBlock::One(1))?,
            attention_head_dim: k.get("attention_head_dim", PerBlock::One(8))?,
            num_attention_heads: k.get("num_attention_heads", None)?,
            use_linear_projection: k.get("use_linear_projection", false)?,
            upcast_attention: k.get("upcast_attention", false)?,
            addition_embed_type: k.get("addition_embed_type", None)?,
            addition_time_embed_dim: k.get("addition_time_embed_dim", None)?,
            projection_class_embeddings_input_dim: k.get("projection_class_embeddings_input_dim", None)?,
        };
        cfg.check_added_embedding(&k)?;
        cfg.check_blocks(&k)?;
        unet_neutral_keys(&mut k, cfg.block_out_channels.len())?;
        k.finish()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        Self::from_json(path, fsio::read_json(path)?)
    }

    /// SDXL's `text_time` added embedding needs both of its widths; nothing else may set them.
    fn check_added_embedding(&self, k: &Keys) -> Result<()> {
        match self.addition_embed_type.as_deref() {
            None => {
                for (key, v) in [
                    ("addition_time_embed_dim", self.addition_time_embed_dim),
                    ("projection_class_embeddings_input_dim", self.projection_class_embeddings_input_dim),
                ] {
                    if v.is_some() {
                        return Err(k.bad(key, "set without `addition_embed_type`"));
                    }
                }
            }
            Some("text_time") => {
                let (Some(time), Some(input)) = (self.addition_time_embed_dim, self.projection_class_embeddings_input_dim) else {
                    return Err(k.bad(
                        "addition_embed_type",
                        "\"text_time\" needs `addition_time_embed_dim` and `projection_class_embeddings_input_dim`",
                    ));
                };
                if time == 0 || input <= TextTimeSpec::TIME_IDS * time {
                    return Err(k.bad(
                        "projection_class_embeddings_input_dim",
                        format!("{input} leaves no room for a pooled text embedding beside 6 time ids of width {time}"),
                    ));
                }
            }
            Some(other) => {
                return Err(k.bad("addition_embed_type", format!("{other:?} is not supported by dace (supported: null, \"text_time\")")))
            }
        }
        Ok(())
    }

    /// Down and up blocks of known types, one per channel width, heads and groups dividing them.
    fn check_blocks(&self, k: &Keys) -> Result<()> {
        let blocks = self.block_out_channels.len();
        if blocks == 0 {
            return Err(k.bad("block_out_channels", "empty"));
        }
        let known = ["CrossAttnDownBlock2D", "DownBlock2D"];
        if self.down_block_types.len() != blocks || self.down_block_types.iter().any(|t| !known.contains(&t.as_str())) {
            return Err(k.bad("down_block_types", format!("{:?}: dace supports {blocks} of {known:?}", self.down_block_types)));
        }
        let known = ["CrossAttnUpBlock2D", "UpBlock2D"];
        if self.up_block_types.len() != blocks || self.up_block_types.iter().any(|t| !known.contains(&t.as_str())) {
            return Err(k.bad("up_block_types", format!("{:?}: dace supports {blocks} of {known:?}", self.up_block_types)));
        }
        check_per_block(k, "transformer_layers_per_block", &self.transformer_layers_per_block.expand(blocks), blocks)?;
        let heads = self.heads();
        check_per_block(k, "attention_head_dim", &heads, blocks)?;
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if c % h != 0 {
                return Err(k.bad("attention_head_dim", format!("block {i}: {h} heads do not divide {c} channels")));
            }
            if c % self.norm_num_groups != 0 {
                return Err(k.bad("norm_num_groups", format!("{} does not divide {c} channels", self.norm_num_groups)));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let m = v.as_object_mut().expect("object");
        m.insert("_class_name".into(), json!("UNet2DConditionModel"));
        m.insert("mid_block_type".into(), json!("UNetMidBlock2DCrossAttn"));
        m.insert("act_fn".into(), json!("silu"));
        v
    }

    /// Attention heads per block, as diffusers computes them:
    /// `num_attention_heads or attention_head_dim`.
    pub fn heads(&self) -> Vec<usize> {
        let blocks = self.block_out_channels.len();
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).expand(blocks)
    }

    pub fn down_kinds(&self) -> Vec<BlockKind> {
        let kind = |t: &String| if t.starts_with("CrossAttn") { BlockKind::CrossAttn } else { BlockKind::Plain };
        self.down_block_types.iter().map(kind).collect()
    }

    pub fn up_kinds(&self) -> Vec<BlockKind> {
        let kind = |t: &String| if t.starts_with("CrossAttn") { BlockKind::CrossAttn } else { BlockKind::Plain };
        self.up_block_types.iter().map(kind).collect()
    }

    /// SDXL's added conditioning, when the config has it.
    pub fn text_time(&self) -> Option<TextTimeSpec> {
        match (self.addition_embed_type.as_deref(), self.addition_time_embed_dim, self.projection_class_embeddings_input_dim) {
            (Some("text_time"), Some(time_embed_dim), Some(input_dim)) => Some(TextTimeSpec { time_embed_dim, input_dim }),
            _ => None,
        }
    }

    /// Width of the timestep embedding MLP (`4 * block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }
}

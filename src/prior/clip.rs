//! CLIP text encoders (transformers' `CLIPTextModel` and `CLIPTextModelWithProjection`), the text
//! conditioning of SD-Turbo (OpenCLIP ViT-H layout) and SDXL-Turbo (CLIP ViT-L + OpenCLIP bigG).
//!
//! Module fields are named like transformers' (`text_model.encoder.layers.N.self_attn.q_proj`),
//! so checkpoints load with their key names unchanged through the same safetensors path as the
//! VAE and UNet. Outputs: the last hidden state (final layer norm applied), every layer's hidden
//! state (SDXL takes the penultimate, without the final norm), the pooled state at the first EOS
//! token and, with a projection, the projected text embedding.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use serde_json::Value;

use crate::error::{DaceError, Result};
use crate::fsio;

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP ViT-L).
    QuickGelu,
    /// Exact erf GELU (OpenCLIP ViT-H / bigG).
    Gelu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    /// 2 selects the legacy pooling (position of the largest token id), as transformers does.
    pub eos_token_id: i64,
    /// `Some` for `CLIPTextModelWithProjection`.
    pub projection_dim: Option<usize>,
}

/// Keys of a transformers CLIP text config that only describe training or tokenisation.
const IGNORED: [&str; 13] = [
    "architectures",
    "attention_dropout",
    "dropout",
    "bos_token_id",
    "pad_token_id",
    "dtype",
    "torch_dtype",
    "initializer_factor",
    "initializer_range",
    "model_type",
    "transformers_version",
    "_name_or_path",
    "_attn_implementation_autoset",
];

impl ClipTextConfig {
    /// Reads a transformers `config.json`; unknown keys are errors naming the key.
    pub fn load(path: &Path) -> Result<Self> {
        let value: Value = fsio::read_json(path)?;
        Self::from_json(value, path)
    }

    pub fn from_json(value: Value, path: &Path) -> Result<Self> {
        let Value::Object(mut map) = value else {
            return Err(DaceError::bad_file(path, "a CLIP text config must be a JSON object"));
        };
        let bad = |key: &str, why: String| DaceError::bad_file(path, format!("config key `{key}`: {why}"));
        let architectures_with_projection = map
            .get("architectures")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|s| s.as_str() == Some("CLIPTextModelWithProjection")));
        let mut take = |key: &str, default: Option<Value>| -> Result<Value> {
            match map.remove(key) {
                Some(Value::Null) | None => default.ok_or_else(|| bad(key, "missing".into())),
                Some(v) => Ok(v),
            }
        };
        let num = |key: &str, v: Value| v.as_u64().map(|n| n as usize).ok_or_else(|| bad(key, format!("expected a count, found {v}")));
        let projection = take("projection_dim", Some(Value::Null)).ok().filter(|v| !v.is_null());
        let act = take("hidden_act", Some(Value::String("quick_gelu".into())))?;
        let hidden_act = match act.as_str() {
            Some("quick_gelu") => ClipActivation::QuickGelu,
            Some("gelu") => ClipActivation::Gelu,
            _ => return Err(bad("hidden_act", format!("{act} is not supported by dace (quick_gelu, gelu)"))),
        };
        let config = ClipTextConfig {
            vocab_size: num("vocab_size", take("vocab_size", None)?)?,
            hidden_size: num("hidden_size", take("hidden_size", None)?)?,
            intermediate_size: num("intermediate_size", take("intermediate_size", None)?)?,
            num_hidden_layers: num("num_hidden_layers", take("num_hidden_layers", None)?)?,
            num_attention_heads: num("num_attention_heads", take("num_attention_heads", None)?)?,
            max_position_embeddings: num("max_position_embeddings", take("max_position_embeddings", Some(77.into()))?)?,
            hidden_act,
            layer_norm_eps: take("layer_norm_eps", Some(1e-5.into()))?
                .as_f64()
                .ok_or_else(|| bad("layer_norm_eps", "expected a number".into()))?,
            eos_token_id: take("eos_token_id", Some(2.into()))?
                .as_i64()
                .ok_or_else(|| bad("eos_token_id", "expected an integer".into()))?,
            projection_dim: match (projection, architectures_with_projection) {
                (Some(v), true) => Some(num("projection_dim", v)?),
                _ => None,
            },
        };
        for key in IGNORED {
            map.remove(key);
        }
        if let Some(key) = map.keys().next() {
            return Err(bad(key, format!("unsupported key (value {})", map[key])));
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(bad(
                "num_attention_heads",
                format!("{} heads do not divide hidden size {}", config.num_attention_heads, config.hidden_size),
            ));
        }
        Ok(config)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipTextModel<B> {
        let h = self.hidden_size;
        let ln = || LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps).init(device);
        let lin = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipLayer {
                self_attn: ClipAttention {
                    q_proj: lin(h, h),
                    k_proj: lin(h, h),
                    v_proj: lin(h, h),
                    out_proj: lin(h, h),
                    heads: self.num_attention_heads,
                },
                layer_norm1: ln(),
                mlp: ClipMlp {
                    fc1: lin(h, self.intermediate_size),
                    fc2: lin(self.intermediate_size, h),
                    quick: self.hidden_act == ClipActivation::QuickGelu,
                },
                layer_norm2: ln(),
            })
            .collect();
        ClipTextModel {
            text_model: ClipTextTransformer {
                embeddings: ClipEmbeddings {
                    token_embedding: EmbeddingConfig::new(self.vocab_size, h).init(device),
                    position_embedding: EmbeddingConfig::new(self.max_position_embeddings, h).init(device),
                },
                encoder: ClipEncoder { layers },
                final_layer_norm: ln(),
                eos_token_id: self.eos_token_id,
            },
            text_projection: self.projection_dim.map(|p| LinearConfig::new(h, p).with_bias(false).init(device)),
        }
    }
}

/// transformers 4 writes `text_model.`-prefixed keys for `CLIPTextModel`, transformers 5 does
/// not; both load.
const KEY_PREFIX: [(&str, &str); 1] = [(r"^(embeddings|encoder|final_layer_norm)\.", "text_model.$1.")];

/// Loads a transformers CLIP text encoder checkpoint into `model`: `model.safetensors`, or the
/// index of a sharded one (`model.safetensors.index.json`).
pub fn load_weights<B: Backend>(model: &mut ClipTextModel<B>, path: &Path) -> Result<()> {
    let weights = crate::prior::weights::open(path)?;
    crate::prior::weights::load_weights_remapped(model, &weights, &KEY_PREFIX)
}

#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// Causal self-attention: token `i` sees tokens `0..=i`.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, h] = x.dims();
        let d = h / self.heads;
        let split = |t: Tensor<B, 3>| t.reshape([b, n, self.heads, d]).swap_dims(1, 2);
        let options = AttentionModuleOptions { is_causal: true, ..Default::default() };
        let o = attention(
            split(self.q_proj.forward(x.clone())),
            split(self.k_proj.forward(x.clone())),
            split(self.v_proj.forward(x)),
            None,
            None,
            options,
        );
        self.out_proj.forward(o.swap_dims(1, 2).reshape([b, n, h]))
    }
}

#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    pub quick: bool,
}

impl<B: Backend> ClipMlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.fc1.forward(x);
        let x = if self.quick { x.clone() * sigmoid(x.mul_scalar(1.702)) } else { gelu(x) };
        self.fc2.forward(x)
    }
}

#[derive(Module, Debug)]
pub struct ClipLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipLayer<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct ClipEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    pub layers: Vec<ClipLayer<B>>,
}

#[derive(Module, Debug)]
pub struct ClipTextTransformer<B: Backend> {
    pub embeddings: ClipEmbeddings<B>,
    pub encoder: ClipEncoder<B>,
    pub final_layer_norm: LayerNorm<B>,
    pub eos_token_id: i64,
}

#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
    pub text_projection: Option<Linear<B>>,
}

/// What a text encoder returns for a batch of token sequences.
#[derive(Debug, Clone)]
pub struct ClipTextOutput<B: Backend> {
    /// `[batch, tokens, hidden]`, final layer norm applied.
    pub last_hidden_state: Tensor<B, 3>,
    /// transformers' `hidden_states`: the embeddings, then each layer's output (no final norm).
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// `[batch, hidden]`: the final state at the first EOS token (legacy configs: the largest id).
    pub pooler_output: Tensor<B, 2>,
    /// `[batch, projection_dim]` for models with a projection.
    pub text_embeds: Option<Tensor<B, 2>>,
}

impl<B: Backend> ClipTextModel<B> {
    /// Runs the encoder on `ids` (`batch` sequences of equal length, at most the position table).
    pub fn forward(&self, ids: &[Vec<u32>], device: &B::Device) -> Result<ClipTextOutput<B>> {
        let tm = &self.text_model;
        let (b, n) = (ids.len(), ids.first().map_or(0, Vec::len));
        let [positions, _] = tm.embeddings.position_embedding.weight.dims();
        let [vocab, _] = tm.embeddings.token_embedding.weight.dims();
        if b == 0 || n == 0 || n > positions || ids.iter().any(|s| s.len() != n) {
            return Err(DaceError::Invalid(format!("CLIP input: {b} sequences of {n} tokens (equal lengths, at most {positions})")));
        }
        if let Some(&t) = ids.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(DaceError::Invalid(format!("CLIP input: token id {t} outside the vocabulary of {vocab}")));
        }
        let flat: Vec<i64> = ids.iter().flatten().map(|&t| t as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, n]), device);
        let pos = Tensor::<B, 1, Int>::arange(0..n as i64, device).unsqueeze_dim::<2>(0);
        let mut x = tm.embeddings.token_embedding.forward(tokens) + tm.embeddings.position_embedding.forward(pos);
        let mut hidden_states = vec![x.clone()];
        for layer in &tm.encoder.layers {
            x = layer.forward(x);
            hidden_states.push(x.clone());
        }
        let last = tm.final_layer_norm.forward(x);
        // The pooled position: transformers' rule for this config's eos id.
        let at: Vec<i64> = ids
            .iter()
            .map(|s| {
                let pos = if tm.eos_token_id == 2 {
                    s.iter().enumerate().fold((0, 0u32), |(bi, bv), (i, &t)| if t > bv { (i, t) } else { (bi, bv) }).0
                } else {
                    s.iter().position(|&t| t as i64 == tm.eos_token_id).unwrap_or(0)
                };
                pos as i64
            })
            .collect();
        let h = last.dims()[2];
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(at, [b]), device).reshape([b, 1, 1]).expand([b, 1, h]);
        let pooled = last.clone().gather(1, index).reshape([b, h]);
        let text_embeds = self.text_projection.as_ref().map(|p| p.forward(pooled.clone()));
        Ok(ClipTextOutput { last_hidden_state: last, hidden_states, pooler_output: pooled, text_embeds })
    }
}

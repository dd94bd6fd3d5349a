//! `UNet2DConditionModel` (SD 1.x / 2.x and SDXL layouts): predicts the noise `eps` of a latent
//! at a timestep, attending to a context sequence (text embeddings, or dace's class embeddings).
//! SDXL also adds an embedding of the pooled text embedding and 6 size/crop numbers ("text_time").

use burn::module::{ModuleMapper, Param};
use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::config::{BlockKind, TextTimeSpec, UNetConfig};
use super::layers::{
    conv3x3, group_norm, timestep_embedding, Downsample2D, ResnetBlock2D, ResnetSpec, TimestepMlp, Transformer2D, Upsample2D,
};
use crate::kernels::{self, float_dtype, DaceBackend};

/// A down or up block: `(resnet, attention?)` pairs, then an optional resampler. Plain blocks
/// have no attentions; the lists keep diffusers' key names (`resnets.0`, `attentions.0`, ...).
#[derive(Module, Debug)]
pub struct UNetBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

#[derive(Module, Debug)]
pub struct UNetMidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2D<B>>,
}

#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub time_embedding: TimestepMlp<B>,
    pub down_blocks: Vec<UNetBlock<B>>,
    pub mid_block: UNetMidBlock<B>,
    pub up_blocks: Vec<UNetBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    /// SDXL's `add_embedding` (diffusers' key name), present for `addition_embed_type: text_time`.
    pub add_embedding: Option<TimestepMlp<B>>,
    // Settings of the forward pass that are not weights.
    pub time_proj_dim: usize,
    /// Width of the sinusoid of each SDXL time id (0 without `add_embedding`).
    pub add_time_proj_dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub center_input_sample: bool,
}

impl UNetConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet2DConditionModel<B> {
        let ch = &self.block_out_channels;
        let n = ch.len();
        let g = self.norm_num_groups;
        let temb = self.time_embed_dim();
        let heads = self.heads();
        let layers = self.transformer_layers_per_block.expand(n);
        let resnet = |c_in: usize, c_out: usize, scale: f64| {
            ResnetSpec { c_in, c_out, temb: Some(temb), groups: g, eps: self.norm_eps, output_scale: scale }.init(device)
        };
        let transformer = |c: usize, i: usize| {
            Transformer2D::new(c, heads[i], layers[i], self.cross_attention_dim, g, self.use_linear_projection, device)
        };

        let down_blocks = self
            .down_kinds()
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let c_in = if i == 0 { ch[0] } else { ch[i - 1] };
                let per_layer = 0..self.layers_per_block;
                UNetBlock {
                    resnets: per_layer.clone().map(|j| resnet(if j == 0 { c_in } else { ch[i] }, ch[i], 1.0)).collect(),
                    attentions: match kind {
                        BlockKind::CrossAttn => per_layer.map(|_| transformer(ch[i], i)).collect(),
                        BlockKind::Plain => vec![],
                    },
                    downsamplers: if i + 1 < n { vec![Downsample2D::new(ch[i], self.downsample_padding, device)] } else { vec![] },
                    upsamplers: vec![],
                }
            })
            .collect();

        let top = ch[n - 1];
        let mid_block = UNetMidBlock {
            resnets: vec![resnet(top, top, self.mid_block_scale_factor), resnet(top, top, self.mid_block_scale_factor)],
            attentions: vec![transformer(top, n - 1)],
        };

        // Up block i mirrors down block n-1-i and consumes its skip connections (diffusers'
        // prev_output_channel / output_channel / input_channel bookkeeping).
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let up_blocks = self
            .up_kinds()
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let prev = if i == 0 { rev[0] } else { rev[i - 1] };
                let out = rev[i];
                let skip_in = rev[(i + 1).min(n - 1)];
                let per_layer = 0..self.layers_per_block + 1;
                let last = self.layers_per_block;
                let block_heads = n - 1 - i;
                UNetBlock {
                    resnets: per_layer
                        .clone()
                        .map(|j| {
                            let res_skip = if j == last { skip_in } else { out };
                            let res_in = if j == 0 { prev } else { out };
                            resnet(res_in + res_skip, out, 1.0)
                        })
                        .collect(),
                    attentions: match kind {
                        BlockKind::CrossAttn => per_layer.map(|_| transformer(out, block_heads)).collect(),
                        BlockKind::Plain => vec![],
                    },
                    downsamplers: vec![],
                    upsamplers: if i + 1 < n { vec![Upsample2D::new(out, device)] } else { vec![] },
                }
            })
            .collect();

        UNet2DConditionModel {
            conv_in: conv3x3(self.in_channels, ch[0], device),
            time_embedding: TimestepMlp::new(ch[0], temb, device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(g, ch[0], self.norm_eps, device),
            conv_out: conv3x3(ch[0], self.out_channels, device),
            add_embedding: self.text_time().map(|tt| TimestepMlp::new(tt.input_dim, temb, device)),
            add_time_proj_dim: self.text_time().map_or(0, |tt| tt.time_embed_dim),
            time_proj_dim: ch[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            center_input_sample: self.center_input_sample,
        }
    }
}

impl<B: DaceBackend> UNet2DConditionModel<B> {
    /// `eps` for latents `[batch, in, h, w]` at per-item `timesteps`, attending to `context`
    /// `[batch, tokens, cross_attention_dim]`. For a UNet without SDXL's added embedding.
    pub fn forward(&self, sample: Tensor<B, 4>, timesteps: &[f32], context: &Tensor<B, 3>) -> Tensor<B, 4> {
        self.forward_with(sample, timesteps, context, None)
    }

    /// The float type the weights are stored in, which the whole forward pass computes in.
    pub fn dtype(&self) -> FloatDType {
        float_dtype(self.conv_in.weight.val().dtype())
    }

    /// The same UNet with every weight cast to `dtype`. With f16 (or bf16) weights the forward
    /// pass runs in that type on the device (half the weight memory and bandwidth), group norm
    /// statistics aside (f32, as PyTorch computes them); inputs and output stay f32.
    pub fn cast_weights(self, dtype: FloatDType) -> Self {
        self.map(&mut CastWeights(dtype))
    }

    /// [`Self::forward`] with SDXL's added conditioning, which a `text_time` UNet requires.
    pub fn forward_with(
        &self,
        sample: Tensor<B, 4>,
        timesteps: &[f32],
        context: &Tensor<B, 3>,
        text_time: Option<&TextTime<B>>,
    ) -> Tensor<B, 4> {
        let device = sample.device();
        assert_eq!(timesteps.len(), sample.dims()[0], "one timestep per latent");
        // Every input is brought to the weights' type: cubecl's binary ops read both operands
        // in the type of the first, so a stray f32 tensor would be misread, not promoted.
        let (io, dtype) = (float_dtype(sample.dtype()), self.dtype());
        let sample = sample.cast(dtype);
        let context = &context.clone().cast(dtype);
        let t = timestep_embedding::<B>(timesteps, self.time_proj_dim, self.flip_sin_to_cos, self.freq_shift, &device).cast(dtype);
        let mut temb = self.time_embedding.forward(t);
        match (&self.add_embedding, text_time) {
            (None, None) => {}
            (Some(add), Some(tt)) => temb = temb + add.forward(self.text_time_input(tt).cast(dtype)),
            (Some(_), None) => panic!("an SDXL (text_time) UNet needs pooled text embeddings and time ids"),
            (None, Some(_)) => panic!("text_time conditioning given to a UNet without add_embedding"),
        }
        let temb = Some(&temb);

        let sample = if self.center_input_sample { sample.mul_scalar(2.0).sub_scalar(1.0) } else { sample };
        let mut x = kernels::conv2d(&self.conv_in, sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                x = resnet.forward(x, temb);
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(x, context);
                }
                skips.push(x.clone());
            }
            for down in &block.downsamplers {
                x = down.forward(x);
                skips.push(x.clone());
            }
        }

        let mid = &self.mid_block;
        x = mid.resnets[0].forward(x, temb);
        for (attn, resnet) in mid.attentions.iter().zip(&mid.resnets[1..]) {
            x = resnet.forward(attn.forward(x, context), temb);
        }

        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip connection per up-block resnet");
                x = resnet.forward(Tensor::cat(vec![x, skip], 1), temb);
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(x, context);
                }
            }
            for up in &block.upsamplers {
                // Upsample to the size of the next skip (differs from 2x only for odd sizes).
                let size = skips.last().map(|s| {
                    let [_, _, h, w] = s.dims();
                    [h, w]
                });
                x = up.forward(x, size);
            }
        }
        kernels::conv2d(&self.conv_out, kernels::group_norm_silu(&self.conv_norm_out, x)).cast(io)
    }

    /// `concat(text_embeds, add_time_proj(time_ids))`, diffusers' `get_aug_embed` for text_time.
    fn text_time_input(&self, tt: &TextTime<B>) -> Tensor<B, 2> {
        let [batch, _] = tt.text_embeds.dims();
        assert_eq!(tt.time_ids.len(), batch * TextTimeSpec::TIME_IDS, "6 time ids per latent");
        let device = tt.text_embeds.device();
        // Same sinusoid as the timesteps (diffusers builds add_time_proj with the UNet's flip/shift).
        let ids = timestep_embedding::<B>(&tt.time_ids, self.add_time_proj_dim, self.flip_sin_to_cos, self.freq_shift, &device);
        let ids = ids.reshape([batch, TextTimeSpec::TIME_IDS * self.add_time_proj_dim]);
        Tensor::cat(vec![tt.text_embeds.clone(), ids], 1)
    }
}

/// Casts every float parameter of a module.
struct CastWeights(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastWeights {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.0), mapper)
    }
}

/// SDXL's added conditioning for one batch.
#[derive(Clone, Debug)]
pub struct TextTime<B: Backend> {
    /// Pooled, projected output of the second text encoder: `[batch, pooled_dim]`.
    pub text_embeds: Tensor<B, 2>,
    /// Per latent: original (h, w), crop (top, left), target (h, w); flattened `[batch * 6]`.
    pub time_ids: Vec<f32>,
}

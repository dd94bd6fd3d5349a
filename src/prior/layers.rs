//! Building blocks shared by the VAE and the UNet, named field for field like diffusers' modules
//! so that a diffusers safetensors file loads with its keys unchanged (`weights`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::kernels::{self, DaceBackend};

pub fn conv3x3<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
}

pub fn conv1x1<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [1, 1]).init(device)
}

pub fn group_norm<B: Backend>(groups: usize, channels: usize, eps: f64, device: &B::Device) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels).with_epsilon(eps).init(device)
}

/// `ResnetBlock2D` with `time_embedding_norm="default"`: the VAE's (no time input) and the UNet's.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
    /// The output is divided by this (diffusers' `output_scale_factor`).
    pub output_scale: f64,
}

pub struct ResnetSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub temb: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale: f64,
}

impl ResnetSpec {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResnetBlock2D<B> {
        ResnetBlock2D {
            norm1: group_norm(self.groups, self.c_in, self.eps, device),
            conv1: conv3x3(self.c_in, self.c_out, device),
            time_emb_proj: self.temb.map(|t| LinearConfig::new(t, self.c_out).init(device)),
            norm2: group_norm(self.groups, self.c_out, self.eps, device),
            conv2: conv3x3(self.c_out, self.c_out, device),
            conv_shortcut: (self.c_in != self.c_out).then(|| conv1x1(self.c_in, self.c_out, device)),
            output_scale: self.output_scale,
        }
    }
}

impl<B: DaceBackend> ResnetBlock2D<B> {
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = kernels::conv2d(&self.conv1, kernels::group_norm_silu(&self.norm1, x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = kernels::linear(proj, silu(temb.clone()));
            h = h + t.unsqueeze_dim::<3>(2).unsqueeze_dim(3);
        }
        let h = kernels::conv2d(&self.conv2, kernels::group_norm_silu(&self.norm2, h));
        let skip = match &self.conv_shortcut {
            Some(c) => kernels::conv2d(c, x),
            None => x,
        };
        let out = skip + h;
        if self.output_scale == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale)
        }
    }
}

/// diffusers' `Attention` as used in transformer blocks: no biases on q/k/v, `to_out.0` with bias.
/// Self-attention when `context` is `None`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    pub to_out: Vec<Linear<B>>,
    pub heads: usize,
}

impl<B: Backend> Attention<B> {
    pub fn new(query_dim: usize, context_dim: usize, heads: usize, head_dim: usize, device: &B::Device) -> Self {
        let inner = heads * head_dim;
        let proj = |i: usize| LinearConfig::new(i, inner).with_bias(false).init(device);
        Attention {
            to_q: proj(query_dim),
            to_k: proj(context_dim),
            to_v: proj(context_dim),
            to_out: vec![LinearConfig::new(inner, query_dim).init(device)],
            heads,
        }
    }
}

impl<B: DaceBackend> Attention<B> {
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<&Tensor<B, 3>>) -> Tensor<B, 3> {
        let ctx = context.cloned().unwrap_or_else(|| x.clone());
        let o = kernels::attention(
            kernels::linear(&self.to_q, x),
            kernels::linear(&self.to_k, ctx.clone()),
            kernels::linear(&self.to_v, ctx),
            self.heads,
        );
        kernels::linear(&self.to_out[0], o)
    }
}

/// The VAE mid-block's spatial self-attention: one head over all pixels, with its own group
/// norm, biased projections and a residual connection.
#[derive(Module, Debug)]
pub struct SpatialAttention<B: Backend> {
    pub group_norm: GroupNorm<B>,
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    pub to_out: Vec<Linear<B>>,
}

impl<B: Backend> SpatialAttention<B> {
    pub fn new(channels: usize, groups: usize, eps: f64, device: &B::Device) -> Self {
        let lin = || LinearConfig::new(channels, channels).init(device);
        SpatialAttention {
            group_norm: group_norm(groups, channels, eps, device),
            to_q: lin(),
            to_k: lin(),
            to_v: lin(),
            to_out: vec![lin()],
        }
    }
}

impl<B: DaceBackend> SpatialAttention<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let t = kernels::group_norm(&self.group_norm, x.clone()).reshape([b, c, h * w]).swap_dims(1, 2);
        let o = kernels::attention(
            kernels::linear(&self.to_q, t.clone()),
            kernels::linear(&self.to_k, t.clone()),
            kernels::linear(&self.to_v, t),
            1,
        );
        let o = kernels::linear(&self.to_out[0], o).swap_dims(1, 2).reshape([b, c, h, w]);
        o + x
    }
}

/// `GEGLU` then a linear layer: diffusers' `FeedForward` (keys `ff.net.0.proj`, `ff.net.2`,
/// renamed to `ff.geglu`, `ff.out` on load because burn modules cannot mix types in one list).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub geglu: Linear<B>,
    pub out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub fn new(dim: usize, device: &B::Device) -> Self {
        let inner = 4 * dim;
        FeedForward { geglu: LinearConfig::new(dim, 2 * inner).init(device), out: LinearConfig::new(inner, dim).init(device) }
    }
}

impl<B: DaceBackend> FeedForward<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        kernels::linear(&self.out, kernels::geglu(kernels::linear(&self.geglu, x)))
    }
}

/// `BasicTransformerBlock` (layer norms, self-attention, cross-attention, GEGLU feed-forward).
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: Attention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: Backend> TransformerBlock<B> {
    pub fn new(dim: usize, context_dim: usize, heads: usize, device: &B::Device) -> Self {
        let head_dim = dim / heads;
        let ln = || LayerNormConfig::new(dim).with_epsilon(1e-5).init(device);
        TransformerBlock {
            norm1: ln(),
            attn1: Attention::new(dim, dim, heads, head_dim, device),
            norm2: ln(),
            attn2: Attention::new(dim, context_dim, heads, head_dim, device),
            norm3: ln(),
            ff: FeedForward::new(dim, device),
        }
    }
}

impl<B: DaceBackend> TransformerBlock<B> {
    pub fn forward(&self, x: Tensor<B, 3>, context: &Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self.attn2.forward(self.norm2.forward(x.clone()), Some(context)) + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// Input/output projection of `Transformer2DModel`: linear (SD 2.x) or 1x1 conv (SD 1.x).
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    Linear(Linear<B>),
    Conv(Conv2d<B>),
}

/// `Transformer2DModel` on continuous inputs: group norm, projection in, transformer blocks,
/// projection out, residual.
#[derive(Module, Debug)]
pub struct Transformer2D<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Projection<B>,
    pub transformer_blocks: Vec<TransformerBlock<B>>,
    pub proj_out: Projection<B>,
}

impl<B: Backend> Transformer2D<B> {
    pub fn new(channels: usize, heads: usize, layers: usize, context_dim: usize, groups: usize, linear: bool, device: &B::Device) -> Self {
        let proj = || {
            if linear {
                Projection::Linear(LinearConfig::new(channels, channels).init(device))
            } else {
                Projection::Conv(conv1x1(channels, channels, device))
            }
        };
        Transformer2D {
            norm: group_norm(groups, channels, 1e-6, device),
            proj_in: proj(),
            transformer_blocks: (0..layers).map(|_| TransformerBlock::new(channels, context_dim, heads, device)).collect(),
            proj_out: proj(),
        }
    }
}

impl<B: DaceBackend> Transformer2D<B> {
    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let to_tokens = |t: Tensor<B, 4>| t.reshape([b, c, h * w]).swap_dims(1, 2);
        let from_tokens = |t: Tensor<B, 3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        let normed = kernels::group_norm(&self.norm, x.clone());
        let mut t = match &self.proj_in {
            Projection::Linear(l) => kernels::linear(l, to_tokens(normed)),
            Projection::Conv(cv) => to_tokens(kernels::conv2d(cv, normed)),
        };
        for block in &self.transformer_blocks {
            t = block.forward(t, context);
        }
        let out = match &self.proj_out {
            Projection::Linear(l) => from_tokens(kernels::linear(l, t)),
            Projection::Conv(cv) => kernels::conv2d(cv, from_tokens(t)),
        };
        out + x
    }
}

/// `Downsample2D` with a convolution: stride 2, either padded by 1 (UNet) or, with `padding` 0,
/// padded by one row and column at the bottom/right only (the VAE encoder).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    pub fn new(channels: usize, padding: usize, device: &B::Device) -> Self {
        let pad = match padding {
            0 => PaddingConfig2d::Explicit(0, 0, 1, 1),
            p => PaddingConfig2d::Explicit(p, p, p, p),
        };
        let conv = Conv2dConfig::new([channels, channels], [3, 3]).with_stride([2, 2]).with_padding(pad).init(device);
        Downsample2D { conv }
    }
}

impl<B: DaceBackend> Downsample2D<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::conv2d(&self.conv, x)
    }
}

/// `Upsample2D`: nearest-neighbour x2 (to `size` when given: odd skip sizes) then a 3x3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Upsample2D { conv: conv3x3(channels, channels, device) }
    }
}

impl<B: DaceBackend> Upsample2D<B> {
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([2 * h, 2 * w]);
        let up = interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest));
        kernels::conv2d(&self.conv, up)
    }
}

/// diffusers' `get_timestep_embedding`: sinusoids of `t * exp(-ln(10000) i / (half - shift))`,
/// `[sin, cos]` (or `[cos, sin]` when flipped). Computed on the host in f64.
pub fn timestep_embedding<B: Backend>(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        // diffusers builds the frequencies in f32; so do we, then the product in f32 too.
        let freqs = (0..half).map(|i| (-(10000f64.ln() as f32) * i as f32 / (half as f64 - freq_shift) as f32).exp());
        let args: Vec<f32> = freqs.map(|f| t * f).collect();
        let (first, second): (Vec<f32>, Vec<f32>) = if flip_sin_to_cos {
            (args.iter().map(|a| a.cos()).collect(), args.iter().map(|a| a.sin()).collect())
        } else {
            (args.iter().map(|a| a.sin()).collect(), args.iter().map(|a| a.cos()).collect())
        };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_data(TensorData::new(out, [timesteps.len(), dim]), device)
}

/// `TimestepEmbedding`: linear, SiLU, linear.
#[derive(Module, Debug)]
pub struct TimestepMlp<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepMlp<B> {
    pub fn new(c_in: usize, dim: usize, device: &B::Device) -> Self {
        TimestepMlp { linear_1: LinearConfig::new(c_in, dim).init(device), linear_2: LinearConfig::new(dim, dim).init(device) }
    }
}

impl<B: DaceBackend> TimestepMlp<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        kernels::linear(&self.linear_2, silu(kernels::linear(&self.linear_1, x)))
    }
}

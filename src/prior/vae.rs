//! `AutoencoderKL`: images in [-1, 1] to a diagonal-Gaussian latent and back (the SD VAE layout).

use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::prelude::*;

use super::config::VaeConfig;
use super::layers::{conv1x1, conv3x3, group_norm, Downsample2D, ResnetBlock2D, ResnetSpec, SpatialAttention, Upsample2D};
use crate::kernels::{self, DaceBackend};

/// The VAE's norms all use this epsilon (diffusers hard-codes it for AutoencoderKL).
const EPS: f64 = 1e-6;

/// `UNetMidBlock2D` without time input: resnet, optional attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<SpatialAttention<B>>,
}

impl<B: Backend> VaeMidBlock<B> {
    fn new(channels: usize, groups: usize, attention: bool, device: &B::Device) -> Self {
        let spec = ResnetSpec { c_in: channels, c_out: channels, temb: None, groups, eps: EPS, output_scale: 1.0 };
        VaeMidBlock {
            resnets: vec![spec.init(device), spec.init(device)],
            attentions: if attention { vec![SpatialAttention::new(channels, groups, EPS, device)] } else { vec![] },
        }
    }
}

impl<B: DaceBackend> VaeMidBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(attn) = self.attentions.first() {
            x = attn.forward(x);
        }
        self.resnets[1].forward(x, None)
    }
}

/// `DownEncoderBlock2D` / `UpDecoderBlock2D`: resnets, then an optional resampler.
#[derive(Module, Debug)]
pub struct VaeBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: DaceBackend> VaeBlock<B> {
    fn forward(&self, mut x: Tensor<B, 4>) -> Tensor<B, 4> {
        for r in &self.resnets {
            x = r.forward(x, None);
        }
        for d in &self.downsamplers {
            x = d.forward(x);
        }
        for u in &self.upsamplers {
            x = u.forward(x, None);
        }
        x
    }
}

fn resnets<B: Backend>(n: usize, c_in: usize, c_out: usize, groups: usize, device: &B::Device) -> Vec<ResnetBlock2D<B>> {
    (0..n)
        .map(|j| {
            let c = if j == 0 { c_in } else { c_out };
            ResnetSpec { c_in: c, c_out, temb: None, groups, eps: EPS, output_scale: 1.0 }.init(device)
        })
        .collect()
}

#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<VaeBlock<B>>,
    pub mid_block: VaeMidBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: VaeMidBlock<B>,
    pub up_blocks: Vec<VaeBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
}

/// The posterior `N(mean, exp(logvar))` of a batch of images, `[batch, latent, h, w]` each.
pub struct LatentDist<B: Backend> {
    pub mean: Tensor<B, 4>,
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> LatentDist<B> {
    pub fn std(&self) -> Tensor<B, 4> {
        self.logvar.clone().mul_scalar(0.5).exp()
    }
}

impl VaeConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> AutoencoderKL<B> {
        let ch = &self.block_out_channels;
        let g = self.norm_num_groups;
        let n = ch.len();
        let latent = self.latent_channels;
        let down_blocks = (0..n)
            .map(|i| VaeBlock {
                resnets: resnets(self.layers_per_block, if i == 0 { ch[0] } else { ch[i - 1] }, ch[i], g, device),
                downsamplers: if i + 1 < n { vec![Downsample2D::new(ch[i], 0, device)] } else { vec![] },
                upsamplers: vec![],
            })
            .collect();
        let encoder = Encoder {
            conv_in: conv3x3(self.in_channels, ch[0], device),
            down_blocks,
            mid_block: VaeMidBlock::new(ch[n - 1], g, self.mid_block_add_attention, device),
            conv_norm_out: group_norm(g, ch[n - 1], EPS, device),
            conv_out: conv3x3(ch[n - 1], 2 * latent, device),
        };
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let up_blocks = (0..n)
            .map(|i| VaeBlock {
                resnets: resnets(self.layers_per_block + 1, if i == 0 { rev[0] } else { rev[i - 1] }, rev[i], g, device),
                downsamplers: vec![],
                upsamplers: if i + 1 < n { vec![Upsample2D::new(rev[i], device)] } else { vec![] },
            })
            .collect();
        let decoder = Decoder {
            conv_in: conv3x3(latent, ch[n - 1], device),
            mid_block: VaeMidBlock::new(ch[n - 1], g, self.mid_block_add_attention, device),
            up_blocks,
            conv_norm_out: group_norm(g, ch[0], EPS, device),
            conv_out: conv3x3(ch[0], self.out_channels, device),
        };
        AutoencoderKL {
            encoder,
            decoder,
            quant_conv: self.use_quant_conv.then(|| conv1x1(2 * latent, 2 * latent, device)),
            post_quant_conv: self.use_post_quant_conv.then(|| conv1x1(latent, latent, device)),
        }
    }
}

impl<B: DaceBackend> AutoencoderKL<B> {
    /// Posterior of images in [-1, 1], `[batch, in_channels, H, W]` (unscaled latents).
    pub fn encode(&self, images: Tensor<B, 4>) -> LatentDist<B> {
        let e = &self.encoder;
        let mut x = kernels::conv2d(&e.conv_in, images);
        for block in &e.down_blocks {
            x = block.forward(x);
        }
        x = e.mid_block.forward(x);
        x = kernels::conv2d(&e.conv_out, kernels::group_norm_silu(&e.conv_norm_out, x));
        if let Some(q) = &self.quant_conv {
            x = kernels::conv2d(q, x);
        }
        let [mean, logvar] = x.chunk(2, 1).try_into().expect("two halves");
        // diffusers' DiagonalGaussianDistribution clamps the log-variance.
        LatentDist { mean, logvar: logvar.clamp(-30.0, 20.0) }
    }

    /// Images (about [-1, 1]) from unscaled latents.
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = &self.decoder;
        let mut x = match &self.post_quant_conv {
            Some(p) => kernels::conv2d(p, latents),
            None => latents,
        };
        x = kernels::conv2d(&d.conv_in, x);
        x = d.mid_block.forward(x);
        for block in &d.up_blocks {
            x = block.forward(x);
        }
        kernels::conv2d(&d.conv_out, kernels::group_norm_silu(&d.conv_norm_out, x))
    }
}

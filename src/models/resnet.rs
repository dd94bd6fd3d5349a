//! ResNet-18 (He et al. 2016) with two stems: the ImageNet one (7x7/2 conv + 3x3/2 max-pool) and
//! the small-image one used for 28-64 px inputs (3x3/1 conv, no max-pool), as in RDED and DC-bench.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::kernels::{batch_norm, conv2d, DaceBackend};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetStem {
    Small,
    Imagenet,
}

#[derive(Config, Debug)]
pub struct ResNetConfig {
    pub in_channels: usize,
    pub num_classes: usize,
    #[config(default = "ResNetStem::Small")]
    pub stem: ResNetStem,
    /// Basic blocks per stage; [2, 2, 2, 2] is ResNet-18.
    #[config(default = "[2, 2, 2, 2]")]
    pub blocks: [usize; 4],
}

fn conv_bn<B: Backend>(in_ch: usize, out_ch: usize, kernel: usize, stride: usize, device: &B::Device) -> (Conv2d<B>, BatchNorm<B>) {
    let pad = kernel / 2;
    let conv = Conv2dConfig::new([in_ch, out_ch], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device);
    (conv, BatchNormConfig::new(out_ch).init(device))
}

/// 1x1 strided projection on the skip path when the block changes shape.
#[derive(Module, Debug)]
struct Downsample<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

#[derive(Module, Debug)]
struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    downsample: Option<Downsample<B>>,
}

impl<B: Backend> BasicBlock<B> {
    fn new(in_ch: usize, out_ch: usize, stride: usize, device: &B::Device) -> Self {
        let (conv1, bn1) = conv_bn(in_ch, out_ch, 3, stride, device);
        let (conv2, bn2) = conv_bn(out_ch, out_ch, 3, 1, device);
        let downsample = (stride != 1 || in_ch != out_ch).then(|| {
            let (conv, bn) = conv_bn(in_ch, out_ch, 1, stride, device);
            Downsample { conv, bn }
        });
        BasicBlock { conv1, bn1, conv2, bn2, downsample }
    }
}

impl<B: DaceBackend> BasicBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(d) => batch_norm(&d.bn, conv2d(&d.conv, x.clone())),
            None => x.clone(),
        };
        let out = relu(batch_norm(&self.bn1, conv2d(&self.conv1, x)));
        let out = batch_norm(&self.bn2, conv2d(&self.conv2, out));
        relu(out + identity)
    }
}

#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem_conv: Conv2d<B>,
    stem_bn: BatchNorm<B>,
    stem_pool: Option<MaxPool2d>,
    blocks: Vec<BasicBlock<B>>,
    pool: AdaptiveAvgPool2d,
    fc: Linear<B>,
}

impl ResNetConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let (stem_conv, stem_bn, stem_pool) = match self.stem {
            ResNetStem::Small => {
                let (c, b) = conv_bn(self.in_channels, 64, 3, 1, device);
                (c, b, None)
            }
            ResNetStem::Imagenet => {
                let (c, b) = conv_bn(self.in_channels, 64, 7, 2, device);
                let pool = MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init();
                (c, b, Some(pool))
            }
        };
        let widths = [64, 128, 256, 512];
        let mut blocks = Vec::new();
        let mut in_ch = 64;
        for (stage, (&width, &count)) in widths.iter().zip(&self.blocks).enumerate() {
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(in_ch, width, stride, device));
                in_ch = width;
            }
        }
        ResNet {
            stem_conv,
            stem_bn,
            stem_pool,
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(512, self.num_classes).init(device),
        }
    }
}

impl<B: DaceBackend> ResNet<B> {
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = relu(batch_norm(&self.stem_bn, conv2d(&self.stem_conv, images)));
        if let Some(pool) = &self.stem_pool {
            x = pool.forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc.forward(self.pool.forward(x).flatten(1, 3))
    }
}

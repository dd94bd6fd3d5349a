//! ResNets (He et al. 2016) in torchvision's layout, of two block types:
//!
//! - BasicBlock (ResNet-18): two 3x3 convolutions;
//! - Bottleneck (ResNet-50): 1x1 down to the stage's width, 3x3, 1x1 up to 4x the width, with the
//!   stride on the 3x3 convolution as in torchvision's (and timm's) "v1.5" ResNet-50.
//!
//! and two stems: the ImageNet one (7x7/2 conv + 3x3/2 max-pool) and the small-image one used for
//! 28-64 px inputs (3x3/1 conv, no max-pool), as in RDED and DC-bench. Batch norm everywhere
//! (eps 1e-5, burn's and PyTorch's default); in inference it uses the running statistics.
//!
//! Field names are part of saved checkpoints (burn's named records), so the BasicBlock net keeps
//! the names it always had; `torchvision.rs` maps torchvision's state-dict names onto them.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::kernels::{batch_norm, conv2d, DaceBackend};

/// Output channels of a Bottleneck block per channel of its 3x3 convolution.
pub const BOTTLENECK_EXPANSION: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetStem {
    Small,
    Imagenet,
}

/// Blocks per stage and channel widths of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetShape {
    /// Blocks in each of the four stages.
    pub blocks: [usize; 4],
    /// Output channels of the stem convolution.
    pub stem_width: usize,
    /// Channels of the first stage's 3x3 convolutions, doubled at each later stage.
    pub width: usize,
}

impl ResNetShape {
    pub const RESNET18: ResNetShape = ResNetShape { blocks: [2, 2, 2, 2], stem_width: 64, width: 64 };
    pub const RESNET50: ResNetShape = ResNetShape { blocks: [3, 4, 6, 3], stem_width: 64, width: 64 };

    /// Channels of the 3x3 convolutions of `stage` (0 to 3).
    pub fn planes(&self, stage: usize) -> usize {
        self.width << stage
    }

    /// `(stage, index in stage, stride)` of every block in order: each later stage halves the
    /// image in its first block.
    pub fn blocks(&self) -> Vec<(usize, usize, usize)> {
        let mut all = Vec::new();
        for (stage, &count) in self.blocks.iter().enumerate() {
            all.extend((0..count).map(|i| (stage, i, if stage > 0 && i == 0 { 2 } else { 1 })));
        }
        all
    }
}

#[derive(Config, Debug)]
pub struct ResNetConfig {
    pub in_channels: usize,
    pub num_classes: usize,
    #[config(default = "ResNetStem::Small")]
    pub stem: ResNetStem,
    /// Blocks per stage and widths; the default is ResNet-18's (ResNet-50's is `RESNET50`).
    #[config(default = "ResNetShape::RESNET18")]
    pub shape: ResNetShape,
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

fn downsample<B: Backend>(in_ch: usize, out_ch: usize, stride: usize, device: &B::Device) -> Option<Downsample<B>> {
    (stride != 1 || in_ch != out_ch).then(|| {
        let (conv, bn) = conv_bn(in_ch, out_ch, 1, stride, device);
        Downsample { conv, bn }
    })
}

fn skip<B: DaceBackend>(downsample: &Option<Downsample<B>>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match downsample {
        Some(d) => batch_norm(&d.bn, conv2d(&d.conv, x)),
        None => x,
    }
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
        BasicBlock { conv1, bn1, conv2, bn2, downsample: downsample(in_ch, out_ch, stride, device) }
    }
}

impl<B: DaceBackend> BasicBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = skip(&self.downsample, x.clone());
        let out = relu(batch_norm(&self.bn1, conv2d(&self.conv1, x)));
        let out = batch_norm(&self.bn2, conv2d(&self.conv2, out));
        relu(out + identity)
    }
}

#[derive(Module, Debug)]
struct Bottleneck<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv3: Conv2d<B>,
    bn3: BatchNorm<B>,
    downsample: Option<Downsample<B>>,
}

impl<B: Backend> Bottleneck<B> {
    fn new(in_ch: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let out_ch = planes * BOTTLENECK_EXPANSION;
        let (conv1, bn1) = conv_bn(in_ch, planes, 1, 1, device);
        let (conv2, bn2) = conv_bn(planes, planes, 3, stride, device);
        let (conv3, bn3) = conv_bn(planes, out_ch, 1, 1, device);
        Bottleneck { conv1, bn1, conv2, bn2, conv3, bn3, downsample: downsample(in_ch, out_ch, stride, device) }
    }
}

impl<B: DaceBackend> Bottleneck<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = skip(&self.downsample, x.clone());
        let out = relu(batch_norm(&self.bn1, conv2d(&self.conv1, x)));
        let out = relu(batch_norm(&self.bn2, conv2d(&self.conv2, out)));
        let out = batch_norm(&self.bn3, conv2d(&self.conv3, out));
        relu(out + identity)
    }
}

/// A ResNet of BasicBlocks (ResNet-18).
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem_conv: Conv2d<B>,
    stem_bn: BatchNorm<B>,
    stem_pool: Option<MaxPool2d>,
    blocks: Vec<BasicBlock<B>>,
    pool: AdaptiveAvgPool2d,
    fc: Linear<B>,
}

/// A ResNet of Bottleneck blocks (ResNet-50), named as [`ResNet`].
#[derive(Module, Debug)]
pub struct BottleneckResNet<B: Backend> {
    stem_conv: Conv2d<B>,
    stem_bn: BatchNorm<B>,
    stem_pool: Option<MaxPool2d>,
    blocks: Vec<Bottleneck<B>>,
    pool: AdaptiveAvgPool2d,
    fc: Linear<B>,
}

impl ResNetConfig {
    fn stem<B: Backend>(&self, device: &B::Device) -> (Conv2d<B>, BatchNorm<B>, Option<MaxPool2d>) {
        let width = self.shape.stem_width;
        match self.stem {
            ResNetStem::Small => {
                let (c, b) = conv_bn(self.in_channels, width, 3, 1, device);
                (c, b, None)
            }
            ResNetStem::Imagenet => {
                let (c, b) = conv_bn(self.in_channels, width, 7, 2, device);
                // Padding 1 of a max-pool after ReLU: zeros never win over the window's
                // non-negative values, as PyTorch's -inf padding never does.
                let pool = MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init();
                (c, b, Some(pool))
            }
        }
    }

    /// A net of BasicBlocks.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let (stem_conv, stem_bn, stem_pool) = self.stem(device);
        let mut in_ch = self.shape.stem_width;
        let mut blocks = Vec::new();
        for (stage, _, stride) in self.shape.blocks() {
            let planes = self.shape.planes(stage);
            blocks.push(BasicBlock::new(in_ch, planes, stride, device));
            in_ch = planes;
        }
        let pool = AdaptiveAvgPool2dConfig::new([1, 1]).init();
        ResNet { stem_conv, stem_bn, stem_pool, blocks, pool, fc: LinearConfig::new(in_ch, self.num_classes).init(device) }
    }

    /// A net of Bottleneck blocks.
    pub fn init_bottleneck<B: Backend>(&self, device: &B::Device) -> BottleneckResNet<B> {
        let (stem_conv, stem_bn, stem_pool) = self.stem(device);
        let mut in_ch = self.shape.stem_width;
        let mut blocks = Vec::new();
        for (stage, _, stride) in self.shape.blocks() {
            let planes = self.shape.planes(stage);
            blocks.push(Bottleneck::new(in_ch, planes, stride, device));
            in_ch = planes * BOTTLENECK_EXPANSION;
        }
        let pool = AdaptiveAvgPool2dConfig::new([1, 1]).init();
        BottleneckResNet { stem_conv, stem_bn, stem_pool, blocks, pool, fc: LinearConfig::new(in_ch, self.num_classes).init(device) }
    }
}

fn stem_forward<B: DaceBackend>(conv: &Conv2d<B>, bn: &BatchNorm<B>, pool: &Option<MaxPool2d>, images: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = relu(batch_norm(bn, conv2d(conv, images)));
    match pool {
        Some(pool) => pool.forward(x),
        None => x,
    }
}

impl<B: DaceBackend> ResNet<B> {
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = stem_forward(&self.stem_conv, &self.stem_bn, &self.stem_pool, images);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc.forward(self.pool.forward(x).flatten(1, 3))
    }
}

impl<B: DaceBackend> BottleneckResNet<B> {
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = stem_forward(&self.stem_conv, &self.stem_bn, &self.stem_pool, images);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc.forward(self.pool.forward(x).flatten(1, 3))
    }
}

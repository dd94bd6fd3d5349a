//! ConvNet-D: `depth` blocks of conv3x3(width) -> norm -> ReLU -> avgpool2, then a linear head.
//! The architecture used throughout the dataset-distillation literature (DC, DM, MTT, RDED).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::PaddingConfig2d;
use burn::nn::{BatchNorm, BatchNormConfig, InstanceNorm, InstanceNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kernels::{self, DaceBackend};

/// Normalisation after each convolution. Instance norm (affine) is the DC/DM/MTT convention,
/// batch norm is RDED's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    Instance,
    Batch,
    None,
}

#[derive(Config, Debug)]
pub struct ConvNetConfig {
    pub in_channels: usize,
    pub num_classes: usize,
    pub image_size: [usize; 2],
    #[config(default = 3)]
    pub depth: usize,
    #[config(default = 128)]
    pub width: usize,
    #[config(default = "NormKind::Instance")]
    pub norm: NormKind,
}

#[derive(Module, Debug)]
enum Norm<B: Backend> {
    Instance(InstanceNorm<B>),
    Batch(BatchNorm<B>),
}

#[derive(Module, Debug)]
struct ConvBlock<B: Backend> {
    conv: Conv2d<B>,
    norm: Option<Norm<B>>,
    pool: AvgPool2d,
}

#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    blocks: Vec<ConvBlock<B>>,
    head: Linear<B>,
}

impl ConvNetConfig {
    /// Spatial size after the `depth` pooling layers (each halves, rounding down like PyTorch).
    pub fn feature_size(&self) -> [usize; 2] {
        self.image_size.map(|s| s >> self.depth)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvNet<B> {
        let blocks = (0..self.depth)
            .map(|i| {
                let in_ch = if i == 0 { self.in_channels } else { self.width };
                let norm = match self.norm {
                    NormKind::Instance => Some(Norm::Instance(InstanceNormConfig::new(self.width).init(device))),
                    NormKind::Batch => Some(Norm::Batch(BatchNormConfig::new(self.width).init(device))),
                    NormKind::None => None,
                };
                ConvBlock {
                    conv: Conv2dConfig::new([in_ch, self.width], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device),
                    norm,
                    pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                }
            })
            .collect();
        let [fh, fw] = self.feature_size();
        assert!(fh > 0 && fw > 0, "image {:?} too small for ConvNet-{}", self.image_size, self.depth);
        let head = LinearConfig::new(self.width * fh * fw, self.num_classes).init(device);
        ConvNet { blocks, head }
    }
}

impl<B: DaceBackend> ConvNet<B> {
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = images;
        for block in &self.blocks {
            x = kernels::conv2d(&block.conv, x);
            x = match &block.norm {
                Some(Norm::Instance(n)) => kernels::instance_norm(n, x),
                Some(Norm::Batch(n)) => kernels::batch_norm(n, x),
                None => x,
            };
            // `block.pool` is the 2x2/2 average pool; the kernel fuses it with the ReLU.
            x = kernels::relu_pool2(x);
        }
        self.head.forward(x.flatten(1, 3))
    }
}

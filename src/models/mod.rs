//! Image classifiers, written once for every backend.
//!
//! `Classifier<B>` is the one model type the training, evaluation and distillation code handles; it
//! wraps the concrete architectures so that a checkpoint is "config + weights" whatever the arch.

mod convnet;
mod params;
mod resnet;
pub mod torchvision;

pub use convnet::{ConvNet, ConvNetConfig, NormKind};
pub use params::{materialize, param_shapes, trainable_params};
pub use resnet::{BottleneckResNet, ResNet, ResNetConfig, ResNetShape, ResNetStem, BOTTLENECK_EXPANSION};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Architectures selectable from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// ConvNet-3: the dataset-distillation standard for 28-32 px images.
    Convnet3,
    /// ConvNet-4, for 64 px images.
    Convnet4,
    /// ConvNet-5, for 128 px images.
    Convnet5,
    /// ResNet-18 with a 3x3 stride-1 stem and no max-pool (CIFAR-style small images).
    Resnet18,
    /// ResNet-18 with the standard ImageNet stem (7x7 stride-2 conv + max-pool).
    Resnet18Imagenet,
    /// ResNet-50 (Bottleneck blocks, torchvision's v1.5) with the ImageNet stem.
    Resnet50Imagenet,
}

/// The two kinds of residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResNetBlock {
    /// Two 3x3 convolutions (ResNet-18, -34).
    Basic,
    /// 1x1, 3x3, 1x1 with 4x expansion (ResNet-50, -101, -152).
    Bottleneck,
}

impl Arch {
    pub const ALL: [Arch; 6] =
        [Arch::Convnet3, Arch::Convnet4, Arch::Convnet5, Arch::Resnet18, Arch::Resnet18Imagenet, Arch::Resnet50Imagenet];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Convnet3 => "convnet3",
            Arch::Convnet4 => "convnet4",
            Arch::Convnet5 => "convnet5",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet18Imagenet => "resnet18-imagenet",
            Arch::Resnet50Imagenet => "resnet50-imagenet",
        }
    }

    /// Block type and standard shape of a ResNet, `None` for the ConvNets.
    pub fn resnet(self) -> Option<(ResNetBlock, ResNetShape)> {
        match self {
            Arch::Resnet18 | Arch::Resnet18Imagenet => Some((ResNetBlock::Basic, ResNetShape::RESNET18)),
            Arch::Resnet50Imagenet => Some((ResNetBlock::Bottleneck, ResNetShape::RESNET50)),
            Arch::Convnet3 | Arch::Convnet4 | Arch::Convnet5 => None,
        }
    }

    /// Pooling stages of a ConvNet (each halves the image), `None` for the ResNets.
    pub fn convnet_depth(self) -> Option<usize> {
        match self {
            Arch::Convnet3 => Some(3),
            Arch::Convnet4 => Some(4),
            Arch::Convnet5 => Some(5),
            Arch::Resnet18 | Arch::Resnet18Imagenet | Arch::Resnet50Imagenet => None,
        }
    }
}

/// Everything needed to rebuild a classifier before loading its weights.
#[derive(Config, Debug)]
pub struct ClassifierConfig {
    pub arch: Arch,
    pub in_channels: usize,
    pub num_classes: usize,
    /// Input height and width the model is built for (ConvNet's linear head depends on it).
    pub image_size: [usize; 2],
    /// Normalisation layer of the ConvNets; ResNets always use batch norm.
    #[config(default = "NormKind::Instance")]
    pub norm: NormKind,
    /// Blocks per stage and widths of a ResNet other than its arch's standard one (an imported
    /// net: torchvision's code at another depth or width); `None` for the standard nets. Absent
    /// from the `model.json` files written before it existed, which read as `None`.
    pub resnet: Option<ResNetShape>,
}

impl ClassifierConfig {
    /// Whether a model can be built from this config (a checkpoint's `model.json` is untrusted):
    /// at least one input channel and class, and images large enough for a ConvNet's pooling.
    pub fn validate(&self) -> Result<(), String> {
        if self.in_channels == 0 || self.num_classes == 0 || self.image_size.contains(&0) {
            return Err(format!(
                "{} input channels, {} classes, image size {:?}: each must be at least 1",
                self.in_channels, self.num_classes, self.image_size
            ));
        }
        if let Some(shape) = &self.resnet {
            if self.arch.resnet().is_none() {
                return Err(format!("{} is not a ResNet: it takes no ResNet shape", self.arch.name()));
            }
            if shape.blocks.contains(&0) || shape.stem_width == 0 || shape.width == 0 {
                return Err(format!("ResNet shape {shape:?}: every stage needs a block, every width a channel"));
            }
        }
        if let Some(depth) = self.arch.convnet_depth() {
            let min = 1usize << depth;
            if self.image_size.iter().any(|&s| s < min) {
                return Err(format!("{} needs images of at least {min}x{min} pixels, not {:?}", self.arch.name(), self.image_size));
            }
        }
        Ok(())
    }

    /// The ResNet's shape: [`ClassifierConfig::resnet`], else its arch's standard one.
    pub fn resnet_shape(&self) -> Option<ResNetShape> {
        self.resnet.or_else(|| self.arch.resnet().map(|(_, shape)| shape))
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Classifier<B> {
        let convnet = |depth| {
            Classifier::ConvNet(
                ConvNetConfig::new(self.in_channels, self.num_classes, self.image_size).with_depth(depth).with_norm(self.norm).init(device),
            )
        };
        let resnet = |stem| {
            let shape = self.resnet_shape().expect("a ResNet arch");
            ResNetConfig::new(self.in_channels, self.num_classes).with_stem(stem).with_shape(shape)
        };
        let model = match self.arch {
            Arch::Convnet3 => convnet(3),
            Arch::Convnet4 => convnet(4),
            Arch::Convnet5 => convnet(5),
            Arch::Resnet18 => Classifier::ResNet(resnet(ResNetStem::Small).init(device)),
            Arch::Resnet18Imagenet => Classifier::ResNet(resnet(ResNetStem::Imagenet).init(device)),
            Arch::Resnet50Imagenet => Classifier::BottleneckResNet(resnet(ResNetStem::Imagenet).init_bottleneck(device)),
        };
        materialize(&model);
        model
    }
}

#[derive(Module, Debug)]
pub enum Classifier<B: Backend> {
    ConvNet(ConvNet<B>),
    ResNet(ResNet<B>),
    BottleneckResNet(BottleneckResNet<B>),
}

impl<B: crate::kernels::DaceBackend> Classifier<B> {
    /// `[batch, channels, height, width]` -> logits `[batch, classes]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Classifier::ConvNet(m) => m.forward(images),
            Classifier::ResNet(m) => m.forward(images),
            Classifier::BottleneckResNet(m) => m.forward(images),
        }
    }
}

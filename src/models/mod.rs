//! Image classifiers, written once for every backend.
//!
//! `Classifier<B>` is the one model type the training, evaluation and distillation code handles; it
//! wraps the concrete architectures so that a checkpoint is "config + weights" whatever the arch.

mod convnet;
mod params;
mod resnet;

pub use convnet::{ConvNet, ConvNetConfig, NormKind};
pub use params::{materialize, param_shapes, trainable_params};
pub use resnet::{ResNet, ResNetConfig, ResNetStem};

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
}

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::Convnet3, Arch::Convnet4, Arch::Convnet5, Arch::Resnet18, Arch::Resnet18Imagenet];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Convnet3 => "convnet3",
            Arch::Convnet4 => "convnet4",
            Arch::Convnet5 => "convnet5",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet18Imagenet => "resnet18-imagenet",
        }
    }

    /// Pooling stages of a ConvNet (each halves the image), `None` for the ResNets.
    pub fn convnet_depth(self) -> Option<usize> {
        match self {
            Arch::Convnet3 => Some(3),
            Arch::Convnet4 => Some(4),
            Arch::Convnet5 => Some(5),
            Arch::Resnet18 | Arch::Resnet18Imagenet => None,
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
        if let Some(depth) = self.arch.convnet_depth() {
            let min = 1usize << depth;
            if self.image_size.iter().any(|&s| s < min) {
                return Err(format!("{} needs images of at least {min}x{min} pixels, not {:?}", self.arch.name(), self.image_size));
            }
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Classifier<B> {
        let convnet = |depth| {
            Classifier::ConvNet(
                ConvNetConfig::new(self.in_channels, self.num_classes, self.image_size).with_depth(depth).with_norm(self.norm).init(device),
            )
        };
        let resnet = |stem| Classifier::ResNet(ResNetConfig::new(self.in_channels, self.num_classes).with_stem(stem).init(device));
        let model = match self.arch {
            Arch::Convnet3 => convnet(3),
            Arch::Convnet4 => convnet(4),
            Arch::Convnet5 => convnet(5),
            Arch::Resnet18 => resnet(ResNetStem::Small),
            Arch::Resnet18Imagenet => resnet(ResNetStem::Imagenet),
        };
        materialize(&model);
        model
    }
}

#[derive(Module, Debug)]
pub enum Classifier<B: Backend> {
    ConvNet(ConvNet<B>),
    ResNet(ResNet<B>),
}

impl<B: crate::kernels::DaceBackend> Classifier<B> {
    /// `[batch, channels, height, width]` -> logits `[batch, classes]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Classifier::ConvNet(m) => m.forward(images),
            Classifier::ResNet(m) => m.forward(images),
        }
    }
}

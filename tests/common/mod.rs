//! Helpers the integration tests share (each test binary compiles this module; not every binary
//! uses every helper).
#![allow(dead_code)]

use std::path::Path;

use burn::backend::Autodiff;
use dace::data::{augment as data_augment, Dataset};
use dace::device::CpuBackend;
use dace::models::{self, Arch, Classifier, ClassifierConfig};
use dace::prior::bundle::Prior;
use dace::prior::train::{train_prior, PriorTrainConfig};
use dace::train::{self, ModelMeta, Normalization};

pub type B = CpuBackend;

/// The largest of non-negative values, NaN if any is NaN (`f32::max` would drop a NaN and let a
/// NaN output pass a tolerance check).
pub fn nan_max(values: impl IntoIterator<Item = f32>) -> f32 {
    values.into_iter().fold(0.0, |m, x| if x.is_nan() || x > m { x } else { m })
}

/// A random-weight (seed 0) ConvNet-3 teacher saved to `dir` (packages record its fingerprint).
pub fn random_teacher(ds: &Dataset, dir: &Path) -> (Classifier<B>, ModelMeta) {
    let config = ClassifierConfig::new(Arch::Convnet3, ds.channels, ds.num_classes(), [ds.height, ds.width]);
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), 0);
    let model = config.init::<B>(&Default::default());
    models::materialize(&model);
    let (mean, std) = data_augment::channel_mean_std(ds).unwrap();
    let meta = ModelMeta::new(config, Normalization { mean, std }, &ds.name, &ds.classes);
    train::save_model(dir, &model, &meta).unwrap();
    (model, meta)
}

/// A prior of the smallest widths trained for `steps` VAE and UNet steps into `out`.
pub fn tiny_prior(ds: &Dataset, out: &Path, steps: usize) -> Prior<B> {
    let config = PriorTrainConfig {
        vae_channels: vec![8, 16],
        unet_channels: vec![16, 32],
        class_dim: 16,
        vae_steps: steps,
        unet_steps: steps,
        batch_size: 8,
        checkpoint_every: steps,
        sample_steps: steps,
        ..PriorTrainConfig::default()
    };
    train_prior::<Autodiff<B>>(config, ds, out, false, &Default::default()).unwrap();
    Prior::load(out, &Default::default()).unwrap()
}

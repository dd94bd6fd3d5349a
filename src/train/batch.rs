//! Turns dataset images into normalised float batches, with a training augmentation when asked:
//! the small-image one (random crop with zero padding + horizontal flip) or ImageNet's
//! (random resized crop + flip, cropped from the full-resolution file when the data is read lazily).

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::Normalization;
use crate::data::{augment, DataError, Dataset, Split};

/// The random crop of the training augmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum CropKind {
    /// A crop of the image zero-padded by `crop_pad` pixels (CIFAR-style small images).
    #[default]
    Padded,
    /// torchvision's `RandomResizedCrop` (scale 0.08-1, aspect 3/4-4/3) resized to the image size.
    Resized,
}

#[derive(Clone, Debug)]
pub struct ImageBatcher {
    pub normalization: Normalization,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub crop: CropKind,
    /// Zero padding of the `Padded` crop; 0 disables it.
    pub crop_pad: usize,
    pub flip: bool,
}

impl ImageBatcher {
    /// A batcher without augmentation (evaluation).
    pub fn plain(ds: &Dataset, normalization: Normalization) -> Self {
        ImageBatcher {
            normalization,
            channels: ds.channels,
            height: ds.height,
            width: ds.width,
            crop: CropKind::Padded,
            crop_pad: 0,
            flip: false,
        }
    }

    pub fn augmenting(mut self, crop: CropKind, crop_pad: usize, flip: bool) -> Self {
        self.crop = crop;
        self.crop_pad = crop_pad;
        self.flip = flip;
        self
    }

    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Normalised (and, with `seed`, augmented) images `[n, c, h, w]` for `indices` of `split`,
    /// decoded in parallel when the split is read from files. Each image draws from its own
    /// stream of `seed`, so the batch does not depend on how rayon schedules the work. The first
    /// file that fails to decode, in batch order, is the error.
    pub fn images<B: Backend>(
        &self,
        split: &Split,
        indices: &[usize],
        seed: Option<u64>,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, DataError> {
        let len = self.image_len();
        let mut buf = vec![0f32; indices.len() * len];
        let results: Vec<Result<(), DataError>> = buf
            .par_chunks_mut(len)
            .zip(indices.par_iter())
            .enumerate()
            .map(|(slot, (out, &i))| self.view(split, i, seed, slot, out))
            .collect();
        results.into_iter().collect::<Result<(), _>>()?;
        let (c, h, w) = (self.channels, self.height, self.width);
        Ok(Tensor::from_data(TensorData::new(buf, [indices.len(), c, h, w]), device))
    }

    /// Item `i` of `split` into `out`, normalised, augmented from stream `slot` of `seed` if given.
    fn view(&self, split: &Split, i: usize, seed: Option<u64>, slot: usize, out: &mut [f32]) -> Result<(), DataError> {
        let (c, h, w) = (self.channels, self.height, self.width);
        let norm = &self.normalization;
        let mut rng = seed.map(|seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(slot as u64);
            rng
        });
        match rng.as_mut() {
            Some(rng) if self.crop == CropKind::Resized => {
                let bytes = split.random_resized_crop(i, [c, h, w], self.flip, rng)?;
                augment::to_f32_normalized(&bytes, &norm.mean, &norm.std, c, out);
            }
            Some(rng) if self.crop_pad > 0 || self.flip => {
                let bytes = split.image(i, [c, h, w])?;
                augment::to_f32_normalized(&bytes, &norm.mean, &norm.std, c, out);
                let src = out.to_vec();
                augment::random_crop_flip(&src, c, h, w, self.crop_pad, self.flip, rng, out);
            }
            _ => augment::to_f32_normalized(&split.image(i, [c, h, w])?, &norm.mean, &norm.std, c, out),
        }
        Ok(())
    }

    pub fn labels<B: Backend>(split: &Split, indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
        let labels: Vec<i64> = indices.iter().map(|&i| split.labels[i] as i64).collect();
        Tensor::from_data(TensorData::new(labels, [indices.len()]), device)
    }
}

//! Turns dataset images into normalised float batches, with the standard augmentation (random
//! crop with zero padding + horizontal flip) when asked.

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::checkpoint::Normalization;
use crate::data::{augment, Dataset, Split};

#[derive(Clone, Debug)]
pub struct ImageBatcher {
    pub normalization: Normalization,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Zero padding of the random crop; 0 disables cropping.
    pub crop_pad: usize,
    pub flip: bool,
}

impl ImageBatcher {
    /// A batcher without augmentation (evaluation).
    pub fn plain(ds: &Dataset, normalization: Normalization) -> Self {
        ImageBatcher { normalization, channels: ds.channels, height: ds.height, width: ds.width, crop_pad: 0, flip: false }
    }

    pub fn augmenting(mut self, crop_pad: usize, flip: bool) -> Self {
        self.crop_pad = crop_pad;
        self.flip = flip;
        self
    }

    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Normalised (and, with `seed`, augmented) images `[n, c, h, w]` for `indices` of `split`.
    /// Each image draws from its own stream of `seed`, so the batch does not depend on how rayon
    /// schedules the work.
    pub fn images<B: Backend>(&self, split: &Split, indices: &[usize], seed: Option<u64>, device: &B::Device) -> Tensor<B, 4> {
        let len = self.image_len();
        let mut buf = vec![0f32; indices.len() * len];
        let (c, h, w) = (self.channels, self.height, self.width);
        buf.par_chunks_mut(len).zip(indices.par_iter()).enumerate().for_each(|(slot, (out, &i))| {
            let bytes = &split.images[i * len..(i + 1) * len];
            augment::to_f32_normalized(bytes, &self.normalization.mean, &self.normalization.std, c, out);
            if let Some(seed) = seed {
                if self.crop_pad > 0 || self.flip {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(slot as u64);
                    let src = out.to_vec();
                    augment::random_crop_flip(&src, c, h, w, self.crop_pad, self.flip, &mut rng, out);
                }
            }
        });
        Tensor::from_data(TensorData::new(buf, [indices.len(), c, h, w]), device)
    }

    pub fn labels<B: Backend>(split: &Split, indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
        let labels: Vec<i64> = indices.iter().map(|&i| split.labels[i] as i64).collect();
        Tensor::from_data(TensorData::new(labels, [indices.len()]), device)
    }
}

//! The images a student trains on, and the exact augmented view of an item under a seed.

use rayon::prelude::*;

use super::augment;
use crate::coreset::{Coreset, Layout};
use crate::data::transform::resize_u8;
use crate::data::{augment::to_f32_normalized, Dataset};
use crate::error::Result;
use crate::package::{AugmentConfig, Manifest};
use crate::rng::{SeedRng, Stream};
use crate::train::Normalization;

/// Full-size u8 CHW images with their (hard) labels.
#[derive(Clone, Debug)]
pub struct TrainingSet {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// What the set is, for reports ("rded ipc 10 r 2 collage", "random ipc 10").
    pub description: String,
}

impl TrainingSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn from_coreset(coreset: &Coreset, layout: Layout) -> Result<Self> {
        let (images, labels) = coreset.training_images(layout)?;
        let m = &coreset.meta;
        Ok(TrainingSet {
            images,
            labels,
            channels: m.channels,
            height: m.image_size[0],
            width: m.image_size[1],
            num_classes: m.classes.len(),
            description: format!("rded ipc {} r {} {:?}", m.config.ipc, m.config.factor, layout).to_lowercase(),
        })
    }

    /// The set whose items are a package's patches (upsampled as the "rded" variant shows them);
    /// the labeller and the student swap in each seed's expansions.
    pub fn from_package(m: &Manifest, patches: &[u8]) -> Self {
        let [ph, pw] = m.patch_size;
        let [h, w] = m.image_size;
        let images: Vec<u8> = patches.chunks(m.patch_len()).flat_map(|p| resize_u8(p, m.channels, ph, pw, h, w)).collect();
        TrainingSet {
            images,
            labels: m.items.clone(),
            channels: m.channels,
            height: h,
            width: w,
            num_classes: m.num_classes(),
            description: m.description(),
        }
    }

    /// `ipc` real training images per class, drawn with the portable RNG from `seed`.
    pub fn random_subset(ds: &Dataset, ipc: usize, seed: u64) -> Result<Self> {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for class in 0..ds.num_classes() as u32 {
            let mut pool: Vec<usize> = (0..ds.train.len()).filter(|&i| ds.train.labels[i] == class).collect();
            let rng = SeedRng::new(seed, class as u64, Stream::Shuffle);
            let take = ipc.min(pool.len());
            for i in 0..take {
                let j = i + rng.below_at(i as u64, (pool.len() - i) as u32) as usize;
                pool.swap(i, j);
            }
            for &i in &pool[..take] {
                images.extend_from_slice(&ds.image(&ds.train, i)?);
                labels.push(class);
            }
        }
        Ok(TrainingSet {
            images,
            labels,
            channels: ds.channels,
            height: ds.height,
            width: ds.width,
            num_classes: ds.num_classes(),
            description: format!("random ipc {ipc}"),
        })
    }

    /// sha256 (hex) of the images and labels.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(&self.images);
        for l in &self.labels {
            h.update(l.to_le_bytes());
        }
        format!("{:x}", h.finalize())
    }

    fn normalized(&self, images: &[u8], item: usize, norm: &Normalization) -> Vec<f32> {
        let len = self.image_len();
        let mut out = vec![0f32; len];
        to_f32_normalized(&images[item * len..(item + 1) * len], &norm.mean, &norm.std, self.channels, &mut out);
        out
    }

    /// The augmented, normalised view of `item` under `seed`: a pure function of its arguments.
    pub fn view(&self, item: usize, seed: u64, cfg: &AugmentConfig, norm: &Normalization) -> Vec<f32> {
        self.view_in(&self.images, item, seed, cfg, norm)
    }

    /// [`Self::view`] with the set's images replaced by `images` (same shapes, e.g. the
    /// expansions of the set's patches under `seed`).
    pub fn view_in(&self, images: &[u8], item: usize, seed: u64, cfg: &AugmentConfig, norm: &Normalization) -> Vec<f32> {
        let (c, h, w) = (self.channels, self.height, self.width);
        let base = |i: usize| augment::base_view(&self.normalized(images, i, norm), c, h, w, seed, i as u64, cfg);
        let mut x = base(item);
        if cfg.cutmix {
            let (partner, bx) = augment::cutmix_choice(seed, item as u64, self.len(), h, w);
            augment::paste_box(&mut x, &base(partner), c, h, w, bx);
        }
        x
    }

    /// The item whose image `item`'s view under `seed` pastes a box of (CutMix), if any: a view
    /// reads the images of `item` and of this partner only.
    pub fn cutmix_partner(&self, item: usize, seed: u64, cfg: &AugmentConfig) -> Option<usize> {
        cfg.cutmix.then(|| augment::cutmix_choice(seed, item as u64, self.len(), self.height, self.width).0)
    }

    /// Views of `items` under `seed`, back to back.
    pub fn views(&self, items: &[usize], seed: u64, cfg: &AugmentConfig, norm: &Normalization) -> Vec<f32> {
        self.views_in(&self.images, items, seed, cfg, norm)
    }

    /// [`Self::views`] over replacement `images` (see [`Self::view_in`]).
    pub fn views_in(&self, images: &[u8], items: &[usize], seed: u64, cfg: &AugmentConfig, norm: &Normalization) -> Vec<f32> {
        assert_eq!(images.len(), self.images.len(), "replacement images must have the set's shape");
        let len = self.image_len();
        let mut buf = vec![0f32; items.len() * len];
        buf.par_chunks_mut(len).zip(items.par_iter()).for_each(|(out, &i)| out.copy_from_slice(&self.view_in(images, i, seed, cfg, norm)));
        buf
    }
}

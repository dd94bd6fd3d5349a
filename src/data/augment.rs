//! Pixel conversion and the standard training augmentation, on single CHW images.

use rand::Rng;

use super::dataset::Dataset;
use super::error::DataError;

/// `out = (bytes / 255 - mean[c]) / std[c]` for one CHW image of `c` channels.
pub fn to_f32_normalized(bytes: &[u8], mean: &[f32], std: &[f32], c: usize, out: &mut [f32]) {
    assert_eq!(bytes.len(), out.len(), "input and output lengths differ");
    assert!(mean.len() >= c && std.len() >= c, "need a mean and std per channel");
    if c == 0 || bytes.is_empty() {
        return;
    }
    let plane = bytes.len() / c;
    for ch in 0..c {
        let range = ch * plane..(ch + 1) * plane;
        let scale = 1.0 / (255.0 * std[ch]);
        let shift = mean[ch] / std[ch];
        for (o, &b) in out[range.clone()].iter_mut().zip(&bytes[range]) {
            *o = f32::from(b) * scale - shift;
        }
    }
}

/// Training images a split read from files contributes to the normalisation statistics: an
/// evenly spaced sample, since decoding all of ImageNet for two numbers per channel is not worth it.
pub const STATS_SAMPLE: usize = 5000;

/// Per-channel mean and standard deviation of the training images, on the 0..1 scale: exact over
/// a split in memory, over `STATS_SAMPLE` evenly spaced images of a split read from files.
///
/// A channel with zero spread (or an empty training set) gets std 1, so that normalising with the
/// result never divides by zero.
pub fn channel_mean_std(ds: &Dataset) -> Result<(Vec<f32>, Vec<f32>), DataError> {
    let plane = ds.height * ds.width;
    // Exact integer sums: f32 accumulation over 47M pixels would lose precision.
    let mut sum = vec![0u64; ds.channels];
    let mut sum_sq = vec![0u64; ds.channels];
    let mut add = |image: &[u8]| {
        for (i, chunk) in image.chunks_exact(plane.max(1)).enumerate() {
            let ch = i % ds.channels;
            for &b in chunk {
                sum[ch] += u64::from(b);
                sum_sq[ch] += u64::from(b) * u64::from(b);
            }
        }
    };
    let mut images = 0usize;
    match ds.train.bytes() {
        Some(bytes) => {
            add(bytes);
            images = ds.train.len();
        }
        None => {
            let step = ds.train.len().div_ceil(STATS_SAMPLE).max(1);
            for i in (0..ds.train.len()).step_by(step) {
                add(&ds.image(&ds.train, i)?);
                images += 1;
            }
        }
    }
    let count = (images * plane) as f64;
    let mut means = Vec::with_capacity(ds.channels);
    let mut stds = Vec::with_capacity(ds.channels);
    for ch in 0..ds.channels {
        if count == 0.0 {
            means.push(0.0);
            stds.push(1.0);
            continue;
        }
        let mean = sum[ch] as f64 / count;
        let var = (sum_sq[ch] as f64 / count - mean * mean).max(0.0);
        let std = var.sqrt() / 255.0;
        means.push((mean / 255.0) as f32);
        stds.push(if std > 1e-8 { std as f32 } else { 1.0 });
    }
    Ok((means, stds))
}

/// Crops the CHW image `img` zero-padded by `pad` on every side back to `h` x `w`, taking the
/// window whose top-left corner is at (`top`, `left`) in padded coordinates (each in
/// `0..=2*pad`; `pad`, `pad` is the unshifted image), and mirrors it horizontally if `flip`.
#[allow(clippy::too_many_arguments)] // the shape and the crop are all needed, and named better than a struct
pub fn crop_flip(img: &[f32], c: usize, h: usize, w: usize, pad: usize, top: usize, left: usize, flip: bool, out: &mut [f32]) {
    assert_eq!(img.len(), c * h * w, "image length is not c*h*w");
    assert_eq!(out.len(), img.len(), "output length differs from input");
    for ch in 0..c {
        let src = &img[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            // Row y of the crop is row y + top - pad of the original; outside it is padding.
            let sy = (y + top).checked_sub(pad).filter(|&sy| sy < h);
            for x in 0..w {
                let dx = if flip { w - 1 - x } else { x };
                let sx = (dx + left).checked_sub(pad).filter(|&sx| sx < w);
                dst[y * w + x] = match (sy, sx) {
                    (Some(sy), Some(sx)) => src[sy * w + sx],
                    _ => 0.0,
                };
            }
        }
    }
}

/// The standard augmentation: random crop of the image zero-padded by `pad`, then, if `flip`, a
/// horizontal flip with probability 0.5 (off for data where mirroring changes the class, e.g.
/// digits). The crop is drawn before the flip, so one seed gives the same crop either way.
///
/// It works on normalised f32 data, so the zero padding is the mean colour; torchvision's
/// `RandomCrop(padding=...)` pads the raw image with black instead. Callers that want black
/// padding can crop the unnormalised x/255 values and normalise afterwards.
#[allow(clippy::too_many_arguments)] // shape, crop and flip settings, rng and output are all needed
pub fn random_crop_flip(img: &[f32], c: usize, h: usize, w: usize, pad: usize, flip: bool, rng: &mut impl Rng, out: &mut [f32]) {
    let top = rng.random_range(0..=2 * pad);
    let left = rng.random_range(0..=2 * pad);
    let mirror = flip && rng.random_bool(0.5);
    crop_flip(img, c, h, w, pad, top, left, mirror, out);
}

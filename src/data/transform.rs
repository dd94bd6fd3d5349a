//! Image transformations: resizing of single images (u8 with the image crate's filter, f32
//! bilinear and antialiased bilinear as PyTorch does them) and of whole datasets, and per-class
//! subsets.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};
use rayon::prelude::*;

use super::dataset::{Dataset, Pixels, Split};

impl Dataset {
    /// Every image at `height` x `width`. Images in memory are resized bilinearly (the image
    /// crate's Triangle filter), one channel at a time; a split read from files only changes the
    /// size its files are decoded at. Returns an identical copy when the size is already right.
    pub fn resized(&self, height: usize, width: usize) -> Dataset {
        if (height, width) == (self.height, self.width) {
            return self.clone();
        }
        let resize_split = |split: &Split| match &split.pixels {
            Pixels::Memory(bytes) => Split::in_memory(self.resize_images(bytes, height, width), split.labels.clone()),
            Pixels::Files(_) => split.clone(),
        };
        Dataset {
            name: self.name.clone(),
            classes: self.classes.clone(),
            channels: self.channels,
            height,
            width,
            train: resize_split(&self.train),
            test: resize_split(&self.test),
        }
    }

    fn resize_images(&self, images: &[u8], height: usize, width: usize) -> Vec<u8> {
        let plane_in = self.height * self.width;
        let plane_out = height * width;
        let mut out = vec![0u8; images.len() / plane_in.max(1) * plane_out];
        if plane_in == 0 || plane_out == 0 {
            return out;
        }
        out.par_chunks_mut(plane_out).zip(images.par_chunks(plane_in)).for_each(|(dst, src)| {
            let plane = ImageBuffer::<Luma<u8>, &[u8]>::from_raw(self.width as u32, self.height as u32, src)
                .expect("chunk length equals height * width");
            let resized = imageops::resize(&plane, width as u32, height as u32, FilterType::Triangle);
            dst.copy_from_slice(resized.as_raw());
        });
        out
    }

    /// The first `train_per_class` training and `test_per_class` test images of each class, in
    /// their original order. Classes with fewer images keep all of them.
    pub fn per_class_subset(&self, train_per_class: usize, test_per_class: usize) -> Dataset {
        Dataset {
            name: self.name.clone(),
            classes: self.classes.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            train: self.first_per_class(&self.train, train_per_class),
            test: self.first_per_class(&self.test, test_per_class),
        }
    }

    fn first_per_class(&self, split: &Split, per_class: usize) -> Split {
        let mut taken = vec![0usize; self.num_classes()];
        let mut kept = Vec::new();
        for (i, &label) in split.labels.iter().enumerate() {
            let Some(count) = taken.get_mut(label as usize) else {
                continue;
            };
            if *count < per_class {
                *count += 1;
                kept.push(i);
            }
        }
        split.select(&kept, self.image_len())
    }
}

/// Resizes each channel plane of `src` (`c x h x w`) to `oh x ow` with the image crate's triangle
/// (bilinear, antialiased when shrinking) filter.
pub fn resize_u8(src: &[u8], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<u8> {
    if (oh, ow) == (h, w) {
        return src.to_vec();
    }
    let mut out = Vec::with_capacity(c * oh * ow);
    for plane in src.chunks(h * w) {
        let img: ImageBuffer<Luma<u8>, &[u8]> = ImageBuffer::from_raw(w as u32, h as u32, plane).expect("plane size");
        out.extend_from_slice(imageops::resize(&img, ow as u32, oh as u32, FilterType::Triangle).as_raw());
    }
    out
}

/// Bilinear resize of `c` planes `h x w` to `oh x ow`, half-pixel centres (PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)` without antialiasing).
pub fn resize_bilinear(src: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize, out: &mut [f32]) {
    let coords = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let s = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (coords(h, oh), coords(w, ow));
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
            let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
            let row = &mut out[(ch * oh + oy) * ow..(ch * oh + oy + 1) * ow];
            for (o, &(x0, x1, fx)) in row.iter_mut().zip(&xs) {
                let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
                let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
                *o = top + (bottom - top) * fy;
            }
        }
    }
}

/// The taps of one output pixel of [`resize_antialiased`] along one axis: the first input index
/// and the normalised weights of the inputs from there on.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// Taps of every output index of an axis of `n_in` pixels resized to `n_out`: a triangle filter
/// whose support grows with the shrink factor, so every input pixel counts when shrinking.
/// Arithmetic step for step as PyTorch's CPU kernel for float32 (`_compute_indices_min_size_
/// weights_aa`: f32 values, some intermediate sums in f64), so that `interpolate(...,
/// antialias=True)` reproduces it to an ulp; docs/FORMAT.md spells every rounding out.
fn antialias_taps(n_in: usize, n_out: usize) -> Vec<Taps> {
    let scale = n_in as f32 / n_out as f32;
    let (support, inv) = if scale >= 1.0 { (scale, (1.0 / scale as f64) as f32) } else { (1.0, 1.0) };
    // PyTorch's bound on the taps (rounding may otherwise add one).
    let max_taps = support.ceil() as usize * 2 + 1;
    (0..n_out)
        .map(|o| {
            let center = (scale as f64 * (o as f64 + 0.5)) as f32;
            // Truncation toward zero, as C++'s cast to an integer.
            let first = (((center - support) as f64 + 0.5) as i64).max(0) as usize;
            let end = ((((center + support) as f64 + 0.5) as i64).max(0) as usize).min(n_in).min(first + max_taps);
            let raw: Vec<f32> = (first..end)
                .map(|k| {
                    let x = (((k as f32 - center) as f64 + 0.5) * inv as f64) as f32;
                    if x.abs() < 1.0 {
                        1.0 - x.abs()
                    } else {
                        0.0
                    }
                })
                .collect();
            // The input pixel under `center` always has a positive weight, so `total > 0`.
            let total = raw.iter().fold(0f32, |t, &w| t + w);
            Taps { first, weights: raw.iter().map(|w| w / total).collect() }
        })
        .collect()
}

/// One output value: `sum_k x[first + k] * w[k]` accumulated in f32 from the first tap on.
fn apply_taps(taps: &Taps, at: impl Fn(usize) -> f32) -> f32 {
    let mut acc = at(taps.first) * taps.weights[0];
    for (k, w) in taps.weights.iter().enumerate().skip(1) {
        acc += at(taps.first + k) * w;
    }
    acc
}

/// Resizes `c` planes `h x w` to `oh x ow` bilinearly with antialiasing (PyTorch's
/// `interpolate(mode="bilinear", align_corners=False, antialias=True)`, PIL's triangle filter):
/// the width first, then the height; an axis whose size does not change is copied. Plain Rust on
/// the host, so every device (CPU, wgpu, CUDA, the browser) resizes its decoded images with this
/// one function.
pub fn resize_antialiased(src: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let rows = if ow == w {
        src.to_vec()
    } else {
        let taps = antialias_taps(w, ow);
        let mut out = Vec::with_capacity(c * h * ow);
        for row in src.chunks(w) {
            out.extend(taps.iter().map(|t| apply_taps(t, |x| row[x])));
        }
        out
    };
    if oh == h {
        return rows;
    }
    let taps = antialias_taps(h, oh);
    let mut out = Vec::with_capacity(c * oh * ow);
    for plane in rows.chunks(h * ow) {
        for t in &taps {
            for x in 0..ow {
                out.push(apply_taps(t, |y| plane[y * ow + x]));
            }
        }
    }
    out
}

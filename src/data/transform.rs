//! Image transformations: resizing of single images (u8 with the image crate's filter, f32
//! bilinear as PyTorch does it) and of whole datasets, and per-class subsets.

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

//! Whole-dataset transformations: resizing and per-class subsets.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};
use rayon::prelude::*;

use super::{Dataset, Split};

impl Dataset {
    /// Every image resized to `height` x `width`, bilinearly (the image crate's Triangle filter),
    /// one channel at a time. Returns an identical copy when the size is already right.
    pub fn resized(&self, height: usize, width: usize) -> Dataset {
        if (height, width) == (self.height, self.width) {
            return self.clone();
        }
        let resize_split = |split: &Split| Split {
            images: self.resize_images(&split.images, height, width),
            labels: split.labels.clone(),
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
        out.par_chunks_mut(plane_out)
            .zip(images.par_chunks(plane_in))
            .for_each(|(dst, src)| {
                let plane = ImageBuffer::<Luma<u8>, &[u8]>::from_raw(
                    self.width as u32,
                    self.height as u32,
                    src,
                )
                .expect("chunk length equals height * width");
                let resized =
                    imageops::resize(&plane, width as u32, height as u32, FilterType::Triangle);
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
        let mut subset = Split::default();
        for (i, &label) in split.labels.iter().enumerate() {
            let Some(count) = taken.get_mut(label as usize) else {
                continue;
            };
            if *count < per_class {
                *count += 1;
                subset.labels.push(label);
                subset.images.extend_from_slice(self.image(split, i));
            }
        }
        subset
    }
}

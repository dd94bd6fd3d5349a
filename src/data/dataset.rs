//! The in-memory dataset every loader produces: 8-bit NCHW pixels and `u32` labels per split.

use std::fmt;

/// One split of a dataset: `len()` images of `C*H*W` bytes each, stored back to back.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// N*C*H*W bytes, NCHW, row-major.
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

// A derived Debug would print millions of pixel values.
impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Split {{ {} images, {} bytes }}", self.len(), self.images.len())
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    /// Class names in label order: label `i` is `classes[i]`.
    pub classes: Vec<String>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub train: Split,
    pub test: Split,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dataset {{ {}: {} classes, {}x{}x{}, train {}, test {} }}",
            self.name,
            self.num_classes(),
            self.channels,
            self.height,
            self.width,
            self.train.len(),
            self.test.len()
        )
    }
}

impl Dataset {
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Bytes per image: C*H*W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The CHW bytes of image `i` of `split`. Panics if `i >= split.len()`, like slice indexing.
    pub fn image<'a>(&self, split: &'a Split, i: usize) -> &'a [u8] {
        let len = self.image_len();
        &split.images[i * len..(i + 1) * len]
    }

    /// Number of images of each class `0..n` in `split`; labels `>= n` are not counted.
    pub fn class_counts(split: &Split, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &label in &split.labels {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
        counts
    }
}

//! The dataset every loader produces: 8-bit NCHW pixels and `u32` labels per split, held in memory
//! or read from image files on demand (`Pixels`).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use rand::Rng;

use super::error::DataError;
use super::view::{self, ImageFile};

/// Where a split's pixels live.
#[derive(Clone, PartialEq, Eq)]
pub enum Pixels {
    /// N*C*H*W bytes, NCHW, row-major.
    Memory(Vec<u8>),
    /// One image file per item, decoded and resized to the dataset's size when it is read, so
    /// memory is bounded by the batch rather than the dataset (ImageNet-scale folders).
    Files(Arc<[ImageFile]>),
}

impl Default for Pixels {
    fn default() -> Self {
        Pixels::Memory(Vec::new())
    }
}

/// One split of a dataset: `len()` images of the dataset's `C*H*W` shape, and their labels.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub pixels: Pixels,
    pub labels: Vec<u32>,
}

impl Split {
    pub fn in_memory(images: Vec<u8>, labels: Vec<u32>) -> Self {
        Split { pixels: Pixels::Memory(images), labels }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of a split held in memory; `None` for one read from files.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.pixels {
            Pixels::Memory(bytes) => Some(bytes),
            Pixels::Files(_) => None,
        }
    }

    pub fn is_lazy(&self) -> bool {
        matches!(self.pixels, Pixels::Files(_))
    }

    /// The CHW bytes of item `i` at `shape` `[c, h, w]`: a slice of memory, or the file decoded
    /// with the evaluation view (`view::centre`). Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize, shape: [usize; 3]) -> Result<Cow<'_, [u8]>, DataError> {
        match &self.pixels {
            Pixels::Memory(bytes) => {
                let len = shape.iter().product::<usize>();
                Ok(Cow::Borrowed(&bytes[i * len..(i + 1) * len]))
            }
            Pixels::Files(files) => view::centre(&files[i], shape).map(Cow::Owned),
        }
    }

    /// Item `i` at `shape` through a random resized crop (and a mirror with probability 1/2 when
    /// `flip`). A file is cropped at its full resolution; an image in memory at the stored size.
    pub fn random_resized_crop(&self, i: usize, shape: [usize; 3], flip: bool, rng: &mut impl Rng) -> Result<Vec<u8>, DataError> {
        match &self.pixels {
            Pixels::Memory(_) => {
                let image = self.image(i, shape)?;
                Ok(view::random_resized_crop_chw(&image, shape, flip, rng))
            }
            Pixels::Files(files) => view::random_resized_crop(&files[i], shape, flip, rng),
        }
    }

    /// The items `indices`, in that order, as a new split of the same storage.
    pub fn select(&self, indices: &[usize], image_len: usize) -> Split {
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let pixels = match &self.pixels {
            Pixels::Memory(bytes) => {
                Pixels::Memory(indices.iter().flat_map(|&i| &bytes[i * image_len..(i + 1) * image_len]).copied().collect())
            }
            Pixels::Files(files) => Pixels::Files(indices.iter().map(|&i| files[i].clone()).collect()),
        };
        Split { pixels, labels }
    }
}

// A derived Debug would print millions of pixel values.
impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pixels {
            Pixels::Memory(bytes) => write!(f, "Split {{ {} images, {} bytes }}", self.len(), bytes.len()),
            Pixels::Files(_) => write!(f, "Split {{ {} images read from files }}", self.len()),
        }
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
            "Dataset {{ {}: {} classes, {}x{}x{}, train {:?}, test {:?} }}",
            self.name,
            self.num_classes(),
            self.channels,
            self.height,
            self.width,
            self.train,
            self.test
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

    /// `[c, h, w]` of every image the dataset yields.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The CHW bytes of image `i` of `split` (decoded if the split is read from files). Panics if
    /// `i >= split.len()`, like slice indexing.
    pub fn image<'a>(&self, split: &'a Split, i: usize) -> Result<Cow<'a, [u8]>, DataError> {
        split.image(i, self.shape())
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

//! Image classification datasets held in memory as raw bytes.
//!
//! Every loader produces the same [`Dataset`]: 8-bit pixels in NCHW order plus `u32` labels, so
//! the rest of dace never cares whether the data came from IDX, CIFAR binaries or a folder tree.
//! [`load`] picks the loader from what it finds on disk.

pub mod augment;
mod cifar;
mod error;
pub mod fetch;
mod files;
mod folder;
mod idx;
mod transform;

use std::fmt;
use std::path::Path;

pub use error::DataError;
pub use fetch::fetch;

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
        write!(
            f,
            "Split {{ {} images, {} bytes }}",
            self.len(),
            self.images.len()
        )
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

/// Loads a dataset.
///
/// `spec` is "embedded" (the committed Fashion-MNIST subset), or a path: a directory with IDX files,
/// a CIFAR-10 or CIFAR-100 binary directory, or an ImageFolder root. The format is auto-detected.
pub fn load(spec: &str) -> Result<Dataset, DataError> {
    if spec == "embedded" {
        return Ok(load_embedded());
    }
    let path = Path::new(spec);
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_dir() {
        return Err(DataError::UnknownFormat { path: path.into() });
    }
    load_dir(path, true)
}

/// `descend`: the official CIFAR archives unpack into one subfolder (`cifar-10-batches-bin/`,
/// `cifar-100-binary/`); accept the folder above it too, but only one level up.
fn load_dir(dir: &Path, descend: bool) -> Result<Dataset, DataError> {
    if idx::is_idx_dir(dir) {
        return idx::load_dir(dir);
    }
    if cifar::is_cifar10_dir(dir) {
        return cifar::load_cifar10(dir);
    }
    if cifar::is_cifar100_dir(dir) {
        return cifar::load_cifar100(dir);
    }
    if descend {
        for sub in ["cifar-10-batches-bin", "cifar-100-binary"] {
            if dir.join(sub).is_dir() {
                return load_dir(&dir.join(sub), false);
            }
        }
    }
    if folder::is_image_folder(dir) {
        return folder::load(dir);
    }
    Err(DataError::UnknownFormat { path: dir.into() })
}

/// The committed Fashion-MNIST subset (first 100 train and 100 test images per class), compiled
/// into the binary so that tests and demos need no download.
pub fn load_embedded() -> Dataset {
    idx::load_embedded()
        .unwrap_or_else(|e| panic!("the embedded Fashion-MNIST subset is broken: {e}"))
}

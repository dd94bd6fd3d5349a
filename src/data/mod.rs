//! Image classification datasets as raw bytes, in memory or read from image files on demand.
//!
//! Every loader produces the same [`Dataset`]: 8-bit pixels in NCHW order plus `u32` labels, so
//! the rest of dace never cares whether the data came from IDX, CIFAR binaries or a folder tree.
//! [`load`] picks the loader from what it finds on disk; an ImageFolder tree too large to decode
//! into memory is indexed instead and decoded batch by batch ([`Pixels::Files`], `view`).

pub mod augment;
mod cifar;
mod dataset;
mod error;
pub mod fetch;
mod files;
mod folder;
mod idx;
pub mod names;
pub mod transform;
pub mod view;

use std::path::Path;

pub use dataset::{Dataset, Pixels, Split};
pub use error::DataError;
pub use fetch::fetch;
pub use folder::{LoadOptions, IN_MEMORY_LIMIT};

/// Loads a dataset.
///
/// `spec` is "embedded" (the committed Fashion-MNIST subset), or a path: a directory with IDX files,
/// a CIFAR-10 or CIFAR-100 binary directory, or an ImageFolder root. The format is auto-detected.
pub fn load(spec: &str) -> Result<Dataset, DataError> {
    load_with(spec, &LoadOptions::default())
}

/// [`load`] with the options of an ImageFolder tree (the size its images are read at, and how
/// large it may be to be decoded into memory); IDX and CIFAR data ignore them.
pub fn load_with(spec: &str, options: &LoadOptions) -> Result<Dataset, DataError> {
    if spec == "embedded" {
        return Ok(load_embedded());
    }
    let path = Path::new(spec);
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_dir() {
        return Err(DataError::UnknownFormat { path: path.into() });
    }
    load_dir(path, true, options)
}

/// `descend`: the official CIFAR archives unpack into one subfolder (`cifar-10-batches-bin/`,
/// `cifar-100-binary/`); accept the folder above it too, but only one level up.
fn load_dir(dir: &Path, descend: bool, options: &LoadOptions) -> Result<Dataset, DataError> {
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
                return load_dir(&dir.join(sub), false, options);
            }
        }
    }
    if folder::is_image_folder(dir) {
        return folder::load(dir, options);
    }
    Err(DataError::UnknownFormat { path: dir.into() })
}

/// The committed Fashion-MNIST subset (first 100 train and 100 test images per class), compiled
/// into the binary so that tests and demos need no download.
pub fn load_embedded() -> Dataset {
    idx::load_embedded().unwrap_or_else(|e| panic!("the embedded Fashion-MNIST subset is broken: {e}"))
}

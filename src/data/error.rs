//! Errors of the data loaders. Every variant names the file or folder at fault, so that a
//! message alone tells the user what to fix.

use std::path::PathBuf;

#[derive(thiserror::Error, Debug)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: truncated: expected {expected} bytes, got {got}", path.display())]
    Truncated { path: PathBuf, expected: usize, got: usize },

    #[error("{}: bad magic number {found:#010x} (not an IDX file of the expected kind)", path.display())]
    BadMagic { path: PathBuf, found: u32 },

    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error(
        "{}: image shape mismatch: expected {}x{}x{} (CxHxW), got {}x{}x{}; \
         all images of a dataset must have the same size",
        path.display(), expected.0, expected.1, expected.2, got.0, got.1, got.2
    )]
    ShapeMismatch { path: PathBuf, expected: (usize, usize, usize), got: (usize, usize, usize) },

    #[error(
        "images differ in size: {} is {}x{}, {} is {}x{}; give a size to read them at (--resize, \
         or the teacher's for commands that take one)",
        first.display(), first_size.0, first_size.1, other.display(), other_size.0, other_size.1
    )]
    MixedSizes { first: PathBuf, first_size: (u32, u32), other: PathBuf, other_size: (u32, u32) },

    #[error("{}: empty class folder (no .png, .jpg, .jpeg or .webp images)", path.display())]
    EmptyClass { path: PathBuf },

    #[error("{}: cannot read image: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    #[error(
        "{}: unknown dataset format (expected a directory with IDX files, CIFAR-10/100 binary \
         batches, or an ImageFolder tree of class folders)",
        path.display()
    )]
    UnknownFormat { path: PathBuf },

    #[error("{}: label {label} out of range for {classes} classes", path.display())]
    LabelOutOfRange { path: PathBuf, label: u32, classes: usize },

    #[error(
        "count mismatch: {} holds {images} images but {} holds {labels} labels",
        path_images.display(), path_labels.display()
    )]
    CountMismatch { path_images: PathBuf, path_labels: PathBuf, images: usize, labels: usize },

    /// Downloading or copying a dataset failed (`path` is the destination).
    #[error("{}: fetch failed: {reason}", path.display())]
    Fetch { path: PathBuf, reason: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Corrupt { path: path.into(), reason: reason.into() }
    }
}

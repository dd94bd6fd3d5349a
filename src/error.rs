//! The library's error type. Every variant names the file or the value that is wrong, so that a
//! user can act on the message without reading the code.

use std::path::PathBuf;

use crate::data::DataError;

#[derive(thiserror::Error, Debug)]
pub enum DaceError {
    #[error(transparent)]
    Data(#[from] DataError),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },

    #[error("the `{0}` device is not compiled into this build: rebuild with `--features {0}`")]
    DeviceUnavailable(&'static str),

    #[error("non-finite loss ({loss}) at epoch {epoch}, step {step}: lower the learning rate or check the data")]
    NonFiniteLoss { loss: f32, epoch: usize, step: usize },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = DaceError> = std::result::Result<T, E>;

impl DaceError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DaceError::Io { path: path.into(), source }
    }

    pub fn bad_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        DaceError::BadFile { path: path.into(), reason: reason.to_string() }
    }
}

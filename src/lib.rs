//! dace: diffusion-augmented coreset expansion for dataset distillation.
//!
//! Pipeline: `data` (loaders) -> `train` (teacher) -> coreset -> expansion -> package -> student.
//! Models are generic over burn backends; `device` picks one at run time.

pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod fsio;
pub mod kernels;
pub mod models;
pub mod train;

pub use error::{DaceError, Result};

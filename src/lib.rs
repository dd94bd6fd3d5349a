//! dace: diffusion-augmented coreset expansion for dataset distillation.
//!
//! Pipeline: `data` (loaders) -> `train` (teacher) -> `coreset` -> `prior` -> `expand` ->
//! `distill` (writes a `package`) -> `student` (regenerates and learns from it). ARCHITECTURE.md
//! has one line per module and the layering rule. Models are generic over burn backends;
//! `device` picks one at run time.

pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
pub mod coreset;
pub mod data;
pub mod device;
pub mod distill;
pub mod error;
pub mod expand;
pub mod experiment;
pub mod fsio;
pub mod kernels;
pub mod models;
pub mod package;
pub mod prior;
pub mod rng;
pub mod student;
pub mod torch_weights;
pub mod train;
pub mod viz;

pub use error::{DaceError, Result};

//! The diffusion prior: what turns a coreset patch into new training images (the paper's §3.2,
//! in diffusers' layout and semantics).
//!
//! - [`config`]: diffusers `config.json` files, refusing features dace does not implement;
//! - [`layers`], [`vae`], [`unet`]: `AutoencoderKL` and `UNet2DConditionModel` in burn, named
//!   like diffusers' modules so [`weights`] loads diffusers safetensors unchanged;
//! - [`scheduler`]: the samplers' step coefficients (the element-wise kernels that apply them
//!   live in `crate::kernels::diffusion`).

pub mod bundle;
pub mod clip;
pub mod config;
pub mod eval;
pub mod import;
pub mod layers;
pub mod pipeline;
pub mod scheduler;
pub mod tokenizer;
pub mod train;
pub mod unet;
pub mod vae;
pub mod weights;

pub use config::{UNetConfig, VaeConfig};
pub use unet::{TextTime, UNet2DConditionModel};
pub use vae::{AutoencoderKL, LatentDist};

//! The diffusion prior: what turns a coreset patch into new training images (../shared/NOTES.md
//! §1, §4). So far only [`scheduler`], the pure step-coefficient math of the samplers; the
//! element-wise kernels that apply those coefficients live in `crate::kernels::diffusion_ref`
//! (CPU reference), `shaders/*.wgsl` and `kernels/*.cu`.

pub mod scheduler;

//! The coefficients the fused diffusion kernels take. The scheduler (`prior::scheduler`) computes
//! them; they live here, with the kernels, so that the kernels depend on nothing above them.

/// One denoising update in the common form `x_next = ca * x + ce * eps + cz * z`, with `z` a fresh
/// standard normal per element (the kernels skip drawing it when `cz == 0`).
///
/// * Euler ancestral: `ca = 1`, `ce = sigma_down - sigma`, `cz = sigma_up` (eps is predicted from
///   the scaled input `c_in * x`, but the update is applied to the unscaled `x`).
/// * DDIM: `ca = sqrt(abar_p / abar_t)`,
///   `ce = sqrt(1 - abar_p - s^2) - sqrt(abar_p) * sqrt(1 - abar_t) / sqrt(abar_t)`, `cz = s`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoeffs {
    pub ca: f32,
    pub ce: f32,
    pub cz: f32,
}

impl StepCoeffs {
    /// Rounds f64 coefficients to the f32 the kernels use.
    pub fn from_f64(ca: f64, ce: f64, cz: f64) -> Self {
        StepCoeffs { ca: ca as f32, ce: ce as f32, cz: cz as f32 }
    }

    /// The update for one element, in the kernels' order of operations: `(ca*x + ce*eps) + cz*z`.
    #[inline]
    pub fn apply(&self, x: f32, eps: f32, z: f32) -> f32 {
        self.ca * x + self.ce * eps + self.cz * z
    }
}

/// Forward noising `out = a * z0 + b * n`, `n ~ N(0, 1)`.
///
/// * Euler ancestral: `a = 1`, `b = sigma_t` (diffusers' `EulerAncestralDiscreteScheduler.add_noise`;
///   the first model input is then scaled by `c_in = 1/sqrt(sigma^2 + 1)`).
/// * DDIM: `a = sqrt(abar_t)`, `b = sqrt(1 - abar_t)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseCoeffs {
    pub a: f32,
    pub b: f32,
}

impl NoiseCoeffs {
    pub fn from_f64(a: f64, b: f64) -> Self {
        NoiseCoeffs { a: a as f32, b: b as f32 }
    }
}

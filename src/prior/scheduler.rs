//! Step coefficients of the two samplers dace denoises with: Euler ancestral (SD-Turbo /
//! SDXL-Turbo) and DDIM. Pure, `std`-only functions of small config structs; diffusers' semantics,
//! checked against diffusers itself by the fixture
//! `tests/fixtures/schedulers.json` (made by `tests/fixtures/make_scheduler_fixture.py`).
//!
//! Both samplers reduce every denoising step to one element-wise update
//!
//! ```text
//! x_next = ca * x + ce * eps + cz * z        z ~ N(0, 1), fresh per step
//! ```
//!
//! ([`StepCoeffs`], defined with the kernels that take them), so one fused kernel (`scheduler_step`, see `docs/FORMAT.md`) serves both.
//! The model is evaluated on `c_in * x` ([`DenoiseStep::c_in`]) at `timestep`, and predicts `eps`.
//! Forward noising (img2img start, `add_noise`) is `a * z0 + b * n` ([`NoiseCoeffs`]).
//!
//! Precision: the schedule (betas, cumulative products, sigmas) is computed in f64. diffusers
//! computes it in f32 (torch `linspace`/`cumprod`), so its sigmas differ from these by up to
//! ~1.3e-5 relative; the f64 values are the more accurate ones. The coefficients handed to kernels
//! are rounded to f32 once, at the end.
//!
//! Supported subset of diffusers' options: `beta_schedule = "scaled_linear"`,
//! `prediction_type = "epsilon"`, `timestep_spacing` "leading" (with `steps_offset`) or
//! "trailing" (which ignores `steps_offset`, as diffusers does); DDIM with `clip_sample = False`,
//! no thresholding, any `eta`, and either `set_alpha_to_one`. Not supported: "linspace" spacing
//! (fractional timesteps), Karras sigmas, v-prediction, zero-SNR rescaling.

use crate::kernels::coeffs::{NoiseCoeffs, StepCoeffs};

/// Training steps of the Stable Diffusion family (`num_train_timesteps`).
pub const TRAIN_STEPS: usize = 1000;
/// `beta_start` of the scaled-linear schedule of SD 1/2, SDXL and their Turbo variants.
pub const BETA_START: f64 = 0.00085;
/// `beta_end` of the same schedule.
pub const BETA_END: f64 = 0.012;

/// `beta_i = linspace(sqrt(beta_start), sqrt(beta_end), train_steps)_i ^ 2` ("scaled_linear").
pub fn betas_scaled_linear(train_steps: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    let (lo, hi) = (beta_start.sqrt(), beta_end.sqrt());
    (0..train_steps)
        .map(|i| {
            let r = if train_steps > 1 { lo + (hi - lo) * (i as f64 / (train_steps - 1) as f64) } else { lo };
            r * r
        })
        .collect()
}

/// `abar_t = prod_{s <= t} (1 - beta_s)`.
pub fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// How the `num_steps` inference timesteps are picked from `0..train_steps` (diffusers'
/// `timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// `arange(0, N) * (T / N)` (integer division), reversed, plus `steps_offset`.
    /// Default of DDIM and SD 1.x/2.x configs (which set `steps_offset = 1`).
    Leading,
    /// `round(arange(T, 0, -T / N)) - 1` (float step, numpy rounding half to even); ends at
    /// `T/N - 1` and always starts at `T - 1`. SD-Turbo / SDXL-Turbo use it.
    Trailing,
}

/// Inference timesteps, highest first, without offset (`steps_offset = 0`).
/// `timesteps(1000, 5, Trailing) == [999, 799, 599, 399, 199]`.
pub fn timesteps(train_steps: usize, num_steps: usize, spacing: Spacing) -> Vec<usize> {
    timesteps_with_offset(train_steps, num_steps, spacing, 0)
}

/// Inference timesteps, highest first. `steps_offset` is added for [`Spacing::Leading`] only (as
/// diffusers does; trailing ignores it). With leading spacing and `steps_offset > 0` the first
/// timestep can reach `train_steps` (e.g. N = T), which diffusers rejects too; callers check with
/// [`ScheduleConfig::validate`].
///
/// Trailing reproduces numpy's `arange` exactly (`v_0 = T`, `v_1 = T - T/N`,
/// `v_i = T + i * (v_1 - T)`), then rounds half to even. For 62 values of N <= 1000 (N = 61,
/// 103, 121, ...) numpy's `arange` yields N + 1 values and diffusers ends with a bogus timestep
/// -1; this returns the first N, which equal diffusers' first N.
pub fn timesteps_with_offset(train_steps: usize, num_steps: usize, spacing: Spacing, steps_offset: usize) -> Vec<usize> {
    if num_steps == 0 {
        return Vec::new();
    }
    match spacing {
        Spacing::Leading => {
            let ratio = train_steps / num_steps;
            (0..num_steps).rev().map(|i| i * ratio + steps_offset).collect()
        }
        Spacing::Trailing => {
            let start = train_steps as f64;
            let step = train_steps as f64 / num_steps as f64;
            let v1 = start - step;
            let delta = v1 - start;
            (0..num_steps)
                .map(|i| {
                    let v = match i {
                        0 => start,
                        1 => v1,
                        _ => start + i as f64 * delta,
                    };
                    // v >= T/N - tiny > 0.5 for N <= T, so the result is >= 0.
                    (v.round_ties_even() as i64 - 1).max(0) as usize
                })
                .collect()
        }
    }
}

/// img2img start index (diffusers' `get_timesteps`): `init = min(int(N * strength), N)`,
/// `t_start = max(N - init, 0)`. The run uses `timesteps[t_start..]` and noises the input to
/// `timesteps[t_start]`. With N = 5: strength 0.4-0.5 -> 2 steps, 0.6-0.7 -> 3, 0.8-0.9 -> 4, 1.0 -> 5;
/// below 0.2, no step runs (diffusers raises an error then).
pub fn img2img_start(num_steps: usize, strength: f64) -> usize {
    // `as usize` truncates toward zero (saturating at 0) like Python's int() for these inputs.
    let init = ((num_steps as f64 * strength) as usize).min(num_steps);
    num_steps - init
}

/// The timesteps an img2img run of `num_steps` steps at `strength` denoises through:
/// `timesteps[img2img_start(..)..]` of the full schedule of `cfg`.
pub fn img2img_timesteps(num_steps: usize, strength: f64, cfg: &ScheduleConfig) -> Vec<usize> {
    let all = cfg.timesteps(num_steps);
    all[img2img_start(num_steps, strength)..].to_vec()
}

/// The training schedule and timestep spacing shared by both samplers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleConfig {
    pub train_steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub spacing: Spacing,
    /// Added to leading timesteps (SD 1.x/2.x configs: 1). Ignored by trailing spacing.
    pub steps_offset: usize,
}

impl Default for ScheduleConfig {
    /// SD-Turbo / SDXL-Turbo: scaled-linear 0.00085..0.012 over 1000 steps, trailing spacing.
    fn default() -> Self {
        ScheduleConfig { train_steps: TRAIN_STEPS, beta_start: BETA_START, beta_end: BETA_END, spacing: Spacing::Trailing, steps_offset: 0 }
    }
}

impl ScheduleConfig {
    /// Stable Diffusion 1.x/2.x defaults: leading spacing with `steps_offset = 1`.
    pub fn stable_diffusion() -> Self {
        ScheduleConfig { spacing: Spacing::Leading, steps_offset: 1, ..Self::default() }
    }

    pub fn alphas_cumprod(&self) -> Vec<f64> {
        alphas_cumprod(&betas_scaled_linear(self.train_steps, self.beta_start, self.beta_end))
    }

    pub fn timesteps(&self, num_steps: usize) -> Vec<usize> {
        timesteps_with_offset(self.train_steps, num_steps, self.spacing, self.steps_offset)
    }

    /// Checks that `num_steps` inference steps are possible: `1 <= num_steps <= train_steps`, and
    /// every timestep (offset included) `< train_steps`.
    pub fn validate(&self, num_steps: usize) -> Result<(), String> {
        if num_steps == 0 || num_steps > self.train_steps {
            return Err(format!("num_steps must be in 1..={}, got {num_steps}", self.train_steps));
        }
        match self.timesteps(num_steps).first() {
            Some(&t) if t >= self.train_steps => {
                Err(format!("timestep {t} (steps_offset {}) is outside 0..{}", self.steps_offset, self.train_steps))
            }
            _ => Ok(()),
        }
    }
}

/// `sigma(t) = sqrt((1 - abar_t) / abar_t)`.
pub fn sigma_from_abar(abar: f64) -> f64 {
    ((1.0 - abar) / abar).sqrt()
}

/// Euler-ancestral sigmas at `timesteps`, with `0` appended (`timesteps.len() + 1` values).
pub fn euler_a_sigmas(abar: &[f64], timesteps: &[usize]) -> Vec<f64> {
    timesteps.iter().map(|&t| sigma_from_abar(abar[t])).chain(std::iter::once(0.0)).collect()
}

/// Standard deviation of pure-noise initial latents (diffusers' `init_noise_sigma`): `sigma_max`
/// for trailing spacing, `sqrt(sigma_max^2 + 1)` for leading. `sigmas` as from [`euler_a_sigmas`].
/// (Text-to-image only; img2img noises with [`EulerAStep::add_noise`].)
pub fn euler_a_init_noise_sigma(sigmas: &[f64], spacing: Spacing) -> f64 {
    let max = sigmas.iter().cloned().fold(0.0, f64::max);
    match spacing {
        Spacing::Trailing => max,
        Spacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// One Euler-ancestral step from `sigma` to `sigma_next`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EulerAStep {
    pub timestep: usize,
    pub sigma: f64,
    pub sigma_next: f64,
    /// `sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)`.
    pub sigma_up: f64,
    /// `sqrt(sigma_next^2 - sigma_up^2)`.
    pub sigma_down: f64,
    /// Model-input scale `1 / sqrt(sigma^2 + 1)`.
    pub c_in: f64,
}

impl EulerAStep {
    pub fn new(timestep: usize, sigma: f64, sigma_next: f64) -> Self {
        let (s2, n2) = (sigma * sigma, sigma_next * sigma_next);
        let sigma_up = if s2 > 0.0 { (n2 * (s2 - n2) / s2).max(0.0).sqrt() } else { 0.0 };
        let sigma_down = (n2 - sigma_up * sigma_up).max(0.0).sqrt();
        EulerAStep { timestep, sigma, sigma_next, sigma_up, sigma_down, c_in: 1.0 / (s2 + 1.0).sqrt() }
    }

    /// `x_next = x + eps * (sigma_down - sigma) + sigma_up * z`.
    pub fn coeffs(&self) -> StepCoeffs {
        StepCoeffs::from_f64(1.0, self.sigma_down - self.sigma, self.sigma_up)
    }

    /// img2img noising when the run starts at this step: `x = z0 + sigma * n`.
    pub fn add_noise(&self) -> NoiseCoeffs {
        NoiseCoeffs::from_f64(1.0, self.sigma)
    }
}

/// All Euler-ancestral steps of the full N-step schedule `timesteps` (pass the full list; an
/// img2img run uses `steps[img2img_start(..)..]`, which is what diffusers computes too).
pub fn euler_a_steps(abar: &[f64], timesteps: &[usize]) -> Vec<EulerAStep> {
    let sigmas = euler_a_sigmas(abar, timesteps);
    timesteps.iter().enumerate().map(|(i, &t)| EulerAStep::new(t, sigmas[i], sigmas[i + 1])).collect()
}

/// DDIM options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimConfig {
    /// 0 = deterministic DDIM, 1 = DDPM-like ancestral noise.
    pub eta: f64,
    /// What `abar_prev` is at the last step (prev timestep < 0): 1.0 when true (diffusers'
    /// default and SD's config), `abar_0` when false.
    pub set_alpha_to_one: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        DdimConfig { eta: 0.0, set_alpha_to_one: true }
    }
}

/// diffusers' DDIM previous timestep: `t - T / N` (integer division), `None` when negative. Note
/// this is not always the next entry of the timestep list (trailing, N = 3: 666 -> 333, while the
/// list continues with 332).
pub fn ddim_prev_timestep(t: usize, train_steps: usize, num_steps: usize) -> Option<usize> {
    t.checked_sub(train_steps / num_steps)
}

/// One DDIM step from `timestep` to `prev_timestep`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimStep {
    pub timestep: usize,
    pub prev_timestep: Option<usize>,
    pub abar_t: f64,
    /// `abar[prev_timestep]`, or the final value (1 or `abar_0`) when there is none.
    pub abar_prev: f64,
    /// `s = eta * sqrt((1 - abar_p) / (1 - abar_t)) * sqrt(1 - abar_t / abar_p)`.
    pub std_dev: f64,
}

impl DdimStep {
    pub fn new(timestep: usize, prev_timestep: Option<usize>, abar: &[f64], cfg: &DdimConfig) -> Self {
        let abar_t = abar[timestep];
        let abar_prev = match prev_timestep {
            Some(p) => abar[p],
            None if cfg.set_alpha_to_one => 1.0,
            None => abar[0],
        };
        let variance = ((1.0 - abar_prev) / (1.0 - abar_t)) * (1.0 - abar_t / abar_prev);
        DdimStep { timestep, prev_timestep, abar_t, abar_prev, std_dev: cfg.eta * variance.max(0.0).sqrt() }
    }

    /// From `x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)` and
    /// `x_p = sqrt(abar_p) x0 + sqrt(1 - abar_p - s^2) eps + s z`.
    pub fn coeffs(&self) -> StepCoeffs {
        let (at, ap, s) = (self.abar_t, self.abar_prev, self.std_dev);
        let ca = (ap / at).sqrt();
        let ce = (1.0 - ap - s * s).max(0.0).sqrt() - ap.sqrt() * (1.0 - at).sqrt() / at.sqrt();
        StepCoeffs::from_f64(ca, ce, s)
    }

    /// img2img noising when the run starts at this step: `sqrt(abar_t) z0 + sqrt(1 - abar_t) n`.
    pub fn add_noise(&self) -> NoiseCoeffs {
        NoiseCoeffs::from_f64(self.abar_t.sqrt(), (1.0 - self.abar_t).sqrt())
    }
}

/// All DDIM steps of the full N-step schedule `timesteps` (N = `timesteps.len()`; pass the full
/// list, since the previous timestep depends on N).
pub fn ddim_steps(abar: &[f64], timesteps: &[usize], cfg: &DdimConfig) -> Vec<DdimStep> {
    let n = timesteps.len();
    timesteps.iter().map(|&t| DdimStep::new(t, ddim_prev_timestep(t, abar.len(), n), abar, cfg)).collect()
}

/// Which sampler a plan uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    EulerAncestral,
    Ddim(DdimConfig),
}

/// Everything a denoising loop needs for one step, in kernel form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenoiseStep {
    /// Index of the step in the full N-step schedule (`0..N`); img2img runs start at `t_start`.
    /// Ancestral noise of this step is drawn from stream `Ancestral(index)` (docs/FORMAT.md).
    pub index: usize,
    /// Timestep the model is conditioned on.
    pub timestep: usize,
    /// The model sees `c_in * x` (Euler-a: `1/sqrt(sigma^2+1)`; DDIM: 1).
    pub c_in: f32,
    pub coeffs: StepCoeffs,
    /// How to noise a clean latent to this step's level (used for the first step of img2img).
    pub add_noise: NoiseCoeffs,
}

/// Steps of the full `num_steps` schedule (text-to-image starts at index 0 from pure noise of
/// standard deviation [`init_noise_sigma`]).
pub fn plan(cfg: &ScheduleConfig, sampler: Sampler, num_steps: usize) -> Vec<DenoiseStep> {
    let abar = cfg.alphas_cumprod();
    let ts = cfg.timesteps(num_steps);
    match sampler {
        Sampler::EulerAncestral => euler_a_steps(&abar, &ts)
            .iter()
            .enumerate()
            .map(|(index, s)| DenoiseStep {
                index,
                timestep: s.timestep,
                c_in: s.c_in as f32,
                coeffs: s.coeffs(),
                add_noise: s.add_noise(),
            })
            .collect(),
        Sampler::Ddim(d) => ddim_steps(&abar, &ts, &d)
            .iter()
            .enumerate()
            .map(|(index, s)| DenoiseStep { index, timestep: s.timestep, c_in: 1.0, coeffs: s.coeffs(), add_noise: s.add_noise() })
            .collect(),
    }
}

/// Standard deviation of the pure-noise start of text-to-image sampling (Euler-a: see
/// [`euler_a_init_noise_sigma`]; DDIM: 1).
pub fn init_noise_sigma(cfg: &ScheduleConfig, sampler: Sampler, num_steps: usize) -> f64 {
    match sampler {
        Sampler::EulerAncestral => {
            let abar = cfg.alphas_cumprod();
            euler_a_init_noise_sigma(&euler_a_sigmas(&abar, &cfg.timesteps(num_steps)), cfg.spacing)
        }
        Sampler::Ddim(_) => 1.0,
    }
}

/// An img2img run: noise the clean latent with `add_noise` (= `steps[0].add_noise`), then apply
/// `steps` in order. `None` when `strength` is too small for any step to run.
pub fn img2img_plan(cfg: &ScheduleConfig, sampler: Sampler, num_steps: usize, strength: f64) -> Option<Vec<DenoiseStep>> {
    let start = img2img_start(num_steps, strength);
    let steps = plan(cfg, sampler, num_steps);
    if start >= steps.len() {
        None
    } else {
        Some(steps[start..].to_vec())
    }
}

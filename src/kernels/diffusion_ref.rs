//! CPU reference (and CPU device path) of the three element-wise diffusion kernels: the fused
//! scheduler step, forward noising, and fused latent mixup + noising. Their GPU twins are
//! `shaders/{scheduler_step,add_noise,latent_lerp}.wgsl` and `kernels/*.cu`; the contract (buffer
//! layouts, parameters, noise streams) is in `docs/FORMAT.md`, "Kernels".
//!
//! Noise. Every kernel takes, per latent, a [`NoiseKey`]: the `[key0, key1, stream id, sub]`
//! quad of [`SeedRng::shader_params`]. Element `j` of a latent gets `normal_at(key, j)`, which is
//! exactly `SeedRng::normal_at(j)` of the stream the key came from, so the numbers depend only on
//! (seed, item, stream, j), never on batching or device. Latents are processed in groups of four
//! elements, one Philox block per group, as the GPU threads do.
//!
//! Arithmetic is f32 in a fixed order (`(ca*x + ce*eps) + cz*z` and so on); GPU compilers may fuse
//! multiply-adds, so device results agree with these to a few ulp, and the normals to ~1e-6.

use crate::kernels::coeffs::{NoiseCoeffs, StepCoeffs};
use crate::rng::philox::{box_muller, philox4x32_10};
use crate::rng::SeedRng;

/// `[key0, key1, stream id, sub]`, as returned by [`SeedRng::shader_params`].
pub type NoiseKey = [u32; 4];

/// The key of one (seed, item, stream).
pub fn noise_key(rng: &SeedRng) -> NoiseKey {
    rng.shader_params()
}

/// The four normals of block `b` of the stream `key` (elements `4b .. 4b+4`).
#[inline]
pub fn normals_block(key: NoiseKey, b: u64) -> [f32; 4] {
    let w = philox4x32_10([b as u32, (b >> 32) as u32, key[2], key[3]], [key[0], key[1]]);
    let (c0, s0) = box_muller(w[0], w[1]);
    let (c1, s1) = box_muller(w[2], w[3]);
    [c0, s0, c1, s1]
}

/// Element `i` of the normal stream `key`; equals `SeedRng::normal_at(i)` of that stream.
#[inline]
pub fn normal_at(key: NoiseKey, i: u64) -> f32 {
    normals_block(key, i / 4)[(i % 4) as usize]
}

/// Applies `f(j, noise_j)` to the elements of one latent, group by group; `noise_j` is 0 (and
/// no Philox is run) when `with_noise` is false.
#[inline]
fn for_each_group(len: usize, key: NoiseKey, with_noise: bool, mut f: impl FnMut(usize, f32)) {
    let mut j = 0;
    let mut b = 0u64;
    while j < len {
        let n = if with_noise { normals_block(key, b) } else { [0.0; 4] };
        for (lane, &z) in n.iter().enumerate().take(len - j) {
            f(j + lane, z);
        }
        j += 4;
        b += 1;
    }
}

/// Length of each of the `batch` latents packed in a buffer of `total` elements.
fn latent_len(total: usize, batch: usize) -> usize {
    assert!(batch > 0, "no noise keys");
    assert_eq!(total % batch, 0, "buffer of {total} elements is not {batch} latents");
    total / batch
}

/// One denoising step of one latent: `out_i = (ca*x_i + ce*eps_i) + cz*z_i`, `z_i =
/// normal_at(noise, i)`. No noise is drawn when `cz == 0` (deterministic DDIM, last Euler-a step).
pub fn scheduler_step(x: &[f32], eps: &[f32], coeffs: StepCoeffs, noise: NoiseKey, out: &mut [f32]) {
    scheduler_step_batched(x, eps, coeffs, &[noise], out)
}

/// [`scheduler_step`] over a batch of `keys.len()` latents stored back to back (latent `p` is
/// `x[p*L .. (p+1)*L]`, `L = x.len() / keys.len()`), latent `p` drawing its noise from `keys[p]`.
pub fn scheduler_step_batched(x: &[f32], eps: &[f32], c: StepCoeffs, keys: &[NoiseKey], out: &mut [f32]) {
    assert!(x.len() == eps.len() && x.len() == out.len(), "length mismatch");
    let len = latent_len(x.len(), keys.len());
    for (p, &key) in keys.iter().enumerate() {
        let base = p * len;
        let (x, eps, out) = (&x[base..base + len], &eps[base..base + len], &mut out[base..base + len]);
        if c.cz == 0.0 {
            for j in 0..len {
                out[j] = c.ca * x[j] + c.ce * eps[j];
            }
        } else {
            for_each_group(len, key, true, |j, z| out[j] = c.ca * x[j] + c.ce * eps[j] + c.cz * z);
        }
    }
}

/// Forward noising of one latent: `out_i = a*z0_i + b*n_i`, `n_i = normal_at(noise, i)` (no noise
/// drawn when `b == 0`).
pub fn add_noise(z0: &[f32], a: f32, b: f32, noise: NoiseKey, out: &mut [f32]) {
    add_noise_batched(z0, NoiseCoeffs { a, b }, &[noise], out)
}

/// [`add_noise`] over a batch of `keys.len()` latents stored back to back.
pub fn add_noise_batched(z0: &[f32], c: NoiseCoeffs, keys: &[NoiseKey], out: &mut [f32]) {
    assert_eq!(z0.len(), out.len(), "length mismatch");
    let len = latent_len(z0.len(), keys.len());
    for (p, &key) in keys.iter().enumerate() {
        let base = p * len;
        let (z0, out) = (&z0[base..base + len], &mut out[base..base + len]);
        for_each_group(len, key, c.b != 0.0, |j, n| out[j] = c.a * z0[j] + c.b * n);
    }
}

/// Latent mixup fused with forward noising, over `P = gamma.len()` pairs of latents stored back
/// to back (`L = z1.len() / P` elements each):
/// `out_p = (gamma_p * z1_p + (1 - gamma_p) * z2_p) * a + b * n_p`, `n_p` from `keys[p]`
/// (no noise drawn when `b == 0`).
pub fn latent_lerp(z1: &[f32], z2: &[f32], gamma: &[f32], a: f32, b: f32, keys: &[NoiseKey], out: &mut [f32]) {
    assert!(z1.len() == z2.len() && z1.len() == out.len(), "length mismatch");
    assert_eq!(gamma.len(), keys.len(), "one gamma and one key per pair");
    let len = latent_len(z1.len(), keys.len());
    for (p, &key) in keys.iter().enumerate() {
        let base = p * len;
        let (z1, z2, out) = (&z1[base..base + len], &z2[base..base + len], &mut out[base..base + len]);
        let (g, h) = (gamma[p], 1.0 - gamma[p]);
        for_each_group(len, key, b != 0.0, |j, n| out[j] = (g * z1[j] + h * z2[j]) * a + b * n);
    }
}

/// Threads the GPU kernels launch: one per group of four elements of each latent.
pub fn kernel_threads(latent_len: usize, batch: usize) -> usize {
    batch * latent_len.div_ceil(4)
}

/// Workgroup size of every kernel (`@workgroup_size(256)`, CUDA `blockDim.x = 256`).
pub const WORKGROUP_SIZE: usize = 256;

/// Workgroup grid `(x, y)` for `threads` threads: at most 65535 groups along x (WebGPU's limit),
/// the rest along y. The kernels compute `gid = x_id + y_id * (groups_x * 256)`.
pub fn workgroups(threads: usize) -> (u32, u32) {
    let groups = threads.div_ceil(WORKGROUP_SIZE).max(1);
    let x = groups.min(65_535);
    (x as u32, groups.div_ceil(x) as u32)
}

/// The 32-byte parameter block of `scheduler_step` (WGSL uniform / CUDA struct), as words:
/// `[ca, ce, cz (f32 bits), latent_len, batch, 0, 0, 0]`.
pub fn step_params(c: StepCoeffs, latent_len: u32, batch: u32) -> [u32; 8] {
    [c.ca.to_bits(), c.ce.to_bits(), c.cz.to_bits(), latent_len, batch, 0, 0, 0]
}

/// The 16-byte parameter block of `add_noise`: `[a, b (f32 bits), latent_len, batch]`.
pub fn add_noise_params(c: NoiseCoeffs, latent_len: u32, batch: u32) -> [u32; 4] {
    [c.a.to_bits(), c.b.to_bits(), latent_len, batch]
}

/// The 16-byte parameter block of `latent_lerp`: `[a, b (f32 bits), latent_len, pairs]`.
pub fn lerp_params(a: f32, b: f32, latent_len: u32, pairs: u32) -> [u32; 4] {
    [a.to_bits(), b.to_bits(), latent_len, pairs]
}

//! Fused group-norm (instance norm included) and batch-norm kernels on plain f32 slices (NCHW,
//! contiguous).
//!
//! burn's norm layers are compositions of ~10 elementwise and reduction ops, each a pass over the
//! activations with its own autodiff node; on the CPU that made normalisation cost more than the
//! convolutions (see docs/results/cpu_speed.md). These do one statistics pass and one output pass
//! per group, forward and backward, parallel over (image, group) slices (group and instance norm)
//! or channels (batch).

use rayon::prelude::*;

use super::activation_cpu;
use super::simd::with_simd;

/// Statistics of one normalised group: mean and reciprocal standard deviation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub mean: f32,
    pub rstd: f32,
}

with_simd!(
    /// Sums of `a` and of `a * b` over a slice, in 16 independent f32 lanes (so the compiler
    /// vectorises them) combined in f64. Per-plane sums stay short enough for f32 lanes.
    pub fn sum_and_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
        const L: usize = 16;
        let (mut s, mut d) = ([0f32; L], [0f32; L]);
        let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..L {
                s[i] += x[i];
                d[i] += x[i] * y[i];
            }
        }
        let mut sum: f64 = s.iter().map(|&v| v as f64).sum();
        let mut dot: f64 = d.iter().map(|&v| v as f64).sum();
        for (&x, &y) in ra.iter().zip(rb) {
            sum += x as f64;
            dot += (x * y) as f64;
        }
        (sum, dot)
    }
);

with_simd!(
    /// `y = (x - k) * scale + shift`, then SiLU if `silu`: one channel of a group norm's output
    /// (`k` is 0 unless the group is centred first; `x - 0` is `x`, bit for bit).
    fn normalise_plane(y: &mut [f32], x: &[f32], k: f32, scale: f32, shift: f32, silu: bool) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x - k) * scale + shift;
        }
        if silu {
            activation_cpu::silu_slice(y);
        }
    }
);

/// Mean and reciprocal std of the concatenation of `planes`.
fn stats<'a>(planes: impl Iterator<Item = &'a [f32]>, eps: f64) -> (f64, f64, f32, f32) {
    let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0usize);
    for p in planes {
        let (s, q) = sum_and_dot(p, p);
        sum += s;
        sq += q;
        n += p.len();
    }
    let mean = sum / n.max(1) as f64;
    let var = (sq / n.max(1) as f64 - mean * mean).max(0.0);
    (mean, var, mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// Elements per block of the sums below: each of the 16 f32 lanes adds up at most 64 values,
/// the blocks are combined in f64, so long groups (many channels, large planes) stay accurate.
const BLOCK: usize = 1024;

/// [`sum_and_dot`] over blocks of [`BLOCK`] elements, combined in f64.
fn block_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.chunks(BLOCK).zip(b.chunks(BLOCK)).fold((0.0, 0.0), |(s, d), (a, b)| {
        let (bs, bd) = sum_and_dot(a, b);
        (s + bs, d + bd)
    })
}

/// `(sum(a'), sum(a' * (b - k)))` with `a' = a - k` if `CENTRE_A`, else `a' = a`, in blocks like
/// [`block_sums`]. With `a == b`, `CENTRE_A` and `k` the mean, this avoids the cancellation of
/// `E[x^2] - E[x]^2` when the mean is large compared with the spread.
fn shifted_sums<const CENTRE_A: bool>(a: &[f32], b: &[f32], k: f32) -> (f64, f64) {
    let ka = if CENTRE_A { k } else { 0.0 };
    const L: usize = 16;
    let (mut sum, mut dot) = (0f64, 0f64);
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let (mut s, mut d) = ([0f32; L], [0f32; L]);
        let (ca, cb) = (ab.chunks_exact(L), bb.chunks_exact(L));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..L {
                let x = x[i] - ka;
                s[i] += x;
                d[i] += x * (y[i] - k);
            }
        }
        for (&x, &y) in ra.iter().zip(rb) {
            s[0] += x - ka;
            d[0] += (x - ka) * (y - k);
        }
        sum += s.iter().map(|&v| v as f64).sum::<f64>();
        dot += d.iter().map(|&v| v as f64).sum::<f64>();
    }
    (sum, dot)
}

/// Whether the one-pass sums lose too much to cancellation: the mean is more than a few standard
/// deviations from zero (rare for activations; then a centred pass over the cache-hot group).
fn off_centre(mean: f64, var: f64) -> bool {
    mean * mean > 16.0 * var
}

/// Mean and reciprocal standard deviation (biased variance) of one group.
fn group_stats(x: &[f32], eps: f64) -> Stats {
    let n = x.len().max(1) as f64;
    let (s, q) = block_sums(x, x);
    let mut mean = s / n;
    let mut var = (q / n - mean * mean).max(0.0);
    if off_centre(mean, var) {
        let k = mean as f32;
        let (d, q) = shifted_sums::<true>(x, x, k);
        mean = k as f64 + d / n;
        var = (q / n - (d / n) * (d / n)).max(0.0);
    }
    Stats { mean: mean as f32, rstd: (1.0 / (var + eps).sqrt()) as f32 }
}

/// Group norm forward on `x [N, C, H, W]` (contiguous, `plane = H * W`): statistics per image and
/// group of `channels / groups` consecutive channels (one contiguous slice), then
/// `y = gamma[c] * (x - mean[n,g]) * rstd[n,g] + beta[c]`. Returns per-(n, g) statistics for the
/// backward pass. Instance norm is the case `groups == channels`.
pub fn group_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    channels: usize,
    groups: usize,
    plane: usize,
    eps: f64,
    y: &mut [f32],
) -> Vec<Stats> {
    group_norm_forward_then::<false>(x, gamma, beta, channels, groups, plane, eps, y)
}

/// [`group_norm_forward`] followed by SiLU in the same pass (the pre-activation of every ResNet
/// block and output head of the UNet and VAE): the normalised plane is still in cache.
pub fn group_norm_silu_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    channels: usize,
    groups: usize,
    plane: usize,
    eps: f64,
    y: &mut [f32],
) -> Vec<Stats> {
    group_norm_forward_then::<true>(x, gamma, beta, channels, groups, plane, eps, y)
}

fn group_norm_forward_then<const SILU: bool>(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    channels: usize,
    groups: usize,
    plane: usize,
    eps: f64,
    y: &mut [f32],
) -> Vec<Stats> {
    assert!(groups > 0 && channels.is_multiple_of(groups), "{channels} channels in {groups} groups");
    let per_group = channels / groups;
    let len = per_group * plane;
    if len == 0 {
        return Vec::new();
    }
    let mut out = vec![Stats::default(); x.len() / len];
    y.par_chunks_mut(len).zip(x.par_chunks(len)).zip(out.par_iter_mut()).enumerate().for_each(|(i, ((y, x), st))| {
        let s = group_stats(x, eps);
        let c0 = (i % groups) * per_group;
        // `x * scale + shift` folds the mean into the shift, unless that would cancel.
        let centre = off_centre(s.mean as f64, 1.0 / (s.rstd as f64 * s.rstd as f64));
        let k = if centre { s.mean } else { 0.0 };
        for (j, (y, x)) in y.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
            let (g, b) = (gamma[c0 + j], beta[c0 + j]);
            let (scale, shift) = (g * s.rstd, b - g * s.rstd * (s.mean - k));
            normalise_plane(y, x, k, scale, shift, SILU);
        }
        *st = s;
    });
    out
}

/// Group norm backward (see [`group_norm_forward`]). Returns `(dx, dgamma, dbeta)`.
pub fn group_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &[Stats],
    dy: &[f32],
    channels: usize,
    groups: usize,
    plane: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(groups > 0 && channels.is_multiple_of(groups), "{channels} channels in {groups} groups");
    let per_group = channels / groups;
    let len = per_group * plane;
    let mut dx = vec![0f32; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0f32; channels], vec![0f32; channels]);
    if len == 0 {
        return (dx, dgamma, dbeta);
    }
    // Per-(n, c) sums of dy and dy * xhat, reduced over the batch afterwards for dgamma/dbeta.
    let mut sums = vec![(0f32, 0f32); x.len() / plane];
    dx.par_chunks_mut(len)
        .zip(x.par_chunks(len).zip(dy.par_chunks(len)))
        .zip(sums.par_chunks_mut(per_group).zip(stats.par_iter()))
        .enumerate()
        .for_each(|(i, ((dx, (x, dy)), (sums, st)))| {
            let c0 = (i % groups) * per_group;
            // With g = gamma * dy (the gradient of xhat), over the group:
            // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
            let (mut sg, mut sgx) = (0f64, 0f64);
            for (j, ((x, dy), sum)) in x.chunks(plane).zip(dy.chunks(plane)).zip(sums.iter_mut()).enumerate() {
                // sum(dy * xhat) = rstd * sum(dy * (x - mean))
                let (sdy, sdx) = block_sums(dy, x);
                let mut sdyx = sdx - st.mean as f64 * sdy;
                if off_centre(st.mean as f64, 1.0 / (st.rstd as f64 * st.rstd as f64)) {
                    sdyx = shifted_sums::<false>(dy, x, st.mean).1;
                }
                let sdyx = sdyx * st.rstd as f64;
                let g = gamma[c0 + j] as f64;
                sg += g * sdy;
                sgx += g * sdyx;
                *sum = (sdy as f32, sdyx as f32);
            }
            // dx = a[c] * dy - b - (x - mean) * k
            let (m, rstd) = (len as f64, st.rstd as f64);
            let b = (rstd * sg / m) as f32;
            let k = (rstd * rstd * sgx / m) as f32;
            for (j, (dx, (x, dy))) in dx.chunks_mut(plane).zip(x.chunks(plane).zip(dy.chunks(plane))).enumerate() {
                let a = gamma[c0 + j] * st.rstd;
                for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = a * g - b - (x - st.mean) * k;
                }
            }
        });
    for (i, &(sdy, sdyx)) in sums.iter().enumerate() {
        dbeta[i % channels] += sdy;
        dgamma[i % channels] += sdyx;
    }
    (dx, dgamma, dbeta)
}

/// Instance norm forward: `y = gamma[c] * (x - mean[n,c]) * rstd[n,c] + beta[c]`.
/// Returns per-(n, c) statistics for the backward pass.
pub fn instance_norm_forward(x: &[f32], gamma: &[f32], beta: &[f32], channels: usize, plane: usize, eps: f64, y: &mut [f32]) -> Vec<Stats> {
    group_norm_forward(x, gamma, beta, channels, channels, plane, eps, y)
}

/// Instance norm backward. Returns `(dx, dgamma, dbeta)`.
pub fn instance_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &[Stats],
    dy: &[f32],
    channels: usize,
    plane: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    group_norm_backward(x, gamma, stats, dy, channels, channels, plane)
}

/// The `plane`-sized slices of channel `c` in an NCHW buffer of `batch` images.
fn channel_planes(x: &[f32], batch: usize, channels: usize, plane: usize, c: usize) -> impl Iterator<Item = &[f32]> {
    (0..batch).map(move |n| &x[(n * channels + c) * plane..(n * channels + c + 1) * plane])
}

/// Batch norm forward with batch statistics (training mode). Returns per-channel statistics and
/// the biased variance (for the running estimate).
pub fn batch_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    batch: usize,
    channels: usize,
    plane: usize,
    eps: f64,
    y: &mut [f32],
) -> (Vec<Stats>, Vec<f32>) {
    let per_channel: Vec<(Stats, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (_, var, mean, rstd) = stats(channel_planes(x, batch, channels, plane, c), eps);
            (Stats { mean, rstd }, var as f32)
        })
        .collect();
    y.par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each(|(i, (y, x))| {
        let c = i % channels;
        let st = per_channel[c].0;
        let (scale, shift) = (gamma[c] * st.rstd, beta[c] - gamma[c] * st.rstd * st.mean);
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * scale + shift;
        }
    });
    per_channel.into_iter().unzip()
}

/// Batch norm backward (batch statistics). Returns `(dx, dgamma, dbeta)`.
pub fn batch_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &[Stats],
    dy: &[f32],
    batch: usize,
    channels: usize,
    plane: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let sums: Vec<(f32, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let st = stats[c];
            let (mut sdy, mut sdx) = (0f64, 0f64);
            for (xp, gp) in channel_planes(x, batch, channels, plane, c).zip(channel_planes(dy, batch, channels, plane, c)) {
                let (s, d) = sum_and_dot(gp, xp);
                sdy += s;
                sdx += d;
            }
            (sdy as f32, (st.rstd as f64 * (sdx - st.mean as f64 * sdy)) as f32)
        })
        .collect();
    let m = (batch * plane) as f32;
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(plane).zip(x.par_chunks(plane).zip(dy.par_chunks(plane))).enumerate().for_each(|(i, (dx, (x, dy)))| {
        let c = i % channels;
        let st = stats[c];
        let (sdy, sdyx) = sums[c];
        let k = gamma[c] * st.rstd / m;
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            let xhat = (x - st.mean) * st.rstd;
            *dx = k * (m * g - sdy - xhat * sdyx);
        }
    });
    let dbeta = sums.iter().map(|s| s.0).collect();
    let dgamma = sums.iter().map(|s| s.1).collect();
    (dx, dgamma, dbeta)
}

/// `y = x * scale[c] + shift[c]` (batch norm with running statistics folded in).
pub fn channel_affine(x: &[f32], scale: &[f32], shift: &[f32], channels: usize, plane: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each(|(i, (y, x))| {
        let (a, b) = (scale[i % channels], shift[i % channels]);
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * a + b;
        }
    });
    y
}

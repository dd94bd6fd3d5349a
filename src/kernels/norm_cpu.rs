//! Fused instance-norm and batch-norm kernels on plain f32 slices (NCHW, contiguous).
//!
//! burn's norm layers are compositions of ~10 elementwise and reduction ops, each a pass over the
//! activations with its own autodiff node; on the CPU that made normalisation cost more than the
//! convolutions (see docs/results/cpu_speed.md). These do one statistics pass and one output pass
//! per plane, forward and backward, parallel over planes (instance) or channels (batch).

use rayon::prelude::*;

/// Statistics of one normalised group: mean and reciprocal standard deviation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub mean: f32,
    pub rstd: f32,
}

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

/// Instance norm forward: `y = gamma[c] * (x - mean[n,c]) * rstd[n,c] + beta[c]`.
/// Returns per-(n, c) statistics for the backward pass.
pub fn instance_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    channels: usize,
    plane: usize,
    eps: f64,
    y: &mut [f32],
) -> Vec<Stats> {
    let mut out = vec![Stats::default(); x.len() / plane];
    y.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .zip(out.par_iter_mut())
        .enumerate()
        .for_each(|(i, ((y, x), st))| {
            let (_, _, mean, rstd) = stats(std::iter::once(x), eps);
            let c = i % channels;
            let (scale, shift) = (gamma[c] * rstd, beta[c] - gamma[c] * rstd * mean);
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * scale + shift;
            }
            *st = Stats { mean, rstd };
        });
    out
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
    let mut dx = vec![0f32; x.len()];
    // Per-plane sums of dy and dy * xhat, reduced over the batch afterwards for dgamma/dbeta.
    let mut sums = vec![(0f32, 0f32); stats.len()];
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane).zip(dy.par_chunks(plane)))
        .zip(sums.par_iter_mut().zip(stats.par_iter()))
        .enumerate()
        .for_each(|(i, ((dx, (x, dy)), (sum, st)))| {
            // sum(dy * xhat) = rstd * (sum(dy * x) - mean * sum(dy))
            let (sdy, sdx) = sum_and_dot(dy, x);
            let sdyx = st.rstd as f64 * (sdx - st.mean as f64 * sdy);
            let c = i % channels;
            let m = plane as f32;
            let k = gamma[c] * st.rstd / m;
            let (sdy, sdyx) = (sdy as f32, sdyx as f32);
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                let xhat = (x - st.mean) * st.rstd;
                *dx = k * (m * g - sdy - xhat * sdyx);
            }
            *sum = (sdy, sdyx);
        });
    let mut dgamma = vec![0f32; channels];
    let mut dbeta = vec![0f32; channels];
    for (i, &(sdy, sdyx)) in sums.iter().enumerate() {
        dbeta[i % channels] += sdy;
        dgamma[i % channels] += sdyx;
    }
    (dx, dgamma, dbeta)
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
    dx.par_chunks_mut(plane).zip(x.par_chunks(plane).zip(dy.par_chunks(plane))).enumerate().for_each(
        |(i, (dx, (x, dy)))| {
            let c = i % channels;
            let st = stats[c];
            let (sdy, sdyx) = sums[c];
            let k = gamma[c] * st.rstd / m;
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                let xhat = (x - st.mean) * st.rstd;
                *dx = k * (m * g - sdy - xhat * sdyx);
            }
        },
    );
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

//! 2-D convolution on plain f32 slices (NCHW, contiguous, groups = 1): im2col + GEMM (the `gemm`
//! crate) for the forward pass and both gradients, parallel over the images of the batch.
//!
//! burn's CPU backend computes the weight gradient as a convolution of the transposed input with
//! the transposed output gradient, which for a first layer (1 input channel, 28x28 kernel-sized
//! "filters") runs far below GEMM speed; here every pass is one GEMM per image on an im2col
//! buffer of `[C_in * kh * kw, H_out * W_out]`.

use rayon::prelude::*;

use super::matmul_cpu::{self, with_scratch, Parallelism, View};

/// Shape and options of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl ConvGeometry {
    pub fn out_size(&self) -> [usize; 2] {
        let o = |i: usize, k: usize, s: usize, p: usize| (i + 2 * p - k) / s + 1;
        [o(self.height, self.kernel[0], self.stride[0], self.padding[0]), o(self.width, self.kernel[1], self.stride[1], self.padding[1])]
    }
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }
    fn out_plane(&self) -> usize {
        let [ho, wo] = self.out_size();
        ho * wo
    }
    fn in_image(&self) -> usize {
        self.in_channels * self.height * self.width
    }
    /// 1x1, stride 1, no padding: the input already is the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }
}

/// Row-major `[m, k] x [k, n]` into a contiguous `dst [m, n]`: `dst = (accumulate ? dst : 0) + a * b`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    a: &[f32],
    a_strides: [usize; 2],
    b: &[f32],
    b_strides: [usize; 2],
    accumulate: bool,
    parallelism: Parallelism,
) {
    let (a, b) = (View { data: a, strides: a_strides }, View { data: b, strides: b_strides });
    matmul_cpu::matmul(m, n, k, dst, [n, 1], a, b, 1.0, accumulate, parallelism);
}

/// Output columns `ox` whose input column `ox*stride + kx - pad` lies inside `[0, width)`.
fn valid_columns(g: &ConvGeometry, kx: usize, wo: usize) -> std::ops::Range<usize> {
    let (s, p) = (g.stride[1], g.padding[1]);
    let first = p.saturating_sub(kx).div_ceil(s);
    // Largest ox with ox*s + kx - p <= width - 1.
    let end = if g.width + p < kx + 1 { 0 } else { ((g.width + p - kx - 1) / s + 1).min(wo) };
    first.min(end)..end
}

/// `cols[(c, ky, kx) * ld + (oy, ox)] = x[c, oy*s + ky - p, ox*s + kx - p]` (zero outside).
/// `ld` is the row stride: `H_out * W_out` for one image, a multiple of it when several images
/// share one GEMM (their columns side by side).
fn im2col(x: &[f32], g: &ConvGeometry, cols: &mut [f32], ld: usize) {
    let [ho, wo] = g.out_size();
    if g.stride == [1, 1] && [ho, wo] == [g.height, g.width] {
        return im2col_same(x, g, cols, ld);
    }
    let [kh, kw] = g.kernel;
    for c in 0..g.in_channels {
        let plane = &x[c * g.height * g.width..(c + 1) * g.height * g.width];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut cols[((c * kh + ky) * kw + kx) * ld..][..ho * wo];
                let valid = valid_columns(g, kx, wo);
                for oy in 0..ho {
                    let out = &mut row[oy * wo..(oy + 1) * wo];
                    let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                    if iy < 0 || iy >= g.height as isize || valid.is_empty() {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.width..][..g.width];
                    out[..valid.start].fill(0.0);
                    out[valid.end..].fill(0.0);
                    let ix0 = valid.start * g.stride[1] + kx - g.padding[1];
                    if g.stride[1] == 1 {
                        out[valid.clone()].copy_from_slice(&src[ix0..ix0 + valid.len()]);
                    } else {
                        for (o, ix) in out[valid.clone()].iter_mut().zip((ix0..).step_by(g.stride[1])) {
                            *o = src[ix];
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] of a stride-1 convolution whose output has the input's size (3x3 with padding 1,
/// the UNet's and VAE's): a tap's row is the whole plane shifted by a constant offset, so it is
/// one contiguous copy plus zeroed border rows and columns, instead of one short copy per output
/// row (small planes made those copies, and their `memmove`/`memset` calls, a fifth of the
/// expansion's time).
fn im2col_same(x: &[f32], g: &ConvGeometry, cols: &mut [f32], ld: usize) {
    let (h, w) = (g.height, g.width);
    let plane_len = h * w;
    let [kh, kw] = g.kernel;
    let (py, px) = (g.padding[0] as isize, g.padding[1] as isize);
    for c in 0..g.in_channels {
        let plane = &x[c * plane_len..(c + 1) * plane_len];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut cols[((c * kh + ky) * kw + kx) * ld..][..plane_len];
                let (dy, dx) = (ky as isize - py, kx as isize - px);
                // Output rows whose input row oy + dy exists.
                let oy0 = (-dy).clamp(0, h as isize) as usize;
                let oy1 = (h as isize - dy).clamp(0, h as isize) as usize;
                let valid = valid_columns(g, kx, w);
                if oy0 >= oy1 || valid.is_empty() {
                    row.fill(0.0);
                    continue;
                }
                row[..oy0 * w].fill(0.0);
                row[oy1 * w..].fill(0.0);
                // dst index d reads src index d + shift; the few d whose source falls before or
                // after the plane are border columns, zeroed below with the others.
                let shift = dy * w as isize + dx;
                let first = ((oy0 * w) as isize).max(-shift) as usize;
                let last = ((oy1 * w) as isize).min(plane_len as isize - shift) as usize;
                if first < last {
                    let from = (first as isize + shift) as usize;
                    row[first..last].copy_from_slice(&plane[from..from + (last - first)]);
                }
                // Column by column (a strided store, not a `memset` call per row).
                for j in (0..valid.start).chain(valid.end..w) {
                    for oy in oy0..oy1 {
                        row[oy * w + j] = 0.0;
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: scatter-adds `cols` (row stride `ld`) back into the image `dx`.
fn col2im_add(cols: &[f32], g: &ConvGeometry, dx: &mut [f32], ld: usize) {
    let [ho, wo] = g.out_size();
    let [kh, kw] = g.kernel;
    for c in 0..g.in_channels {
        let plane = &mut dx[c * g.height * g.width..(c + 1) * g.height * g.width];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &cols[((c * kh + ky) * kw + kx) * ld..][..ho * wo];
                let valid = valid_columns(g, kx, wo);
                if valid.is_empty() {
                    continue;
                }
                let ix0 = valid.start * g.stride[1] + kx - g.padding[1];
                for oy in 0..ho {
                    let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                    if iy < 0 || iy >= g.height as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.width..][..g.width];
                    let src = &row[oy * wo + valid.start..oy * wo + valid.end];
                    if g.stride[1] == 1 {
                        for (d, &v) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (&v, ix) in src.iter().zip((ix0..).step_by(g.stride[1])) {
                            dst[ix] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Images per GEMM: small output planes (ResNet's 8x8 and 4x4 stages) make thin GEMMs that run
/// far below peak, so several images share one GEMM of at least ~256 columns, while keeping at
/// least one group per thread.
fn group_size(g: &ConvGeometry) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let wanted = 256usize.div_ceil(g.out_plane().max(1));
    wanted.min(g.batch.div_ceil(threads)).max(1)
}

/// Inner GEMMs run single-threaded when the groups alone fill the thread pool.
fn inner_parallelism(groups: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if groups >= threads {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// `[G images][rows][plane]` -> `[rows][G * plane]` (or back with `to_images`).
fn regroup(src: &[f32], dst: &mut [f32], images: usize, rows: usize, plane: usize, to_images: bool) {
    for j in 0..images {
        for r in 0..rows {
            let (a, b) = ((j * rows + r) * plane, r * images * plane + j * plane);
            if to_images {
                dst[a..a + plane].copy_from_slice(&src[b..b + plane]);
            } else {
                dst[b..b + plane].copy_from_slice(&src[a..a + plane]);
            }
        }
    }
}

/// Floats of scratch one group of `gs` images needs: its im2col columns (none for a pointwise
/// convolution of one image, whose input already is them), then a `[C_out, gs * plane]` block
/// when several images share the GEMM.
fn scratch_len(g: &ConvGeometry, gs: usize) -> (usize, usize) {
    let (plane, pointwise) = (g.out_plane(), g.is_pointwise() && gs == 1);
    let cols = if pointwise { 0 } else { g.patch_len() * plane * gs };
    (cols, if gs > 1 { g.out_channels * plane * gs } else { 0 })
}

/// The im2col matrix `[K, n * plane]` of a group of `n` images `x` (their columns side by side),
/// written into `cols`; a pointwise convolution's input already is it.
fn group_columns<'a>(x: &'a [f32], g: &ConvGeometry, cols: &'a mut [f32], pointwise: bool) -> &'a [f32] {
    if pointwise {
        return x;
    }
    let plane = g.out_plane();
    let ld = x.len() / g.in_image() * plane;
    for (j, xi) in x.chunks(g.in_image()).enumerate() {
        im2col(xi, g, &mut cols[j * plane..], ld);
    }
    &cols[..g.patch_len() * ld]
}

/// `y[n] = W [C_out, K] x im2col(x[n]) + bias`, returned as `[N, C_out, H_out, W_out]`.
pub fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let (k, plane, co) = (g.patch_len(), g.out_plane(), g.out_channels);
    let mut y = vec![0f32; g.batch * co * plane];
    let gs = group_size(g);
    let par = inner_parallelism(g.batch.div_ceil(gs));
    let pointwise = g.is_pointwise() && gs == 1;
    let (cols_len, tmp_len) = scratch_len(g, gs);
    y.par_chunks_mut(gs * co * plane).zip(x.par_chunks(gs * g.in_image())).for_each(|(y, x)| {
        with_scratch(cols_len + tmp_len, |scratch| {
            let (cols, tmp) = scratch.split_at_mut(cols_len);
            let n = x.len() / g.in_image();
            let ld = n * plane;
            let cols = group_columns(x, g, cols, pointwise);
            if gs == 1 {
                if let Some(bias) = bias {
                    for (row, &b) in y.chunks_mut(plane).zip(bias) {
                        row.fill(b);
                    }
                }
                matmul(co, plane, k, y, weight, [k, 1], cols, [plane, 1], bias.is_some(), par);
            } else {
                matmul(co, ld, k, tmp, weight, [k, 1], cols, [ld, 1], false, par);
                regroup(tmp, y, n, co, plane, true);
                if let Some(bias) = bias {
                    for (row, &b) in y.chunks_mut(plane).zip(bias.iter().cycle()) {
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
        })
    });
    y
}

/// Input gradient: `dx[n] = col2im(W^T [K, C_out] x dy[n])`.
pub fn input_grad(dy: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (k, plane, co) = (g.patch_len(), g.out_plane(), g.out_channels);
    let mut dx = vec![0f32; g.batch * g.in_image()];
    let gs = group_size(g);
    let par = inner_parallelism(g.batch.div_ceil(gs));
    let pointwise = g.is_pointwise() && gs == 1;
    let (cols_len, tmp_len) = scratch_len(g, gs);
    dx.par_chunks_mut(gs * g.in_image()).zip(dy.par_chunks(gs * co * plane)).for_each(|(dx, dy)| {
        let n = dy.len() / (co * plane);
        let ld = n * plane;
        if pointwise {
            matmul(k, plane, co, dx, weight, [1, k], dy, [plane, 1], false, par);
            return;
        }
        with_scratch(cols_len + tmp_len, |scratch| {
            let (cols, tmp) = scratch.split_at_mut(cols_len);
            let dy: &[f32] = if gs > 1 {
                regroup(dy, tmp, n, co, plane, false);
                &tmp[..co * ld]
            } else {
                dy
            };
            matmul(k, ld, co, cols, weight, [1, k], dy, [ld, 1], false, par);
            for (j, dxi) in dx.chunks_mut(g.in_image()).enumerate() {
                col2im_add(&cols[j * plane..], g, dxi, ld);
            }
        })
    });
    dx
}

/// Weight and bias gradients: `dW = sum_n dy[n] [C_out, P] x im2col(x[n])^T [P, K]`.
///
/// The groups are summed in a fixed order (one contiguous block of groups per thread, then the
/// blocks in order), so the gradient does not depend on how rayon scheduled the work: a student
/// trains to the same weights whatever else ran in the process.
pub fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> (Vec<f32>, Vec<f32>) {
    let (k, plane, co) = (g.patch_len(), g.out_plane(), g.out_channels);
    let gs = group_size(g);
    let groups = g.batch.div_ceil(gs);
    let par = inner_parallelism(groups);
    let pointwise = g.is_pointwise() && gs == 1;
    let (cols_len, tmp_len) = scratch_len(g, gs);
    let per_block = groups.div_ceil(rayon::current_num_threads().max(1));
    let accumulate_group = |dw: &mut [f32], db: &mut [f32], x: &[f32], dy: &[f32]| {
        with_scratch(cols_len + tmp_len, |scratch| {
            let (cols, tmp) = scratch.split_at_mut(cols_len);
            let n = x.len() / g.in_image();
            let ld = n * plane;
            let cols_ref = group_columns(x, g, cols, pointwise);
            let dy_ref: &[f32] = if gs > 1 {
                regroup(dy, tmp, n, co, plane, false);
                &tmp[..co * ld]
            } else {
                dy
            };
            matmul(co, k, ld, dw, dy_ref, [ld, 1], cols_ref, [1, ld], true, par);
            for (b, row) in db.iter_mut().zip(dy_ref.chunks(ld)) {
                *b += crate::kernels::norm_cpu::sum_and_dot(row, row).0 as f32;
            }
        })
    };
    let blocks: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(per_block * gs * g.in_image())
        .zip(dy.par_chunks(per_block * gs * co * plane))
        .map(|(x, dy)| {
            let (mut dw, mut db) = (vec![0f32; co * k], vec![0f32; co]);
            for (x, dy) in x.chunks(gs * g.in_image()).zip(dy.chunks(gs * co * plane)) {
                accumulate_group(&mut dw, &mut db, x, dy);
            }
            (dw, db)
        })
        .collect();
    let mut blocks = blocks.into_iter();
    let (mut dw, mut db) = blocks.next().unwrap_or_else(|| (vec![0f32; co * k], vec![0f32; co]));
    for (bw, bb) in blocks {
        dw.iter_mut().zip(bw).for_each(|(a, c)| *a += c);
        db.iter_mut().zip(bb).for_each(|(a, c)| *a += c);
    }
    (dw, db)
}

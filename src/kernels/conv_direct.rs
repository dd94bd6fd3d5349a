//! Direct convolution (forward) for small channel counts, without im2col or GEMM packing.
//!
//! The diffusion prior's convolutions have 4 to 128 channels on 7x7 to 28x28 planes. As im2col +
//! GEMM they spend about as long copying (im2col's shifted copies, the GEMM's packing of both
//! operands, regrouping images that share a GEMM) as multiplying (docs/results/expansion_speed.md).
//! Here each image is copied once into a zero-padded channels-last buffer, the weights once per
//! call into blocks of [`LANES`] output channels, and a register tile of 6 to 8 output pixels x
//! [`LANES`] channels accumulates over the kernel taps and input channels straight from them.
//!
//! Each output is one chain of fused multiply-adds over (ky, kx, c_in) in that order, so the AVX2
//! and AVX-512 builds give the same bits. The baseline x86-64 build has no fused multiply-add and
//! keeps im2col + GEMM ([`applies`]).

use rayon::prelude::*;

use super::conv_cpu::ConvGeometry;
use super::matmul_cpu::with_scratch;
use super::simd::{self, Tier};

/// Output channels per weight block: one AVX-512 register (two AVX2 passes of 8).
const LANES: usize = 16;
/// Output pixels per register tile, chosen per convolution ([`tile_width`]): six to eight
/// accumulator registers hide the fused multiply-add's latency, each loaded weight vector serves
/// that many pixels, and 7 or 8 divide the prior's 7/14/28 and 32/64/256-wide planes, where a
/// fixed 6 would compute up to 5 columns per row that are thrown away.
const TILE_WIDTHS: [usize; 3] = [8, 7, 6];
/// Above this many input or output channels im2col + GEMM wins: the GEMM's larger register tile
/// reuses each loaded value more, and the copies are small next to the multiplies.
const MAX_CHANNELS: usize = 128;
/// Output pixels per call of the row kernel, at most (a multiple of every tile width).
const CHUNK: usize = 8 * 7 * 6;

/// The tile width that computes the fewest columns past `wo` (the widest among equals).
fn tile_width(wo: usize) -> usize {
    TILE_WIDTHS.into_iter().min_by_key(|&r| wo.div_ceil(r) * r - wo).expect("tile widths")
}

/// Whether [`forward`] takes this convolution on this thread's SIMD tier.
pub fn applies(g: &ConvGeometry) -> bool {
    let pointwise = g.kernel == [1, 1] && g.padding == [0, 0];
    !pointwise && g.in_channels <= MAX_CHANNELS && g.out_channels <= MAX_CHANNELS && simd::current() >= Tier::Avx2
}

/// Where one output row reads and writes: the channels-last padded input, its geometry, the row.
#[derive(Clone, Copy)]
struct RowTask {
    cin: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    /// Padded input width (pixels).
    padded_width: usize,
    /// Output pixels per register tile (one of [`TILE_WIDTHS`]).
    tile: usize,
    oy: usize,
}

/// `y [N, C_out, H_out, W_out] = conv(x, weight) + bias`, as `conv_cpu::forward`.
pub fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let plan = Plan::new(weight, bias, g);
    let (in_image, out_image) = (g.in_channels * g.height * g.width, g.out_channels * plan.plane());
    let mut y = vec![0f32; g.batch * out_image];
    // Images in parallel; with fewer images than threads, each image's channel blocks or rows.
    if g.batch >= rayon::current_num_threads() {
        y.par_chunks_mut(out_image).zip(x.par_chunks(in_image)).for_each(|(yi, xi)| plan.image(xi, yi, false));
    } else {
        y.chunks_mut(out_image).zip(x.chunks(in_image)).for_each(|(yi, xi)| plan.image(xi, yi, true));
    }
    y
}

/// What every row of one convolution shares: packed weights and biases, the tile width, the
/// padded input's size.
struct Plan<'a> {
    g: &'a ConvGeometry,
    packed: Vec<f32>,
    /// Per block of [`LANES`], missing channels zero.
    biases: Vec<f32>,
    tile: usize,
    /// Output columns computed per row: `wo` rounded up to whole tiles. The padded input is wide
    /// enough for them; the columns past `wo` are dropped.
    tiled: usize,
    padded_width: usize,
}

impl<'a> Plan<'a> {
    fn new(weight: &[f32], bias: Option<&[f32]>, g: &'a ConvGeometry) -> Self {
        let co = g.out_channels;
        let mut biases = vec![0f32; co.div_ceil(LANES) * LANES];
        if let Some(b) = bias {
            biases[..co].copy_from_slice(b);
        }
        let wo = g.out_size()[1];
        let tile = tile_width(wo);
        let tiled = wo.div_ceil(tile) * tile;
        let padded_width = (g.width + 2 * g.padding[1]).max((tiled - 1) * g.stride[1] + g.kernel[1]);
        Plan { g, packed: pack_weights(weight, g), biases, tile, tiled, padded_width }
    }

    fn plane(&self) -> usize {
        let [ho, wo] = self.g.out_size();
        ho * wo
    }

    /// One image `xi [C_in, H, W]` into `yi [C_out, H_out, W_out]`; with `parallel`, its channel
    /// blocks (or, when they are fewer than the threads, its rows) on the thread pool.
    fn image(&self, xi: &[f32], yi: &mut [f32], parallel: bool) {
        let g = self.g;
        let padded_len = (g.height + 2 * g.padding[0]) * self.padded_width * g.in_channels;
        with_scratch(padded_len, |xp| {
            pack_input(xi, g, self.padded_width, xp);
            let xp = &*xp;
            let plane = self.plane();
            let block = |b: usize, yb: &mut [f32]| {
                let mut tiles = self.tile_buffer();
                for oy in 0..g.out_size()[0] {
                    self.row(xp, b, oy, &mut yb[oy * g.out_size()[1]..], plane, &mut tiles);
                }
            };
            let blocks = g.out_channels.div_ceil(LANES);
            if !parallel {
                yi.chunks_mut(LANES * plane).enumerate().for_each(|(b, yb)| block(b, yb));
            } else if blocks >= rayon::current_num_threads() {
                yi.par_chunks_mut(LANES * plane).enumerate().for_each(|(b, yb)| block(b, yb));
            } else {
                self.rows_in_parallel(xp, yi);
            }
        })
    }

    /// Every (channel block, row) of one packed image as its own task, staged `[block][row][lane]
    /// [wo]` and copied into `yi`: a lone image with one or two channel blocks (the VAE's 16 and
    /// 32 channels at batch 1) still fills the threads.
    fn rows_in_parallel(&self, xp: &[f32], yi: &mut [f32]) {
        let g = self.g;
        let ([ho, wo], plane) = (g.out_size(), self.plane());
        let mut staged = vec![0f32; g.out_channels.div_ceil(LANES) * ho * LANES * wo];
        staged
            .par_chunks_mut(LANES * wo)
            .enumerate()
            .for_each_init(|| self.tile_buffer(), |tiles, (unit, dst)| self.row(xp, unit / ho, unit % ho, dst, wo, tiles));
        for (unit, rows) in staged.chunks(LANES * wo).enumerate() {
            let (b, oy) = (unit / ho, unit % ho);
            for l in 0..(g.out_channels - b * LANES).min(LANES) {
                yi[(b * LANES + l) * plane + oy * wo..][..wo].copy_from_slice(&rows[l * wo..][..wo]);
            }
        }
    }

    /// The register tiles' output of one call of the row kernel, `[pixel][lane]`: made once per
    /// block or task and reused by its rows.
    fn tile_buffer(&self) -> Vec<f32> {
        vec![0f32; LANES * self.tiled.min(CHUNK)]
    }

    /// Output row `oy` of channel block `b`: lane `l`'s `wo` values to `dst[l * lane_stride..]`
    /// (`dst` holds the block's remaining channels, `lane_stride` apart), through `tiles`.
    fn row(&self, xp: &[f32], b: usize, oy: usize, dst: &mut [f32], lane_stride: usize, tiles: &mut [f32]) {
        let g = self.g;
        let wo = g.out_size()[1];
        let lanes = (g.out_channels - b * LANES).min(LANES);
        let wb = &self.packed[b * g.kernel[0] * g.kernel[1] * g.in_channels * LANES..];
        let bias = &self.biases[b * LANES..][..LANES];
        let task = RowTask {
            cin: g.in_channels,
            kh: g.kernel[0],
            kw: g.kernel[1],
            stride: g.stride,
            padded_width: self.padded_width,
            tile: self.tile,
            oy,
        };
        for start in (0..self.tiled).step_by(CHUNK) {
            let len = (self.tiled - start).min(CHUNK);
            conv_row(xp, wb, bias, &mut tiles[..LANES * len], task, start);
            // [pixel][lane] -> the lanes' rows, without the columns past `wo` (`start < wo`: it
            // is a multiple of the tile width, and `tiled` the first one at or past `wo`).
            let kept = len.min(wo - start);
            for l in 0..lanes {
                for (p, v) in dst[l * lane_stride + start..][..kept].iter_mut().enumerate() {
                    *v = tiles[p * LANES + l];
                }
            }
        }
    }
}

/// `[C_out, C_in, kh, kw]` -> `[block][ky][kx][c_in][LANES]`, missing channels of the last block
/// zero.
fn pack_weights(w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (co, ci, [kh, kw]) = (g.out_channels, g.in_channels, g.kernel);
    let mut p = vec![0f32; co.div_ceil(LANES) * kh * kw * ci * LANES];
    for o in 0..co {
        let (b, l) = (o / LANES, o % LANES);
        for c in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    p[(((b * kh + ky) * kw + kx) * ci + c) * LANES + l] = w[((o * ci + c) * kh + ky) * kw + kx];
                }
            }
        }
    }
    p
}

/// One image `[C, H, W]` -> zero-padded channels-last `[H + 2 pad][pw][C]` in `out` (`pw` at
/// least `W + 2 pad`; the columns past the right padding are zero too). Only the padding is
/// zeroed; each pixel's channels are written side by side (contiguous stores; the loads stride
/// over the planes).
fn pack_input(x: &[f32], g: &ConvGeometry, pw: usize, out: &mut [f32]) {
    let (c, h, w, [py, px]) = (g.in_channels, g.height, g.width, g.padding);
    let plane = h * w;
    out[..py * pw * c].fill(0.0);
    out[(py + h) * pw * c..].fill(0.0);
    for y in 0..h {
        let row = &mut out[(y + py) * pw * c..][..pw * c];
        row[..px * c].fill(0.0);
        row[(px + w) * c..].fill(0.0);
        for (i, pixel) in row[px * c..(px + w) * c].chunks_exact_mut(c).enumerate() {
            let at = y * w + i;
            for (ch, v) in pixel.iter_mut().enumerate() {
                *v = x[ch * plane + at];
            }
        }
    }
}

/// Output pixels `start .. start + len` of row `task.oy` (`len = out.len() / LANES`, a multiple
/// of `tile`) for one block of [`LANES`] output channels `wb` (packed) into `out [len][LANES]`.
fn conv_row(xp: &[f32], wb: &[f32], bias: &[f32], out: &mut [f32], task: RowTask, start: usize) {
    let len = out.len() / LANES;
    assert!(
        TILE_WIDTHS.contains(&task.tile)
            && len.is_multiple_of(task.tile)
            && bias.len() == LANES
            && wb.len() >= task.kh * task.kw * task.cin * LANES,
        "conv_row: operand sizes"
    );
    // The last input element the row reads, plus one.
    let last_row = (task.oy * task.stride[0] + task.kh - 1) * task.padded_width;
    let last = (last_row + (start + len - 1) * task.stride[1] + task.kw - 1) * task.cin + task.cin;
    assert!(last <= xp.len(), "conv_row: input too short");
    #[cfg(target_arch = "x86_64")]
    match simd::current() {
        // SAFETY: the CPU has the tier's features (`simd::current`); the asserts above bound every
        // element the kernels read and write.
        Tier::Avx512 => {
            return unsafe {
                match task.tile {
                    8 => x86::avx512_8(xp, wb, bias, out, task, start),
                    7 => x86::avx512_7(xp, wb, bias, out, task, start),
                    _ => x86::avx512_6(xp, wb, bias, out, task, start),
                }
            }
        }
        // SAFETY: as above.
        Tier::Avx2 => {
            return unsafe {
                match task.tile {
                    8 => x86::avx2_8(xp, wb, bias, out, task, start),
                    7 => x86::avx2_7(xp, wb, bias, out, task, start),
                    _ => x86::avx2_6(xp, wb, bias, out, task, start),
                }
            }
        }
        Tier::Baseline => {}
    }
    unreachable!("the direct convolution runs on AVX2 or AVX-512 only (`applies`)");
}

/// The register tiles: `tile` accumulators of one vector each (16 lanes on AVX-512; on AVX2 two
/// passes of 8 lanes), each output a chain of fused multiply-adds in (ky, kx, c_in) order.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{RowTask, LANES};

    macro_rules! row_kernel {
        ($name:ident, $features:literal, $width:expr, $load:ident, $set1:ident, $fmadd:ident, $store:ident, [$($acc:ident $r:literal),+]) => {
            /// # Safety
            /// The CPU has `$features`; `xp`, `wb`, `bias` and `out` hold every element the row
            /// reads and writes (`conv_row` checks).
            #[target_feature(enable = $features)]
            pub unsafe fn $name(xp: &[f32], wb: &[f32], bias: &[f32], out: &mut [f32], t: RowTask, start: usize) {
                let len = out.len() / LANES;
                let step = t.stride[1] * t.cin;
                for half in 0..LANES / $width {
                    let lane = half * $width;
                    let b = $load(bias.as_ptr().add(lane));
                    for ox in (0..len).step_by(t.tile) {
                        $(let mut $acc = b;)+
                        for ky in 0..t.kh {
                            let row = (t.oy * t.stride[0] + ky) * t.padded_width;
                            for kx in 0..t.kw {
                                let x = xp.as_ptr().add((row + (start + ox) * t.stride[1] + kx) * t.cin);
                                let w = wb.as_ptr().add((ky * t.kw + kx) * t.cin * LANES + lane);
                                for c in 0..t.cin {
                                    let wv = $load(w.add(c * LANES));
                                    let xc = x.add(c);
                                    $($acc = $fmadd($set1(*xc.add($r * step)), wv, $acc);)+
                                }
                            }
                        }
                        let o = out.as_mut_ptr().add(ox * LANES + lane);
                        $($store(o.add($r * LANES), $acc);)+
                    }
                }
            }
        };
    }

    row_kernel!(avx512_6, "avx512f", 16, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, [a0 0, a1 1, a2 2, a3 3, a4 4, a5 5]);
    row_kernel!(avx512_7, "avx512f", 16, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, [a0 0, a1 1, a2 2, a3 3, a4 4, a5 5, a6 6]);
    row_kernel!(avx512_8, "avx512f", 16, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, [a0 0, a1 1, a2 2, a3 3, a4 4, a5 5, a6 6, a7 7]);
    row_kernel!(avx2_6, "avx2,fma", 8, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, [a0 0, a1 1, a2 2, a3 3, a4 4, a5 5]);
    row_kernel!(avx2_7, "avx2,fma", 8, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, [a0 0, a1 1, a2 2, a3 3, a4 4, a5 5, a6 6]);
    row_kernel!(avx2_8, "avx2,fma", 8, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, [a0 0, a1 1, a2 2, a3 3, a4 4, a5 5, a6 6, a7 7]);
}

//! Strided f32 matrix products (the `gemm` crate), shared by the CPU convolution and attention.
//!
//! Every operand takes `[row stride, column stride]`, so a head's slice of a `[tokens, channels]`
//! activation, or its transpose, is read and written in place: no layout copies.

pub use gemm::Parallelism;
use rayon::prelude::*;

/// A matrix view: `data[r * strides[0] + c * strides[1]]` is element `(r, c)`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub strides: [usize; 2],
}

/// The offset of the last element of an `rows x cols` matrix with `strides`, plus one.
fn extent(strides: [usize; 2], rows: usize, cols: usize) -> usize {
    (rows - 1) * strides[0] + (cols - 1) * strides[1] + 1
}

/// `dst = (accumulate ? dst : 0) + alpha * a * b` for `a [m, k]`, `b [k, n]`, `dst [m, n]` with
/// `dst_strides`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_strides: [usize; 2],
    a: View,
    b: View,
    alpha: f32,
    accumulate: bool,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= extent(dst_strides, m, n), "matmul: destination too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * dst_strides[0] + c * dst_strides[1]] = 0.0;
                }
            }
        }
        return;
    }
    assert!(a.data.len() >= extent(a.strides, m, k) && b.data.len() >= extent(b.strides, k, n), "matmul: operand too short");
    // SAFETY: the asserts above bound every element the GEMM reads or writes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_strides[1] as isize,
            dst_strides[0] as isize,
            accumulate,
            a.data.as_ptr(),
            a.strides[1] as isize,
            a.strides[0] as isize,
            b.data.as_ptr(),
            b.strides[1] as isize,
            b.strides[0] as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Where the rows of a linear layer's input lie: `batches` matrices of `rows x d_in`, matrix `b`
/// at `offset + b * batch_stride`, element (r, c) at `r * strides[0] + c * strides[1]` from there.
/// A channels-first activation seen as tokens (`[B, C, H, W]` permuted to `[B, H*W, C]`) is one
/// such view, so it needs no copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsLayout {
    pub offset: usize,
    pub batches: usize,
    pub batch_stride: usize,
    pub rows: usize,
    pub strides: [usize; 2],
}

impl RowsLayout {
    /// `rows x d_in`, contiguous.
    pub fn contiguous(rows: usize, d_in: usize) -> Self {
        RowsLayout { offset: 0, batches: 1, batch_stride: 0, rows, strides: [d_in, 1] }
    }
}

/// `y [batches * rows, d_out] = x w [d_in, d_out] + bias` (burn's `Linear` layout), `x` read in
/// place through `layout`. The bias rows are the GEMM's starting value, so there is no zeroed
/// buffer and no separate broadcast add.
pub fn linear(x: &[f32], layout: RowsLayout, w: &[f32], bias: Option<&[f32]>, d_in: usize, d_out: usize) -> Vec<f32> {
    let RowsLayout { offset, batches, batch_stride, rows, strides } = layout;
    let mut y = match bias {
        Some(b) => b.repeat(batches * rows),
        None => vec![0f32; batches * rows * d_out],
    };
    if y.is_empty() {
        return y;
    }
    let w = View { data: w, strides: [d_out, 1] };
    let threads = rayon::current_num_threads();
    // Below ~64k multiply-adds a parallel split costs more than it saves; several matrices go
    // in parallel one per task, a single one is split inside the GEMM.
    let small = rows * d_in * d_out < 1 << 16;
    let inner = if small || batches >= threads { Parallelism::None } else { Parallelism::Rayon(threads) };
    let one = |b: usize, y: &mut [f32]| {
        let x = View { data: &x[offset + b * batch_stride..], strides };
        matmul(rows, d_out, d_in, y, [d_out, 1], x, w, 1.0, bias.is_some(), inner);
    };
    if batches > 1 && !small {
        y.par_chunks_mut(rows * d_out).enumerate().for_each(|(b, y)| one(b, y));
    } else {
        y.chunks_mut(rows * d_out).enumerate().for_each(|(b, y)| one(b, y));
    }
    y
}

thread_local! {
    /// This thread's GEMM operand buffer (im2col columns, score blocks), kept between calls.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch buffer, which `f` must write before it
/// reads (the contents are left over from earlier calls).
///
/// Every convolution and attention block used to allocate and zero its own buffers (up to a few
/// hundred KB, once per rayon task), and the `memset` of buffers about to be overwritten was ~3 %
/// of an expansion. The buffer grows to the largest request and stays allocated for the thread's
/// life. A nested call on the same thread (rayon may run another task inside a parallel GEMM)
/// finds the buffer taken and uses a fresh one.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buffer = SCRATCH.take();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    SCRATCH.set(buffer);
    result
}

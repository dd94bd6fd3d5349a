//! Strided f32 matrix products (the `gemm` crate), shared by the CPU convolution and attention.
//!
//! Every operand takes `[row stride, column stride]`, so a head's slice of a `[tokens, channels]`
//! activation, or its transpose, is read and written in place: no layout copies.

pub use gemm::Parallelism;

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

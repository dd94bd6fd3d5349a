//! Multi-head attention on plain f32 slices, straight from the `[batch, tokens, heads * d]` layout
//! the projections produce: per (image, head), `softmax(q k^T / sqrt(d)) v` with strided GEMMs
//! that read the head's columns in place and write its output columns in place.
//!
//! The composed version reshapes to `[batch, heads, tokens, d]` and back, which on the CPU
//! backend materialises four transposed copies per attention call (the `swap_dims` share of the
//! profile in docs/results/prior.md). Queries go in blocks of [`QUERY_BLOCK`] rows so the score
//! matrix stays small at any resolution.

use rayon::prelude::*;

use super::activation_cpu;
use super::matmul_cpu::{matmul, with_scratch, Parallelism, View};

/// Queries per score block: the scores of one block are `QUERY_BLOCK x keys` floats.
const QUERY_BLOCK: usize = 64;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    /// Query tokens per image.
    pub queries: usize,
    /// Key (and value) tokens per image.
    pub keys: usize,
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
}

impl AttentionShape {
    fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// `o [batch, queries, inner]` from `q [batch, queries, inner]`, `k` and `v [batch, keys, inner]`
/// (contiguous), `inner = heads * head_dim`, head `h` owning columns `h*d .. (h+1)*d`.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape) -> Vec<f32> {
    let (inner, d) = (s.inner(), s.head_dim);
    assert_eq!(q.len(), s.batch * s.queries * inner, "attention: q has the wrong length");
    assert_eq!(k.len(), s.batch * s.keys * inner, "attention: k has the wrong length");
    assert_eq!(v.len(), s.batch * s.keys * inner, "attention: v has the wrong length");
    let mut o = vec![0f32; q.len()];
    if o.is_empty() || s.keys == 0 {
        return o;
    }
    let scale = 1.0 / (d as f32).sqrt();
    // Tasks: (image, block of query rows); each computes every head of its rows, so tasks write
    // disjoint rows of `o`.
    o.par_chunks_mut(s.queries * inner).enumerate().for_each(|(b, image)| {
        let kb = &k[b * s.keys * inner..(b + 1) * s.keys * inner];
        let vb = &v[b * s.keys * inner..(b + 1) * s.keys * inner];
        image.par_chunks_mut(QUERY_BLOCK * inner).enumerate().for_each(|(block, out)| {
            let q0 = b * s.queries + block * QUERY_BLOCK;
            let rows = out.len() / inner;
            with_scratch(rows * s.keys, |scores| {
                for h in 0..s.heads {
                    let qh = View { data: &q[q0 * inner + h * d..], strides: [inner, 1] };
                    // k^T: element (c, j) of the head's transpose is k[j, h*d + c].
                    let kt = View { data: &kb[h * d..], strides: [1, inner] };
                    matmul(rows, s.keys, d, scores, [s.keys, 1], qh, kt, scale, false, Parallelism::None);
                    for row in scores.chunks_exact_mut(s.keys) {
                        softmax_inplace(row);
                    }
                    let p = View { data: scores, strides: [s.keys, 1] };
                    let vh = View { data: &vb[h * d..], strides: [inner, 1] };
                    matmul(rows, d, s.keys, &mut out[h * d..], [inner, 1], p, vh, 1.0, false, Parallelism::None);
                }
            })
        });
    });
    o
}

/// Numerically stable softmax of one row, in place (a NaN anywhere makes the row NaN).
fn softmax_inplace(row: &mut [f32]) {
    let max = activation_cpu::max_or_nan(row);
    let inv = 1.0 / activation_cpu::exp_shifted(row, max);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

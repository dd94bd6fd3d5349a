//! Fused ReLU + 2x2 average pooling (stride 2, floor mode) on plain f32 slices (NCHW).
//!
//! In a ConvNet block, burn runs ReLU and pooling as two ops with their own autodiff nodes: four
//! passes over the largest activation of the net (ReLU forward, pool forward, pool backward, ReLU
//! backward), and Flex's pooling is a generic 3-D kernel. Fused, the forward is one read of the
//! input and a quarter-size write, and the backward one read of the input and one write.

use rayon::prelude::*;

/// Output size of a 2x2/2 pool in floor mode (PyTorch's default): odd edges are dropped.
pub fn pooled(h: usize, w: usize) -> (usize, usize) {
    (h / 2, w / 2)
}

/// `y = avgpool2x2(relu(x))` for `planes` planes of `h x w`.
pub fn relu_pool_forward(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = pooled(h, w);
    let mut y = vec![0f32; x.len() / (h * w) * ho * wo];
    if ho * wo == 0 {
        return y;
    }
    y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each(|(y, x)| {
        for (i, row) in y.chunks_exact_mut(wo).enumerate() {
            let (top, bottom) = (&x[2 * i * w..], &x[(2 * i + 1) * w..]);
            for (j, out) in row.iter_mut().enumerate() {
                let s = top[2 * j].max(0.0) + top[2 * j + 1].max(0.0) + bottom[2 * j].max(0.0) + bottom[2 * j + 1].max(0.0);
                *out = 0.25 * s;
            }
        }
    });
    y
}

/// Gradient of [`relu_pool_forward`] with respect to `x`, given the gradient `dy` of its output.
pub fn relu_pool_backward(x: &[f32], dy: &[f32], h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = pooled(h, w);
    let mut dx = vec![0f32; x.len()];
    if ho * wo == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w).zip(dy.par_chunks(ho * wo))).for_each(|(dx, (x, dy))| {
        // Rows and columns dropped by floor mode keep a zero gradient.
        for (i, g_row) in dy.chunks_exact(wo).enumerate() {
            for r in [2 * i, 2 * i + 1] {
                let (x_row, dx_row) = (&x[r * w..r * w + 2 * wo], &mut dx[r * w..r * w + 2 * wo]);
                for (j, &g) in g_row.iter().enumerate() {
                    let g = 0.25 * g;
                    for k in [2 * j, 2 * j + 1] {
                        dx_row[k] = if x_row[k] > 0.0 { g } else { 0.0 };
                    }
                }
            }
        }
    });
    dx
}

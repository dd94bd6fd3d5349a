//! The student's augmentation (RDED's: ShufflePatches, RandomResizedCrop, horizontal flip, CutMix),
//! with every random choice drawn from the portable RNG keyed by `(seed, item)`. The image an item
//! gets under a seed is therefore a pure function of the seed: a soft label stored for
//! `(item, seed)` on the teacher's machine matches the image the student rebuilds anywhere.

use crate::data::transform::resize_bilinear;
use crate::package::AugmentConfig;
use crate::rng::{SeedRng, Stream};

/// torchvision's RandomResizedCrop box `(top, left, h, w)`: ten tries at a random area fraction and
/// log-uniform aspect ratio, else the whole image.
fn rrc_box(rng: &SeedRng, h: usize, w: usize, scale_min: f32) -> (usize, usize, usize, usize) {
    let area = (h * w) as f32;
    let (lo, hi) = ((3.0f32 / 4.0).ln(), (4.0f32 / 3.0).ln());
    for t in 0..10u64 {
        let target = area * (scale_min + (1.0 - scale_min) * rng.uniform_at(4 * t));
        let ratio = (lo + (hi - lo) * rng.uniform_at(4 * t + 1)).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let top = rng.below_at(4 * t + 2, (h - ch + 1) as u32) as usize;
            let left = rng.below_at(4 * t + 3, (w - cw + 1) as u32) as usize;
            return (top, left, ch, cw);
        }
    }
    (0, 0, h, w)
}

/// One item's view before CutMix: shuffle cells, crop + resize back, flip. `img` is normalised CHW.
pub fn base_view(img: &[f32], c: usize, h: usize, w: usize, seed: u64, item: u64, cfg: &AugmentConfig) -> Vec<f32> {
    let mut x = img.to_vec();
    let r = cfg.shuffle_factor;
    if r > 1 && h.is_multiple_of(r) && w.is_multiple_of(r) {
        // RDED's ShufflePatches: the column strips are permuted, then the row strips, so cells
        // that share a row (column) keep sharing one.
        let rng = SeedRng::new(seed, item, Stream::Shuffle);
        let permutation = |offset: u64| {
            let mut perm: Vec<usize> = (0..r).collect();
            for i in (1..r).rev() {
                perm.swap(i, rng.below_at(offset + i as u64, (i + 1) as u32) as usize);
            }
            perm
        };
        let (rows, cols) = (permutation(0), permutation(r as u64));
        let (ph, pw) = (h / r, w / r);
        let src = x.clone();
        for cell in 0..r * r {
            let from = rows[cell / r] * r + cols[cell % r];
            let (ty, tx, fy, fx) = ((cell / r) * ph, (cell % r) * pw, (from / r) * ph, (from % r) * pw);
            for ch in 0..c {
                for y in 0..ph {
                    let d = (ch * h + ty + y) * w + tx;
                    let s = (ch * h + fy + y) * w + fx;
                    x[d..d + pw].copy_from_slice(&src[s..s + pw]);
                }
            }
        }
    }
    if cfg.crop_scale_min < 1.0 {
        let (top, left, ch_, cw) = rrc_box(&SeedRng::new(seed, item, Stream::Crop), h, w, cfg.crop_scale_min);
        let mut cut = Vec::with_capacity(c * ch_ * cw);
        for ch in 0..c {
            for y in top..top + ch_ {
                let row = (ch * h + y) * w;
                cut.extend_from_slice(&x[row + left..row + left + cw]);
            }
        }
        resize_bilinear(&cut, c, ch_, cw, h, w, &mut x);
    }
    if cfg.flip && SeedRng::new(seed, item, Stream::Flip).uniform_at(0) < 0.5 {
        for row in x.chunks_mut(w) {
            row.reverse();
        }
    }
    x
}

/// CutMix choice for `(seed, item)` among `n` items: partner and box `(y0, y1, x0, x1)`, the box
/// of side `sqrt(1 - lambda)` around a uniform centre, clipped (so the pasted area may be smaller).
pub fn cutmix_choice(seed: u64, item: u64, n: usize, h: usize, w: usize) -> (usize, [usize; 4]) {
    let rng = SeedRng::new(seed, item, Stream::CutMix);
    let partner = rng.below_at(0, n as u32) as usize;
    let lambda = rng.uniform_at(1);
    let cut = (1.0 - lambda).sqrt();
    let (cw, ch) = ((w as f32 * cut) as usize, (h as f32 * cut) as usize);
    let (cx, cy) = (rng.below_at(2, w as u32) as usize, rng.below_at(3, h as u32) as usize);
    let x0 = cx.saturating_sub(cw / 2);
    let x1 = (cx + cw / 2).min(w);
    let y0 = cy.saturating_sub(ch / 2);
    let y1 = (cy + ch / 2).min(h);
    (partner, [y0, y1, x0, x1])
}

/// Pastes the box of `partner` into `x` (both CHW).
pub fn paste_box(x: &mut [f32], partner: &[f32], c: usize, h: usize, w: usize, [y0, y1, x0, x1]: [usize; 4]) {
    for ch in 0..c {
        for y in y0..y1 {
            let row = (ch * h + y) * w;
            x[row + x0..row + x1].copy_from_slice(&partner[row + x0..row + x1]);
        }
    }
}

//! Random square crops for coreset selection and RDED collages.

use crate::data::transform::resize_u8;
use crate::rng::{SeedRng, Stream};

/// A square crop: top-left corner and side, in pixels of the source image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub side: usize,
}

/// Crop `k` of image `item`: RandomResizedCrop with ratio 1:1 and area scale in (0.08, 1), drawn
/// from the portable RNG so a coreset is reproducible from its seed on any machine.
pub fn random_square(seed: u64, item: u64, k: u64, h: usize, w: usize) -> CropBox {
    let rng = SeedRng::new(seed, item, Stream::Crop);
    let scale = 0.08 + 0.92 * rng.uniform_at(3 * k) as f64;
    let side = ((scale * (h * w) as f64).sqrt().round() as usize).clamp(1, h.min(w));
    CropBox {
        top: rng.below_at(3 * k + 1, (h - side + 1) as u32) as usize,
        left: rng.below_at(3 * k + 2, (w - side + 1) as u32) as usize,
        side,
    }
}

/// The `crop` of `src` (`c x h x w`) resized to `oh x ow`.
pub fn crop_resize(src: &[u8], c: usize, h: usize, w: usize, crop: CropBox, oh: usize, ow: usize) -> Vec<u8> {
    let s = crop.side;
    let mut cut = Vec::with_capacity(c * s * s);
    for ch in 0..c {
        for y in crop.top..crop.top + s {
            let row = (ch * h + y) * w;
            cut.extend_from_slice(&src[row + crop.left..row + crop.left + s]);
        }
    }
    resize_u8(&cut, c, s, s, oh, ow)
}

/// Pastes `patches` (`r * r` of `c x ph x pw`, row-major cells) into one `c x (r ph) x (r pw)`
/// collage, RDED's layout.
pub fn collage(patches: &[&[u8]], c: usize, ph: usize, pw: usize, r: usize) -> Vec<u8> {
    let (h, w) = (ph * r, pw * r);
    let mut out = vec![0u8; c * h * w];
    for (cell, p) in patches.iter().enumerate() {
        let (y0, x0) = ((cell / r) * ph, (cell % r) * pw);
        for ch in 0..c {
            for y in 0..ph {
                let dst = (ch * h + y0 + y) * w + x0;
                out[dst..dst + pw].copy_from_slice(&p[(ch * ph + y) * pw..(ch * ph + y + 1) * pw]);
            }
        }
    }
    out
}

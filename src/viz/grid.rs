//! PNG grids of u8 CHW images (1 or 3 channels), written atomically.

use std::io::Cursor;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{ImageFormat, RgbImage};

use crate::error::{DaceError, Result};
use crate::fsio;

/// A grid of `images` (`n` CHW images of `c x h x w` bytes, back to back), `cols` per row, each
/// upscaled (nearest neighbour, so pixels stay visible) to at least `min_side` pixels, with a
/// one-pixel gap. Returns the encoded PNG.
pub fn grid_png(images: &[u8], c: usize, h: usize, w: usize, cols: usize, min_side: usize) -> Result<Vec<u8>> {
    let len = c * h * w;
    if c != 1 && c != 3 || len == 0 || !images.len().is_multiple_of(len) {
        return Err(DaceError::Invalid(format!("cannot draw {} bytes as {c}x{h}x{w} images", images.len())));
    }
    let n = images.len() / len;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let scale = min_side.div_ceil(h.min(w)).max(1);
    let (th, tw) = (h * scale, w * scale);
    let mut canvas = RgbImage::from_pixel((cols * (tw + 1) + 1) as u32, (rows * (th + 1) + 1) as u32, image::Rgb([255, 255, 255]));
    for (i, img) in images.chunks(len).enumerate() {
        let tile = RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let at = |ch: usize| img[(ch * h + y as usize) * w + x as usize];
            if c == 1 {
                image::Rgb([at(0); 3])
            } else {
                image::Rgb([at(0), at(1), at(2)])
            }
        });
        let tile = imageops::resize(&tile, tw as u32, th as u32, FilterType::Nearest);
        let (x, y) = ((i % cols) * (tw + 1) + 1, (i / cols) * (th + 1) + 1);
        imageops::replace(&mut canvas, &tile, x as i64, y as i64);
    }
    let mut png = Vec::new();
    canvas.write_to(&mut Cursor::new(&mut png), ImageFormat::Png).map_err(|e| DaceError::Invalid(format!("cannot encode PNG: {e}")))?;
    Ok(png)
}

pub fn write_grid(path: &Path, images: &[u8], c: usize, h: usize, w: usize, cols: usize, min_side: usize) -> Result<()> {
    fsio::write_atomic(path, &grid_png(images, c, h, w, cols, min_side)?)
}

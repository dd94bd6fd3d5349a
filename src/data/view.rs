//! How an image file becomes one CHW image of the dataset's size: indexed from its header without
//! decoding, then decoded on demand through a view. The evaluation view takes the largest centred
//! box of the target's aspect ratio (the shorter side, for square targets) and resizes it; the
//! training view is torchvision's `RandomResizedCrop` (scale 0.08-1, aspect 3/4-4/3) plus an
//! optional mirror. Resizing is a bilinear filter widened by the shrink factor (antialiased, like
//! PIL's and the image crate's triangle filter) in `fast_image_resize`'s SIMD fixed-point
//! arithmetic, one channel plane at a time.

use std::path::{Path, PathBuf};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ColorType, DynamicImage, ImageDecoder};
use rand::Rng;

use super::error::DataError;

/// An image file and what its header says: size and whether it has colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFile {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub gray: bool,
}

/// A crop box in source pixels: left, top, width, height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>, DataError> {
    // Guess the format from the content: a .png that is really a JPEG should still load.
    image::ImageReader::open(path).and_then(|reader| reader.with_guessed_format()).map_err(|e| DataError::io(path, e))
}

/// Reads `path`'s header (size and colour type) without decoding the pixels.
pub fn index(path: &Path) -> Result<ImageFile, DataError> {
    let decoder = reader(path)?.into_decoder().map_err(|source| DataError::Image { path: path.into(), source })?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DataError::corrupt(path, "image has zero width or height"));
    }
    Ok(ImageFile { path: path.into(), width, height, gray: is_gray(decoder.color_type()) })
}

fn is_gray(color: ColorType) -> bool {
    matches!(color, ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16)
}

/// Decodes the whole file, checking it still matches its index entry.
pub fn decode(file: &ImageFile) -> Result<DynamicImage, DataError> {
    let image = reader(&file.path)?.decode().map_err(|source| DataError::Image { path: file.path.clone(), source })?;
    if (image.width(), image.height()) != (file.width, file.height) {
        let reason = format!("is {}x{} but was {}x{} when the dataset was indexed", image.width(), image.height(), file.width, file.height);
        return Err(DataError::corrupt(&file.path, reason));
    }
    Ok(image)
}

/// `image` as CHW bytes with `channels` (1 or 3) channels; alpha is dropped.
pub fn to_chw(image: &DynamicImage, channels: usize) -> Vec<u8> {
    if channels == 1 {
        return image.to_luma8().into_raw();
    }
    let rgb = image.to_rgb8();
    let plane = rgb.width() as usize * rgb.height() as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = pixel.0[c];
        }
    }
    out
}

/// The largest box of the target's aspect ratio, centred in a `width` x `height` source.
pub fn centre_box(width: u32, height: u32, [th, tw]: [usize; 2]) -> CropBox {
    let (w, h) = (u64::from(width), u64::from(height));
    // Compare w/h with tw/th in integers: the box is as wide as the source or as tall.
    let (cw, ch) = if w * th as u64 > h * tw as u64 {
        (((h * tw as u64 + th as u64 / 2) / th as u64).clamp(1, w), h)
    } else {
        (w, ((w * th as u64 + tw as u64 / 2) / tw as u64).clamp(1, h))
    };
    CropBox { left: ((w - cw) / 2) as u32, top: ((h - ch) / 2) as u32, width: cw as u32, height: ch as u32 }
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3): ten
/// tries at a random area and aspect, then the whole image with its aspect clamped into range.
pub fn random_resized_box(width: u32, height: u32, rng: &mut impl Rng) -> CropBox {
    let (w, h) = (f64::from(width), f64::from(height));
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let area = w * h * rng.random_range(0.08..=1.0);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let cw = (area * aspect).sqrt().round();
        let ch = (area / aspect).sqrt().round();
        if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
            let (cw, ch) = (cw as u32, ch as u32);
            let top = rng.random_range(0..=height - ch);
            let left = rng.random_range(0..=width - cw);
            return CropBox { left, top, width: cw, height: ch };
        }
    }
    let ratio = w / h;
    let (cw, ch) = if ratio < 3.0 / 4.0 {
        (w, (w / (3.0 / 4.0)).round())
    } else if ratio > 4.0 / 3.0 {
        ((h * 4.0 / 3.0).round(), h)
    } else {
        (w, h)
    };
    let (cw, ch) = ((cw as u32).clamp(1, width), (ch as u32).clamp(1, height));
    CropBox { left: (width - cw) / 2, top: (height - ch) / 2, width: cw, height: ch }
}

/// Crops every plane of the CHW image `src` (`c` planes of `width` x `height`) to `crop`, resizes
/// it to `th` x `tw` and mirrors it if `mirror`.
pub fn crop_resize(src: &[u8], width: u32, height: u32, crop: CropBox, [c, th, tw]: [usize; 3], mirror: bool) -> Vec<u8> {
    let plane = width as usize * height as usize;
    let mut out = Vec::with_capacity(c * th * tw);
    let mut resizer = Resizer::new();
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
        f64::from(crop.left),
        f64::from(crop.top),
        f64::from(crop.width),
        f64::from(crop.height),
    );
    for ch in 0..c {
        let full = &src[ch * plane..(ch + 1) * plane];
        let start = out.len();
        if (crop.width as usize, crop.height as usize) == (tw, th) {
            // No resampling: the exact pixels of the box.
            let (left, top, w) = (crop.left as usize, crop.top as usize, width as usize);
            (top..top + th).for_each(|y| out.extend_from_slice(&full[y * w + left..y * w + left + tw]));
        } else {
            let source = ImageRef::new(width, height, full, PixelType::U8).expect("plane length is width * height");
            let mut resized = Image::new(tw as u32, th as u32, PixelType::U8);
            resizer.resize(&source, &mut resized, &options).expect("one pixel type, a crop box inside the image");
            out.extend_from_slice(resized.buffer());
        }
        if mirror {
            out[start..].chunks_exact_mut(tw).for_each(<[u8]>::reverse);
        }
    }
    out
}

/// The evaluation view of `file` at `shape`.
pub fn centre(file: &ImageFile, shape: [usize; 3]) -> Result<Vec<u8>, DataError> {
    let chw = to_chw(&decode(file)?, shape[0]);
    let crop = centre_box(file.width, file.height, [shape[1], shape[2]]);
    Ok(crop_resize(&chw, file.width, file.height, crop, shape, false))
}

/// The training view of `file` at `shape`, cropped from the full-resolution image.
pub fn random_resized_crop(file: &ImageFile, shape: [usize; 3], flip: bool, rng: &mut impl Rng) -> Result<Vec<u8>, DataError> {
    let chw = to_chw(&decode(file)?, shape[0]);
    Ok(random_resized_crop_chw_sized(&chw, file.width, file.height, shape, flip, rng))
}

/// The training view of an image already at `shape` (a dataset held in memory).
pub fn random_resized_crop_chw(image: &[u8], shape: [usize; 3], flip: bool, rng: &mut impl Rng) -> Vec<u8> {
    random_resized_crop_chw_sized(image, shape[2] as u32, shape[1] as u32, shape, flip, rng)
}

fn random_resized_crop_chw_sized(chw: &[u8], width: u32, height: u32, shape: [usize; 3], flip: bool, rng: &mut impl Rng) -> Vec<u8> {
    // The box is drawn before the mirror, so one seed gives the same crop with flips on or off.
    let crop = random_resized_box(width, height, rng);
    let mirror = flip && rng.random_bool(0.5);
    crop_resize(chw, width, height, crop, shape, mirror)
}

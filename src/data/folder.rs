//! ImageFolder trees: `root/{train,test|val}/<class>/*.{png,jpg,jpeg}`, or `root/<class>/*` from
//! which a deterministic test split is taken. ImageNet and ImageNette are this layout with WordNet
//! ids as class folders; Tiny-ImageNet's (`train/<wnid>/images/*`, `val/images/*` labelled by
//! `val/val_annotations.txt`, an unlabelled `test/`) is read too. Class names come from a names
//! file in the root where there is one (`names`).

use std::path::{Path, PathBuf};

use image::{ColorType, DynamicImage};
use rayon::prelude::*;

use super::dataset::{Dataset, Split};
use super::error::DataError;
use super::files;
use super::names;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Without a train/test layout, every `TEST_EVERY`-th file of a class (by sorted name, starting
/// with the first) goes to the test split: 10%, and at least one image per class.
const TEST_EVERY: usize = 10;

/// Files of one split, grouped by class in class order.
struct Listing {
    classes: Vec<String>,
    files: Vec<Vec<PathBuf>>,
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Sorted, non-hidden entries of `dir` that satisfy `keep`.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if !is_hidden(&path) && keep(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn is_image_file(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    path.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

pub(crate) fn is_image_folder(dir: &Path) -> bool {
    sorted_entries(dir, Path::is_dir).is_ok_and(|dirs| !dirs.is_empty())
}

fn list_classes(dir: &Path) -> Result<Listing, DataError> {
    let class_dirs = sorted_entries(dir, Path::is_dir)?;
    if class_dirs.is_empty() {
        return Err(DataError::corrupt(dir, "no class folders"));
    }
    let mut listing = Listing { classes: Vec::new(), files: Vec::new() };
    for class_dir in class_dirs {
        // Tiny-ImageNet keeps a class's images in `<wnid>/images/` (beside a boxes file).
        let image_dir = Some(class_dir.join("images")).filter(|d| d.is_dir()).unwrap_or_else(|| class_dir.clone());
        let images = sorted_entries(&image_dir, is_image_file)?;
        if images.is_empty() {
            return Err(DataError::EmptyClass { path: class_dir });
        }
        // The folder's own name, not a symlink target's.
        let name = class_dir.file_name().map(|n| n.to_string_lossy().into_owned());
        listing.classes.push(name.unwrap_or_default());
        listing.files.push(images);
    }
    Ok(listing)
}

/// Splits class folders found directly under the root into train and test.
fn split_listing(listing: Listing, root: &Path) -> Result<(Listing, Listing), DataError> {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (class, files) in listing.classes.iter().zip(listing.files) {
        if files.len() < 2 {
            return Err(DataError::corrupt(root.join(class), "only one image; need at least 2 to split off a test image"));
        }
        let (test_files, train_files): (Vec<_>, Vec<_>) = files.into_iter().enumerate().partition(|(i, _)| i % TEST_EVERY == 0);
        train.push(train_files.into_iter().map(|(_, p)| p).collect());
        test.push(test_files.into_iter().map(|(_, p)| p).collect());
    }
    let classes = listing.classes;
    Ok((Listing { classes: classes.clone(), files: train }, Listing { classes, files: test }))
}

fn check_same_classes(train: &Listing, test: &Listing, test_dir: &Path) -> Result<(), DataError> {
    if train.classes == test.classes {
        return Ok(());
    }
    let missing: Vec<_> = train.classes.iter().filter(|c| !test.classes.contains(c)).collect();
    let extra: Vec<_> = test.classes.iter().filter(|c| !train.classes.contains(c)).collect();
    Err(DataError::corrupt(test_dir, format!("class folders differ from train/: missing {missing:?}, extra {extra:?}")))
}

/// Tiny-ImageNet's validation labels: `val/val_annotations.txt`, `FILE<TAB>WNID<TAB>box...` per
/// image of `val/images/`.
const ANNOTATIONS: &str = "val_annotations.txt";

/// Whether a split folder holds labels: class folders, or images with an annotations file.
/// Tiny-ImageNet's `test/` (a lone unlabeled `images/` folder) does not.
fn is_labeled_split(dir: &Path) -> bool {
    if dir.join(ANNOTATIONS).is_file() {
        return true;
    }
    sorted_entries(dir, Path::is_dir).is_ok_and(|dirs| match &dirs[..] {
        [] => false,
        [only] => !only.ends_with("images"),
        _ => true,
    })
}

/// The files of `dir/images/` grouped by the classes of `train`, labelled by `dir/val_annotations.txt`.
fn list_annotated(dir: &Path, train: &Listing) -> Result<Listing, DataError> {
    let path = dir.join(ANNOTATIONS);
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut files = vec![Vec::new(); train.classes.len()];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut fields = line.split('\t');
        let (Some(file), Some(class)) = (fields.next(), fields.next()) else {
            return Err(DataError::corrupt(&path, format!("line {}: expected FILE<TAB>CLASS", i + 1)));
        };
        let label = train
            .classes
            .iter()
            .position(|c| c == class.trim())
            .ok_or_else(|| DataError::corrupt(&path, format!("line {}: class `{class}` is not a folder of train/", i + 1)))?;
        let image = dir.join("images").join(file.trim());
        if !image.is_file() {
            return Err(DataError::corrupt(&path, format!("line {}: {} does not exist", i + 1, image.display())));
        }
        files[label].push(image);
    }
    if let Some(empty) = files.iter().position(Vec::is_empty) {
        return Err(DataError::corrupt(&path, format!("no image of class `{}`", train.classes[empty])));
    }
    files.iter_mut().for_each(|f| f.sort());
    Ok(Listing { classes: train.classes.clone(), files })
}

fn listings(root: &Path) -> Result<(Listing, Listing), DataError> {
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        return split_listing(list_classes(root)?, root);
    }
    let test_dir = ["test", "val"]
        .iter()
        .map(|name| root.join(name))
        .find(|p| p.is_dir() && is_labeled_split(p))
        .ok_or_else(|| DataError::corrupt(root, "has a train/ folder but no labelled test/ or val/ folder"))?;
    let train = list_classes(&train_dir)?;
    if test_dir.join(ANNOTATIONS).is_file() {
        let test = list_annotated(&test_dir, &train)?;
        return Ok((train, test));
    }
    let test = list_classes(&test_dir)?;
    check_same_classes(&train, &test, &test_dir)?;
    Ok((train, test))
}

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    // Guess the format from the content: a .png that is really a JPEG should still load.
    image::ImageReader::open(path)
        .and_then(|reader| reader.with_guessed_format())
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|source| DataError::Image { path: path.into(), source })
}

fn is_gray(image: &DynamicImage) -> bool {
    matches!(image.color(), ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16)
}

/// Writes `image` as CHW bytes with `channels` (1 or 3) channels; alpha is dropped.
fn write_chw(image: &DynamicImage, channels: usize, out: &mut [u8]) {
    if channels == 1 {
        out.copy_from_slice(image.to_luma8().as_raw());
        return;
    }
    let rgb = image.to_rgb8();
    let plane = out.len() / 3;
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = pixel.0[c];
        }
    }
}

pub(crate) fn load(root: &Path) -> Result<Dataset, DataError> {
    let (train, test) = listings(root)?;
    // One flat list, train first, so that decoding runs in parallel over everything at once.
    let mut items: Vec<(PathBuf, u32)> = Vec::new();
    for listing in [&train, &test] {
        for (label, class_files) in listing.files.iter().enumerate() {
            items.extend(class_files.iter().map(|p| (p.clone(), label as u32)));
        }
    }
    let train_len: usize = train.files.iter().map(Vec::len).sum();
    // Collect every result, then report the first failure in file order, so the error does not
    // depend on thread scheduling.
    let decoded: Vec<Result<DynamicImage, DataError>> = items.par_iter().map(|(p, _)| decode(p)).collect();
    let images = decoded.into_iter().collect::<Result<Vec<_>, _>>()?;

    let channels = if images.iter().all(is_gray) { 1 } else { 3 };
    let (width, height) = (images[0].width() as usize, images[0].height() as usize);
    if width == 0 || height == 0 {
        return Err(DataError::corrupt(&items[0].0, "image has zero width or height"));
    }
    for (image, (path, _)) in images.iter().zip(&items) {
        let got = (channels, image.height() as usize, image.width() as usize);
        if (got.1, got.2) != (height, width) {
            return Err(DataError::ShapeMismatch { path: path.clone(), expected: (channels, height, width), got });
        }
    }

    let image_len = channels * height * width;
    let mut pixels = vec![0u8; images.len() * image_len];
    pixels.par_chunks_mut(image_len).zip(images.par_iter()).for_each(|(out, image)| write_chw(image, channels, out));
    drop(images);
    let test_pixels = pixels.split_off(train_len * image_len);
    let mut labels: Vec<u32> = items.into_iter().map(|(_, label)| label).collect();
    let test_labels = labels.split_off(train_len);

    // Human names where the root has a names file (see `names`), else the folder names.
    let classes = names::folder_names(root, &train.classes)?.unwrap_or(train.classes);
    Ok(Dataset {
        name: files::dir_name(root),
        classes,
        channels,
        height,
        width,
        train: Split { images: pixels, labels },
        test: Split { images: test_pixels, labels: test_labels },
    })
}

//! ImageFolder trees: `root/{train,test|val}/<class>/*.{png,jpg,jpeg}`, or `root/<class>/*` from
//! which a deterministic test split is taken. ImageNet and ImageNette are this layout with WordNet
//! ids as class folders; Tiny-ImageNet's (`train/<wnid>/images/*`, `val/images/*` labelled by
//! `val/val_annotations.txt`, an unlabelled `test/`) is read too. Class names come from a names
//! file in the root where there is one (`names`).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::dataset::{Dataset, Pixels, Split};
use super::error::DataError;
use super::files;
use super::names;
use super::view::{self, ImageFile};

const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

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

/// Decoded bytes up to which a folder is decoded into memory at load time; larger ones are read
/// from their files batch by batch.
pub const IN_MEMORY_LIMIT: u64 = 2 << 30;

/// How a folder is read: at its own size or at `size`, in memory up to `memory_limit` bytes.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// `[h, w]` every image is viewed at (centre crop + resize); `None` keeps the files' own size,
    /// which must then be the same for all.
    pub size: Option<[usize; 2]>,
    pub memory_limit: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { size: None, memory_limit: IN_MEMORY_LIMIT }
    }
}

/// The size every image is read at: `size`, else the files' common size.
fn target_size(files: &[ImageFile], size: Option<[usize; 2]>) -> Result<[usize; 2], DataError> {
    if let Some(size) = size {
        return Ok(size);
    }
    let first = &files[0];
    match files.iter().find(|f| (f.width, f.height) != (first.width, first.height)) {
        None => Ok([first.height as usize, first.width as usize]),
        Some(other) => Err(DataError::MixedSizes {
            first: first.path.clone(),
            first_size: (first.width, first.height),
            other: other.path.clone(),
            other_size: (other.width, other.height),
        }),
    }
}

/// Every file decoded into one NCHW buffer; the first failure in file order is reported.
fn decode_all(files: &[ImageFile], shape: [usize; 3]) -> Result<Vec<u8>, DataError> {
    let len: usize = shape.iter().product();
    let decoded: Vec<Result<Vec<u8>, DataError>> = files.par_iter().map(|f| view::centre(f, shape)).collect();
    let mut pixels = Vec::with_capacity(files.len() * len);
    for image in decoded {
        pixels.extend_from_slice(&image?);
    }
    Ok(pixels)
}

pub(crate) fn load(root: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let (train, test) = listings(root)?;
    let split_files = |listing: &Listing| -> Result<(Vec<ImageFile>, Vec<u32>), DataError> {
        let items: Vec<(&PathBuf, u32)> =
            listing.files.iter().enumerate().flat_map(|(label, files)| files.iter().map(move |p| (p, label as u32))).collect();
        // Headers only; collect every result, then report the first failure in file order, so
        // the error does not depend on thread scheduling.
        let indexed: Vec<Result<ImageFile, DataError>> = items.par_iter().map(|(p, _)| view::index(p)).collect();
        let files = indexed.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok((files, items.into_iter().map(|(_, label)| label).collect()))
    };
    let (train_files, train_labels) = split_files(&train)?;
    let (test_files, test_labels) = split_files(&test)?;
    let all = || train_files.iter().chain(&test_files);
    let channels = if all().all(|f| f.gray) { 1 } else { 3 };
    let [height, width] = target_size(&all().cloned().collect::<Vec<_>>(), options.size)?;
    let shape = [channels, height, width];
    let bytes = (train_files.len() + test_files.len()) as u64 * shape.iter().product::<usize>() as u64;
    let split = |files: Vec<ImageFile>, labels: Vec<u32>| -> Result<Split, DataError> {
        if bytes <= options.memory_limit {
            return Ok(Split::in_memory(decode_all(&files, shape)?, labels));
        }
        Ok(Split { pixels: Pixels::Files(files.into()), labels })
    };
    // Human names where the root has a names file (see `names`), else the folder names.
    let classes = names::folder_names(root, &train.classes)?.unwrap_or(train.classes);
    Ok(Dataset {
        name: files::dir_name(root),
        classes,
        channels,
        height,
        width,
        train: split(train_files, train_labels)?,
        test: split(test_files, test_labels)?,
    })
}

//! IDX files (MNIST, Fashion-MNIST and relatives), plain or gzip-compressed.
//!
//! Format: a big-endian u32 magic `0x0000_08NN` (0x08 = unsigned bytes, NN = number of
//! dimensions), NN big-endian u32 dimensions, then the payload.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::dataset::{Dataset, Split};
use super::error::DataError;
use super::files::{self, check_labels, find_first};

const IMAGE_MAGIC: u32 = 0x0000_0803;
const LABEL_MAGIC: u32 = 0x0000_0801;

pub(crate) const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The four files of an IDX dataset, by their canonical names (without `.gz`).
pub(crate) const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Names under which `base` may appear: gzipped or not, and with the `.idx3` spelling that some
/// mirrors use instead of `-idx3`.
fn candidates(base: &str) -> Vec<String> {
    let dotted = base.replacen("-idx", ".idx", 1);
    [base.to_string(), dotted].into_iter().flat_map(|name| [format!("{name}.gz"), name]).collect()
}

fn locate(dir: &Path, base: &str) -> Result<PathBuf, DataError> {
    find_first(dir, &candidates(base))
        .ok_or_else(|| DataError::io(dir.join(format!("{base}[.gz]")), std::io::Error::new(std::io::ErrorKind::NotFound, "file not found")))
}

pub(crate) fn is_idx_dir(dir: &Path) -> bool {
    find_first(dir, &candidates(FILES[0])).is_some()
}

/// Gzip is detected by its magic bytes, not the file name: decompressed files are often left
/// with a `.gz` name and vice versa.
fn decompress_if_gzip(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| DataError::corrupt(path, format!("invalid gzip stream: {e}")))?;
    Ok(out)
}

/// Checks the magic and the sizes; returns the dimensions and the payload.
fn parse<'a>(path: &Path, bytes: &'a [u8], magic: u32) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let truncated = |expected: usize| DataError::Truncated { path: path.into(), expected, got: bytes.len() };
    let be_u32 = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 4 {
        return Err(truncated(4));
    }
    let found = be_u32(0);
    if found != magic {
        return Err(DataError::BadMagic { path: path.into(), found });
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(header));
    }
    let dims: Vec<usize> = (0..ndim).map(|d| be_u32(4 + 4 * d) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|payload| payload.checked_add(header))
        .ok_or_else(|| DataError::corrupt(path, format!("dimensions {dims:?} are too large")))?;
    if bytes.len() < expected {
        return Err(truncated(expected));
    }
    if bytes.len() > expected {
        let extra = bytes.len() - expected;
        return Err(DataError::corrupt(path, format!("{extra} bytes after the end of the {dims:?} payload")));
    }
    Ok((dims, &bytes[header..]))
}

struct Images {
    height: usize,
    width: usize,
    pixels: Vec<u8>,
    count: usize,
}

fn parse_images(path: &Path, bytes: Vec<u8>) -> Result<Images, DataError> {
    let bytes = decompress_if_gzip(path, bytes)?;
    let (dims, payload) = parse(path, &bytes, IMAGE_MAGIC)?;
    Ok(Images { count: dims[0], height: dims[1], width: dims[2], pixels: payload.to_vec() })
}

fn parse_labels(path: &Path, bytes: Vec<u8>) -> Result<Vec<u32>, DataError> {
    let bytes = decompress_if_gzip(path, bytes)?;
    let (_, payload) = parse(path, &bytes, LABEL_MAGIC)?;
    Ok(payload.iter().map(|&b| u32::from(b)).collect())
}

/// One split from its two files, given as (path, contents) so the embedded copy can share it.
fn parse_split(images: (&Path, Vec<u8>), labels: (&Path, Vec<u8>)) -> Result<(Images, Vec<u32>), DataError> {
    let parsed = parse_images(images.0, images.1)?;
    let label_values = parse_labels(labels.0, labels.1)?;
    if parsed.count != label_values.len() {
        return Err(DataError::CountMismatch {
            path_images: images.0.into(),
            path_labels: labels.0.into(),
            images: parsed.count,
            labels: label_values.len(),
        });
    }
    Ok((parsed, label_values))
}

/// Everything in an IDX dataset except where the bytes come from.
struct Sources<'a> {
    /// (path, contents) in the order of [`FILES`].
    files: [(&'a Path, Vec<u8>); 4],
    /// Class names if a `classes.txt` was found.
    classes: Option<Vec<String>>,
    /// Whether the default names should be Fashion-MNIST's.
    fashion: bool,
    name: String,
}

fn assemble(src: Sources<'_>) -> Result<Dataset, DataError> {
    let [train_images, train_labels, test_images, test_labels] = src.files;
    let test_images_path = test_images.0;
    let (train_labels_path, test_labels_path) = (train_labels.0, test_labels.0);
    let (train, train_y) = parse_split(train_images, train_labels)?;
    let (test, test_y) = parse_split(test_images, test_labels)?;
    if (test.height, test.width) != (train.height, train.width) {
        return Err(DataError::ShapeMismatch {
            path: test_images_path.into(),
            expected: (1, train.height, train.width),
            got: (1, test.height, test.width),
        });
    }
    let classes = match src.classes {
        Some(names) => names,
        None if src.fashion => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        None => {
            // Digits by default, but never fewer names than labels (e.g. EMNIST's 47 classes).
            let max_label = train_y.iter().chain(&test_y).copied().max().unwrap_or(0) as usize;
            (0..(max_label + 1).max(10)).map(|i| i.to_string()).collect()
        }
    };
    check_labels(train_labels_path, &train_y, classes.len())?;
    check_labels(test_labels_path, &test_y, classes.len())?;
    Ok(Dataset {
        name: src.name,
        classes,
        channels: 1,
        height: train.height,
        width: train.width,
        train: Split::in_memory(train.pixels, train_y),
        test: Split::in_memory(test.pixels, test_y),
    })
}

pub(crate) fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    let paths = FILES.iter().map(|base| locate(dir, base)).collect::<Result<Vec<_>, _>>()?;
    let read = |i: usize| files::read(&paths[i]).map(|bytes| (paths[i].as_path(), bytes));
    let classes = files::read_class_names(&dir.join("classes.txt"))?;
    let fashion_path = dir.to_string_lossy().to_lowercase().contains("fashion");
    let fashion_names = classes.as_deref().is_some_and(|c| c == FASHION_CLASSES);
    let name = if fashion_path || fashion_names { "fashion-mnist".to_string() } else { files::dir_name(dir) };
    assemble(Sources { files: [read(0)?, read(1)?, read(2)?, read(3)?], classes, fashion: fashion_path, name })
}

pub(crate) fn load_embedded() -> Result<Dataset, DataError> {
    macro_rules! asset {
        ($file:literal) => {
            (Path::new(concat!("embedded:", $file)), include_bytes!(concat!("../../assets/fashion-mnist-mini/", $file)).to_vec())
        };
    }
    let classes = include_str!("../../assets/fashion-mnist-mini/classes.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assemble(Sources {
        files: [
            asset!("train-images-idx3-ubyte.gz"),
            asset!("train-labels-idx1-ubyte.gz"),
            asset!("t10k-images-idx3-ubyte.gz"),
            asset!("t10k-labels-idx1-ubyte.gz"),
        ],
        classes: Some(classes),
        fashion: true,
        name: "fashion-mnist-mini".into(),
    })
}

//! CIFAR-10 and CIFAR-100 in their "binary version" layout.
//!
//! Each file is a sequence of fixed-size records: the label byte(s), then 3072 pixel bytes that are
//! already planar (1024 red, 1024 green, 1024 blue, each 32x32 row-major), i.e. CHW.

use std::path::Path;

use super::dataset::{Dataset, Split};
use super::error::DataError;
use super::files::{self, check_labels};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

const CIFAR10_CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

const CIFAR10_TRAIN: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];

pub(crate) fn is_cifar10_dir(dir: &Path) -> bool {
    dir.join(CIFAR10_TRAIN[0]).is_file() || dir.join("test_batch.bin").is_file()
}

pub(crate) fn is_cifar100_dir(dir: &Path) -> bool {
    dir.join("train.bin").is_file() && dir.join("test.bin").is_file()
}

/// Appends the records of one file to `split`. `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100:
/// coarse then fine); the last label byte is the one kept.
fn read_records(path: &Path, label_bytes: usize, classes: usize, images: &mut Vec<u8>, labels: &mut Vec<u32>) -> Result<(), DataError> {
    let bytes = files::read(path)?;
    let record = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(DataError::corrupt(path, "empty file, no records"));
    }
    if bytes.len() % record != 0 {
        return Err(DataError::Truncated { path: path.into(), expected: bytes.len().div_ceil(record) * record, got: bytes.len() });
    }
    let start = labels.len();
    for chunk in bytes.chunks_exact(record) {
        labels.push(u32::from(chunk[label_bytes - 1]));
        images.extend_from_slice(&chunk[label_bytes..]);
    }
    check_labels(path, &labels[start..], classes)
}

fn read_split(dir: &Path, names: &[&str], label_bytes: usize, classes: usize) -> Result<Split, DataError> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for name in names {
        read_records(&dir.join(name), label_bytes, classes, &mut images, &mut labels)?;
    }
    Ok(Split::in_memory(images, labels))
}

/// Class names from `file` if present, else `default`; a names file must list exactly `expected`.
fn class_names(dir: &Path, file: &str, expected: usize, default: Vec<String>) -> Result<Vec<String>, DataError> {
    let path = dir.join(file);
    match files::read_class_names(&path)? {
        None => Ok(default),
        Some(names) if names.len() == expected => Ok(names),
        Some(names) => Err(DataError::corrupt(&path, format!("{} class names, expected {expected}", names.len()))),
    }
}

fn dataset(name: &str, classes: Vec<String>, train: Split, test: Split) -> Dataset {
    Dataset { name: name.into(), classes, channels: 3, height: SIDE, width: SIDE, train, test }
}

pub(crate) fn load_cifar10(dir: &Path) -> Result<Dataset, DataError> {
    let default = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    let classes = class_names(dir, "batches.meta.txt", 10, default)?;
    let train = read_split(dir, &CIFAR10_TRAIN, 1, classes.len())?;
    let test = read_split(dir, &["test_batch.bin"], 1, classes.len())?;
    Ok(dataset("cifar10", classes, train, test))
}

pub(crate) fn load_cifar100(dir: &Path) -> Result<Dataset, DataError> {
    let default = (0..100).map(|i| format!("class_{i}")).collect();
    let classes = class_names(dir, "fine_label_names.txt", 100, default)?;
    let train = read_split(dir, &["train.bin"], 2, classes.len())?;
    let test = read_split(dir, &["test.bin"], 2, classes.len())?;
    Ok(dataset("cifar100", classes, train, test))
}

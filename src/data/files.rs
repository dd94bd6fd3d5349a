//! Small file helpers shared by the loaders; all of them turn failures into path-naming errors.

use std::path::{Path, PathBuf};

use super::error::DataError;

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// The first of `candidates` (file names inside `dir`) that exists.
pub(crate) fn find_first(dir: &Path, candidates: &[String]) -> Option<PathBuf> {
    candidates.iter().map(|name| dir.join(name)).find(|p| p.is_file())
}

/// Class names from a text file with one name per line; blank lines are ignored so that a
/// trailing newline (or the blank tail of CIFAR's `batches.meta.txt`) does not add a class.
/// `Ok(None)` when the file does not exist.
pub(crate) fn read_class_names(path: &Path) -> Result<Option<Vec<String>>, DataError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|line| !line.is_empty()).map(String::from).collect();
    if names.is_empty() {
        return Err(DataError::corrupt(path, "no class names in file"));
    }
    Ok(Some(names))
}

/// Rejects any label that has no class name, naming the label file.
pub(crate) fn check_labels(path: &Path, labels: &[u32], classes: usize) -> Result<(), DataError> {
    match labels.iter().find(|&&label| label as usize >= classes) {
        Some(&label) => Err(DataError::LabelOutOfRange { path: path.into(), label, classes }),
        None => Ok(()),
    }
}

/// The last component of `dir` as a dataset name ("data" when there is none, e.g. for "/").
pub(crate) fn dir_name(dir: &Path) -> String {
    // canonicalize so that "." or "foo/.." still give a meaningful name.
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into())
}

//! File helpers: every write goes to a temporary file in the same directory and is renamed into
//! place, so a crash never leaves a half-written checkpoint or report behind.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DaceError, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DaceError::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| DaceError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DaceError::io(path, e))
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| DaceError::bad_file(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &text)
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DaceError::io(path, e))
}

/// A file's bytes: memory-mapped on native targets, so that a multi-gigabyte weights file is paged
/// in by the OS as it is hashed and read instead of copied whole into memory; owned bytes otherwise
/// (the browser hands dace fetched bytes).
pub enum FileBytes {
    Owned(Vec<u8>),
    #[cfg(not(target_family = "wasm"))]
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Owned(v) => v,
            #[cfg(not(target_family = "wasm"))]
            FileBytes::Mapped(m) => m,
        }
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(v: Vec<u8>) -> Self {
        FileBytes::Owned(v)
    }
}

/// The bytes of `path` (the browser build has no memory maps).
#[cfg(target_family = "wasm")]
pub fn map(path: &Path) -> Result<FileBytes> {
    read(path).map(FileBytes::Owned)
}

/// The bytes of `path`, memory-mapped (see [`FileBytes`]).
#[cfg(not(target_family = "wasm"))]
pub fn map(path: &Path) -> Result<FileBytes> {
    let file = std::fs::File::open(path).map_err(|e| DaceError::io(path, e))?;
    let len = file.metadata().map_err(|e| DaceError::io(path, e))?.len();
    if len == 0 {
        // An empty file cannot be mapped on every platform; its reader refuses it by name.
        return Ok(FileBytes::Owned(Vec::new()));
    }
    // SAFETY: the map is only read. dace never writes a file while it holds a map of it (every
    // write goes to a new file renamed into place, see `write_atomic`); a file truncated by
    // another process while mapped is the same hazard burn-store's own file reader accepts.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DaceError::io(path, e))?;
    Ok(FileBytes::Mapped(map))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| DaceError::bad_file(path, format!("invalid JSON: {e}")))
}

/// A hidden sibling of `dir` for temporary work (`.NAME.TAGpid`), on the same file system so
/// it can be renamed into place.
pub fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dir".into());
    dir.with_file_name(format!(".{name}.{tag}{}", std::process::id()))
}

/// Renames `from` over `to`; an existing `to` is moved aside first and removed after.
pub fn replace_dir(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DaceError::io(parent, e))?;
    }
    let old = sibling(to, "old");
    let had_old = to.exists();
    if had_old {
        std::fs::rename(to, &old).map_err(|e| DaceError::io(to, e))?;
    }
    std::fs::rename(from, to).map_err(|e| DaceError::io(to, e))?;
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

//! File helpers: every write goes to a temporary file in the same directory and is renamed into
//! place, so a crash never leaves a half-written checkpoint or report behind.

use std::path::Path;

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
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| DaceError::bad_file(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &text)
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DaceError::io(path, e))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| DaceError::bad_file(path, format!("invalid JSON: {e}")))
}

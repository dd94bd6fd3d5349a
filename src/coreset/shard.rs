//! Coreset shards (`dace coreset --shard i/n`): the classes of one selection split over
//! processes or machines, joined back into the coreset a single run selects.
//!
//! A class's patches depend on its class, the settings, the data and the teacher only (its
//! source pool is seeded by the class), so joining the shards' classes in class order gives the
//! single run's patches and patch list exactly.

use std::path::PathBuf;

use super::{Coreset, CoresetMeta};
use crate::error::{DaceError, Result};

/// Joins coreset shards (any order) into the whole coreset. Refuses shards of another dataset,
/// settings or teacher, shards that share a class and a set that leaves a class out, naming
/// the shard.
pub fn merge(shards: &[(PathBuf, Coreset)]) -> Result<Coreset> {
    let (first_dir, first) = shards.first().ok_or_else(|| DaceError::Invalid("no coreset shards to merge".into()))?;
    let first = &first.meta;
    let mut owner: Vec<Option<usize>> = vec![None; first.classes.len()];
    for (k, (dir, shard)) in shards.iter().enumerate() {
        let m = &shard.meta;
        let classes = m.shard.as_ref().ok_or_else(|| bad(dir, "is a whole coreset, not a shard"))?;
        if let Some(what) = difference(first, m) {
            return Err(bad(dir, &format!("differs from {} in its {what}", first_dir.display())));
        }
        for &class in classes {
            if let Some(other) = owner[class as usize].replace(k) {
                let name = &first.classes[class as usize];
                return Err(bad(dir, &format!("shares class `{name}` with {}", shards[other].0.display())));
            }
        }
    }
    if let Some(missing) = owner.iter().position(Option::is_none) {
        return Err(DaceError::Invalid(format!("no shard holds class `{}`: the shards do not cover the classes", first.classes[missing])));
    }
    let mut meta = CoresetMeta { patches: Vec::new(), mipc_used: usize::MAX, teacher_evals: 0, seconds: 0.0, shard: None, ..first.clone() };
    let mut patches = Vec::new();
    for (class, owner) in owner.iter().enumerate() {
        let shard = &shards[owner.expect("every class has an owner")].1;
        for i in shard.class_patches(class as u32) {
            meta.patches.push(shard.meta.patches[i].clone());
            patches.extend_from_slice(shard.patch(i));
        }
    }
    for (_, shard) in shards {
        meta.mipc_used = meta.mipc_used.min(shard.meta.mipc_used);
        meta.teacher_evals += shard.meta.teacher_evals;
        meta.seconds += shard.meta.seconds;
    }
    Ok(Coreset { meta, patches })
}

/// The first field in which two shards' selections differ, if any.
fn difference(a: &CoresetMeta, b: &CoresetMeta) -> Option<&'static str> {
    let same_config = serde_json::to_value(&a.config).ok() == serde_json::to_value(&b.config).ok();
    [
        (a.format == b.format, "format"),
        (a.dataset == b.dataset, "dataset"),
        (a.classes == b.classes, "class names"),
        (a.channels == b.channels && a.image_size == b.image_size && a.patch_size == b.patch_size, "image and patch sizes"),
        (same_config, "settings (ipc, factor, crops, mipc, seed)"),
        (a.teacher == b.teacher, "teacher"),
    ]
    .into_iter()
    .find(|(same, _)| !same)
    .map(|(_, what)| what)
}

fn bad(dir: &std::path::Path, why: &str) -> DaceError {
    DaceError::Invalid(format!("coreset shard {}: {why}", dir.display()))
}

//! The scaffold both experiment grids share: per-IPC epochs, coresets and student runs reused
//! from disk when they were made with an equal configuration, and mean ± std cells. An
//! interrupted grid reruns only what it had not finished.

use std::path::Path;

use serde::Serialize;

use super::stats::MeanStd;
use crate::coreset::{self, Coreset, CoresetConfig};
use crate::data::Dataset;
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::DaceBackend;
use crate::models::Classifier;
use crate::student::StudentReport;
use crate::train::ModelMeta;

/// Checks `--epochs` against the IPCs: one value for all, or one per IPC.
pub fn check_epochs(epochs: &[usize], ipcs: usize) -> Result<()> {
    if epochs.is_empty() || (epochs.len() != 1 && epochs.len() != ipcs) {
        return Err(DaceError::Invalid(format!("--epochs needs one value or one per IPC ({ipcs} IPCs), got {}", epochs.len())));
    }
    Ok(())
}

/// The student epochs of IPC number `i` (after [`check_epochs`]).
pub fn epochs_for(epochs: &[usize], i: usize) -> usize {
    epochs[if epochs.len() == 1 { 0 } else { i }]
}

/// Equal once serialised: configs whose types do not implement `PartialEq`.
pub fn same_json<A: Serialize, B: Serialize>(a: &A, b: &B) -> bool {
    matches!((serde_json::to_value(a), serde_json::to_value(b)), (Ok(x), Ok(y)) if x == y)
}

/// The coreset in `dir` when it was selected the same way, from the same data, by the same
/// teacher (`teacher_id`, its checkpoint fingerprint); otherwise a new selection, saved there.
pub fn cached_coreset<B: DaceBackend>(
    dir: &Path,
    ds: &Dataset,
    teacher: (&Classifier<B>, &ModelMeta, &str),
    config: &CoresetConfig,
    device: &B::Device,
) -> Result<Coreset> {
    let (model, meta, teacher_id) = teacher;
    let cached =
        Coreset::load(dir).ok().filter(|c| same_json(&c.meta.config, config) && c.meta.dataset == ds.name && c.meta.teacher == teacher_id);
    if let Some(c) = cached {
        return Ok(c);
    }
    eprintln!("{}: selecting the coreset", dir.display());
    let mut c = coreset::select(ds, model, meta, config, device)?;
    c.meta.teacher = teacher_id.to_string();
    c.save(dir)?;
    Ok(c)
}

/// The student runs of one cell, seeds `0..seeds`: `runs/{name}-seed{s}/report.json` is reused
/// when `reusable` accepts it, otherwise `train(seed)` runs and its report is written there.
pub fn student_runs(
    out: &Path,
    name: &str,
    seeds: usize,
    reusable: &dyn Fn(&StudentReport, u64) -> bool,
    train: &mut dyn FnMut(u64) -> Result<StudentReport>,
) -> Result<Vec<StudentReport>> {
    let mut runs = Vec::with_capacity(seeds);
    for seed in 0..seeds as u64 {
        let dir = out.join("runs").join(format!("{name}-seed{seed}"));
        let path = dir.join("report.json");
        if let Ok(r) = fsio::read_json::<StudentReport>(&path) {
            if reusable(&r, seed) {
                runs.push(r);
                continue;
            }
        }
        let r = train(seed)?;
        eprintln!("{name} seed {seed}: final test accuracy {:.2}% ({:.0} s)", r.final_accuracy, r.seconds);
        std::fs::create_dir_all(&dir).map_err(|e| DaceError::io(&dir, e))?;
        fsio::write_json(&path, &r)?;
        runs.push(r);
    }
    Ok(runs)
}

/// Final and best accuracies of a cell's runs, each with its mean ± std.
pub struct CellAccuracy {
    pub finals: Vec<f64>,
    pub bests: Vec<f64>,
    pub final_stats: Option<MeanStd>,
    pub best_stats: Option<MeanStd>,
}

impl CellAccuracy {
    pub fn of(runs: &[StudentReport]) -> Self {
        let finals: Vec<f64> = runs.iter().map(|r| r.final_accuracy).collect();
        let bests: Vec<f64> = runs.iter().map(|r| r.best_accuracy).collect();
        CellAccuracy { final_stats: MeanStd::of(&finals), best_stats: MeanStd::of(&bests), finals, bests }
    }
}

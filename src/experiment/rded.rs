//! `dace experiment rded`: the RDED baseline grid (IPC x r) with the random-subset baselines and
//! the whole-data upper bound, under the honest protocol: final-epoch test accuracy, mean ± std
//! over student seeds; best-of-run only as an extra column.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::grid::{cached_coreset, check_epochs, epochs_for, same_json, student_runs, CellAccuracy};
use super::stats::MeanStd;
use crate::coreset::{CoresetConfig, Layout};
use crate::data::Dataset;
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::TrainBackend;
use crate::models::{Arch, Classifier, ClassifierConfig, NormKind};
use crate::package::AugmentConfig;
use crate::student::{self, LabelSource, Labels, StoredLabels, StudentConfig, StudentReport, TrainingSet};
use crate::train::{self, ModelMeta, Normalization, TeacherReport};
use crate::viz::{self, Series};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RdedGridConfig {
    pub ipcs: Vec<usize>,
    pub factors: Vec<usize>,
    /// Student epochs per IPC (same order as `ipcs`).
    pub epochs: Vec<usize>,
    pub student_seeds: usize,
    pub crops: usize,
    pub mipc: usize,
    pub coreset_seed: u64,
    pub layout: Layout,
    /// Soft-label source of the RDED and random-soft cells: online or stored.
    pub labels: LabelSource,
    pub temperature: f64,
    /// Smallest RandomResizedCrop area fraction; `None`: RDED's 1/r per cell (1 = no crop for the
    /// random-subset baselines).
    pub crop_scale_min: Option<f32>,
    pub flip: bool,
    pub baselines: bool,
    pub arch: Arch,
    pub norm: NormKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    RandomHard,
    RandomSoft,
    Rded,
}

impl Method {
    fn label(self, factor: usize) -> String {
        match self {
            Method::RandomHard => "random real, hard labels".into(),
            Method::RandomSoft => "random real, teacher soft labels".into(),
            Method::Rded => format!("RDED r={factor}"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    pub name: String,
    pub method: Method,
    pub label: String,
    pub ipc: usize,
    pub factor: usize,
    pub epochs: usize,
    pub train_images: usize,
    pub final_accuracy: Vec<f64>,
    pub best_accuracy: Vec<f64>,
    pub final_stats: Option<MeanStd>,
    pub best_stats: Option<MeanStd>,
    /// Wall time of the student runs (sum over seeds), coreset selection and label precomputation.
    pub student_seconds: f64,
    pub prep_seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GridReport {
    pub command: String,
    pub dataset: String,
    pub teacher: String,
    /// Whole-data upper bound: the teacher (same architecture, full training set, hard labels).
    pub teacher_accuracy: Option<f64>,
    pub config: RdedGridConfig,
    pub cells: Vec<CellResult>,
    pub finished: bool,
}

fn cell_name(method: Method, ipc: usize, factor: usize) -> String {
    match method {
        Method::RandomHard => format!("random-hard-ipc{ipc}"),
        Method::RandomSoft => format!("random-soft-ipc{ipc}"),
        Method::Rded => format!("rded-ipc{ipc}-r{factor}"),
    }
}

/// The grid's cells of one IPC, in table order: the random-subset baselines, then RDED per r.
fn methods(config: &RdedGridConfig) -> Vec<(Method, usize)> {
    let mut cells: Vec<(Method, usize)> = Vec::new();
    if config.baselines {
        cells.push((Method::RandomHard, 1));
        cells.push((Method::RandomSoft, 1));
    }
    cells.extend(config.factors.iter().map(|&r| (Method::Rded, r)));
    cells
}

/// What every cell of one grid shares: the data, the teacher and where results go.
struct GridContext<'a, B: TrainBackend> {
    ds: &'a Dataset,
    config: &'a RdedGridConfig,
    teacher: Classifier<B::InnerBackend>,
    norm: Normalization,
    meta: ModelMeta,
    /// The teacher checkpoint's fingerprint, recorded in coresets and stored labels.
    teacher_id: String,
    out: &'a Path,
    device: &'a B::Device,
}

/// Runs (or resumes) the grid into `out`.
pub fn run_grid<B: TrainBackend>(
    ds: &Dataset,
    teacher_dir: &Path,
    config: &RdedGridConfig,
    command: String,
    out: &Path,
    device: &B::Device,
) -> Result<GridReport> {
    check_epochs(&config.epochs, config.ipcs.len())?;
    if config.labels == LabelSource::Hard {
        return Err(DaceError::Invalid("the RDED grid uses soft labels: --labels online or stored".into()));
    }
    let (teacher, meta) = train::load_model::<B::InnerBackend>(teacher_dir, device)?;
    train::teacher::check_fits(&meta.config, ds)?;
    let teacher_accuracy = fsio::read_json::<TeacherReport>(&teacher_dir.join(train::teacher::REPORT_FILE))
        .ok()
        .and_then(|r| r.final_eval.map(|e| e.accuracy));
    let teacher_id = train::checkpoint::fingerprint(teacher_dir)?;
    let mut report = GridReport {
        command,
        dataset: ds.name.clone(),
        teacher: teacher_dir.display().to_string(),
        teacher_accuracy,
        config: config.clone(),
        cells: Vec::new(),
        finished: false,
    };
    let ctx = GridContext::<B> { ds, config, teacher, norm: meta.normalization.clone(), meta, teacher_id, out, device };
    for (i, &ipc) in config.ipcs.iter().enumerate() {
        let epochs = epochs_for(&config.epochs, i);
        for (method, factor) in methods(config) {
            let cell = ctx.run_cell(method, ipc, factor, epochs)?;
            report.cells.retain(|c| c.name != cell.name);
            report.cells.push(cell);
            write_outputs(&report, &runs_dir(out), out)?;
        }
    }
    report.finished = true;
    write_outputs(&report, &runs_dir(out), out)?;
    Ok(report)
}

impl<B: TrainBackend> GridContext<'_, B> {
    /// The students of one cell (reused from disk where finished), with their mean ± std.
    fn run_cell(&self, method: Method, ipc: usize, factor: usize, epochs: usize) -> Result<CellResult> {
        let (config, ds) = (self.config, self.ds);
        let name = cell_name(method, ipc, factor);
        let prep_start = Instant::now();
        let set = self.training_set(method, ipc, factor)?;
        let augment = AugmentConfig {
            crop_scale_min: config.crop_scale_min.unwrap_or(1.0 / factor as f32),
            flip: config.flip,
            cutmix: method != Method::RandomHard,
            shuffle_factor: if method == Method::Rded && config.layout == Layout::Collage { factor } else { 1 },
        };
        let stored = if method != Method::RandomHard && config.labels == LabelSource::Stored {
            Some(self.stored_labels(&name, &set, &augment, epochs)?)
        } else {
            None
        };
        let prep_seconds = prep_start.elapsed().as_secs_f64();
        let model = ClassifierConfig::new(config.arch, ds.channels, ds.num_classes(), [ds.height, ds.width]).with_norm(config.norm);
        let batch = student::rded_batch_size(ipc, ds.num_classes(), set.len());
        let student_config = |seed| StudentConfig::rded(model.clone(), epochs, batch, config.temperature, augment.clone(), seed);
        let source = if method == Method::RandomHard { LabelSource::Hard } else { config.labels };
        // A finished run is reused only if it trained exactly this configuration on exactly
        // this set with the same kind of labels.
        let reusable =
            |r: &StudentReport, seed| same_json(&r.config, &student_config(seed)) && r.set == set.description && r.labels == source;
        let mut train = |seed| {
            let labels = match (&stored, method) {
                (_, Method::RandomHard) => Labels::Hard,
                (Some(s), _) => Labels::Stored(s),
                (None, _) => Labels::Online(&self.teacher),
            };
            student::train_student::<B>(&student_config(seed), &set, labels, &self.norm, ds, self.device)
        };
        let runs = student_runs(self.out, &name, config.student_seeds, &reusable, &mut train)?;
        let acc = CellAccuracy::of(&runs);
        Ok(CellResult {
            name,
            method,
            label: method.label(factor),
            ipc,
            factor,
            epochs,
            train_images: set.len(),
            final_stats: acc.final_stats,
            best_stats: acc.best_stats,
            final_accuracy: acc.finals,
            best_accuracy: acc.bests,
            student_seconds: runs.iter().map(|r| r.seconds).sum(),
            prep_seconds,
        })
    }

    /// An RDED coreset (selected once, with a preview grid) or a random real subset.
    fn training_set(&self, method: Method, ipc: usize, factor: usize) -> Result<TrainingSet> {
        let config = self.config;
        if method != Method::Rded {
            return TrainingSet::random_subset(self.ds, ipc, config.coreset_seed);
        }
        let dir = self.out.join("coresets").join(format!("ipc{ipc}-r{factor}"));
        let cc = CoresetConfig { ipc, factor, crops: config.crops, mipc: config.mipc, seed: config.coreset_seed };
        let coreset = cached_coreset(&dir, self.ds, (&self.teacher, &self.meta, &self.teacher_id), &cc, self.device)?;
        let set = TrainingSet::from_coreset(&coreset, config.layout)?;
        let preview = dir.join(format!("{:?}.png", config.layout).to_lowercase());
        viz::write_grid(&preview, &set.images, set.channels, set.height, set.width, ipc.clamp(1, 10), 56)?;
        Ok(set)
    }

    /// The teacher's labels for one label per epoch, reused from disk when made for this set,
    /// these augmentations and seeds, by this teacher.
    fn stored_labels(&self, name: &str, set: &TrainingSet, augment: &AugmentConfig, epochs: usize) -> Result<StoredLabels> {
        let dir = self.out.join("labels").join(name);
        let seeds: Vec<u64> = (0..epochs as u64).collect();
        let existing = StoredLabels::load(&dir)
            .ok()
            .filter(|l| l.check_fits(set, augment).is_ok() && l.meta.seeds == seeds && l.meta.teacher == self.teacher_id);
        if let Some(l) = existing {
            return Ok(l);
        }
        eprintln!("{name}: teacher soft labels for {} items x {epochs} seeds", set.len());
        let mut l = StoredLabels::compute(set, &self.teacher, &self.norm, augment, seeds, self.device)?;
        l.meta.teacher = self.teacher_id.clone();
        l.save(&dir)?;
        Ok(l)
    }
}

fn runs_dir(out: &Path) -> PathBuf {
    out.join("runs")
}

/// results.json, results.md, accuracy_vs_r.png and one learning-curve plot per IPC.
pub fn write_outputs(report: &GridReport, runs: &Path, out: &Path) -> Result<()> {
    fsio::write_json(&out.join("results.json"), report)?;
    fsio::write_atomic(&out.join("results.md"), markdown(report).as_bytes())?;
    let ipcs = &report.config.ipcs;
    let mut series = Vec::new();
    for &ipc in ipcs {
        let pts: Vec<(f64, f64)> = report
            .cells
            .iter()
            .filter(|c| c.method == Method::Rded && c.ipc == ipc)
            .filter_map(|c| c.final_stats.map(|s| (c.factor as f64, s.mean)))
            .collect();
        if !pts.is_empty() {
            series.push(Series { name: format!("RDED IPC {ipc}"), points: pts, dashed: false });
        }
        for m in [Method::RandomSoft, Method::RandomHard] {
            if let Some(s) = report.cells.iter().find(|c| c.method == m && c.ipc == ipc).and_then(|c| c.final_stats) {
                let (lo, hi) =
                    (*report.config.factors.iter().min().unwrap_or(&1) as f64, *report.config.factors.iter().max().unwrap_or(&1) as f64);
                series.push(Series { name: format!("{} IPC {ipc}", m.label(1)), points: vec![(lo, s.mean), (hi, s.mean)], dashed: true });
            }
        }
    }
    if !series.is_empty() {
        let title = format!("{}: student test accuracy vs patch factor r (final epoch, mean of seeds)", report.dataset);
        viz::line_plot(&out.join("accuracy_vs_r.png"), &title, "r (patches are H/r x W/r)", "test accuracy (%)", &series)?;
    }
    for &ipc in ipcs {
        let mut curves = Vec::new();
        for c in report.cells.iter().filter(|c| c.ipc == ipc) {
            let path = runs.join(format!("{}-seed0", c.name)).join("report.json");
            if let Ok(r) = fsio::read_json::<StudentReport>(&path) {
                let pts = r.history.iter().filter_map(|p| p.test_accuracy.map(|a| (p.epoch as f64, a))).collect();
                curves.push(Series { name: c.label.clone(), points: pts, dashed: false });
            }
        }
        if !curves.is_empty() {
            let title = format!("{} IPC {ipc}: test accuracy during training (seed 0)", report.dataset);
            viz::line_plot(&out.join(format!("curves_ipc{ipc}.png")), &title, "epoch", "test accuracy (%)", &curves)?;
        }
    }
    Ok(())
}

pub fn markdown(report: &GridReport) -> String {
    let cfg = &report.config;
    let n = cfg.student_seeds;
    let rows = methods(cfg);
    let mut s = String::new();
    s += &format!(
        "{} — {} student ({:?} norm) test accuracy (%), final epoch, mean ± std over {n} student seeds{}\n\n",
        report.dataset,
        cfg.arch.name(),
        cfg.norm,
        if report.finished { "" } else { " — PARTIAL (grid still running)" }
    );
    let header = |s: &mut String| {
        *s += "| method |";
        for ipc in &cfg.ipcs {
            *s += &format!(" IPC {ipc} |");
        }
        *s += "\n|---|";
        for _ in &cfg.ipcs {
            *s += "---|";
        }
        *s += "\n";
    };
    let table = |s: &mut String, best: bool| {
        header(s);
        for &(m, r) in &rows {
            *s += &format!("| {} |", m.label(r));
            for &ipc in &cfg.ipcs {
                let cell = report.cells.iter().find(|c| c.method == m && c.ipc == ipc && (m != Method::Rded || c.factor == r));
                let stat = cell.and_then(|c| if best { c.best_stats } else { c.final_stats });
                *s += &format!(" {} |", stat.map(|st| st.show(n)).unwrap_or_else(|| "—".into()));
            }
            *s += "\n";
        }
        if let Some(acc) = report.teacher_accuracy {
            *s += "| whole data (the teacher, trained on the full set) |";
            for _ in &cfg.ipcs {
                *s += &format!(" {acc:.2} |");
            }
            *s += "\n";
        }
    };
    table(&mut s, false);
    s += "\nBest evaluation over the last 20 % of epochs (RDED's reporting; an extra view, not the headline; evaluations before the last epoch use a 2,000-image test subset):\n\n";
    table(&mut s, true);
    s += "\n| cell | epochs | train images | student wall time (all seeds) | coreset + labels time |\n|---|---|---|---|---|\n";
    for c in &report.cells {
        s += &format!("| {} | {} | {} | {:.0} s | {:.0} s |\n", c.name, c.epochs, c.train_images, c.student_seconds, c.prep_seconds);
    }
    s += &format!(
        "\nSettings: layout {:?}, labels {:?}, T = {}, crops {}, mipc {}, RandomResizedCrop scale ({}, 1), flip {}, CutMix on soft-label cells, AdamW lr 1e-3 wd 0.01 (no decay on biases/norms), cosine-to-half schedule, RDED batch sizes.\n",
        cfg.layout, cfg.labels, cfg.temperature, cfg.crops, cfg.mipc, cfg.crop_scale_min.map(|s| s.to_string()).unwrap_or_else(|| "1/r".into()), cfg.flip
    );
    s
}

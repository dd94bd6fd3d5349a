//! `dace experiment expansion`: the paper's experiments (ablation, patch-size sweep, main table,
//! cross-architecture) as one resumable grid over IPC x r x variant x student architecture.
//!
//! Each (IPC, r, variant) is distilled into a real package under `out/packages/`, then every
//! student trains from that package exactly as a receiver would: images regenerated from the
//! seeds, targets the stored labels. The expansions the distillation made are reused in memory
//! for the students only after regenerating seed 0 from the package proved bit-identical; a
//! resumed grid regenerates everything from the package.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::grid::{cached_coreset, check_epochs, epochs_for, same_json, student_runs, CellAccuracy};
use super::stats::MeanStd;
use crate::coreset::{Coreset, CoresetConfig};
use crate::data::Dataset;
use crate::distill::{self, write_preview, DistillReport};
use crate::error::{DaceError, Result};
use crate::expand::Regenerator;
use crate::fsio;
use crate::kernels::diffusion::DiffusionKernels;
use crate::kernels::{DaceBackend, TrainBackend};
use crate::models::{Arch, Classifier, NormKind};
use crate::package::{
    AugmentConfig, ExpandConfig, LabelEncoding, Manifest, Package, PackageSettings, PriorRef, SchedulerKind, TeacherRef, Variant,
};
use crate::prior::bundle::Prior;
use crate::student::package::{regenerator, student_config, train_on_package};
use crate::student::{StudentReport, TrainingSet};
use crate::train::{self, ModelMeta};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpansionGridConfig {
    pub ipcs: Vec<usize>,
    pub factors: Vec<usize>,
    pub variants: Vec<Variant>,
    /// Student epochs per IPC (one value, or one per IPC).
    pub epochs: Vec<usize>,
    pub archs: Vec<Arch>,
    pub norm: NormKind,
    pub student_seeds: usize,
    /// Seeds per patch: `min(epochs, max_expansions / patches)` (at least 1); the `rded` variant
    /// costs nothing to regenerate and gets one seed per epoch.
    pub max_expansions: usize,
    pub crops: usize,
    pub mipc: usize,
    pub coreset_seed: u64,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    pub gamma: [f32; 2],
    pub guidance: f32,
    /// rho of the sr-aug / sr-aug-mixup variants (sr is always 0.4).
    pub rho: f64,
    pub augment: AugmentConfig,
    pub labels: LabelEncoding,
    pub batch: usize,
    pub temperature: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub name: String,
    pub variant: Variant,
    pub ipc: usize,
    pub factor: usize,
    pub arch: Arch,
    pub epochs: usize,
    pub patches: usize,
    /// Seeds per patch (m).
    pub seeds: usize,
    pub final_accuracy: Vec<f64>,
    pub best_accuracy: Vec<f64>,
    pub final_stats: Option<MeanStd>,
    pub best_stats: Option<MeanStd>,
    pub package_bytes: u64,
    pub ipc_budget_bytes: u64,
    /// From the distillation that made the package (absent when it was reused from disk).
    pub distill_seconds: Option<f64>,
    pub expansions_per_s: Option<f64>,
    pub label_argmax_is_class: Option<f64>,
    /// Seed 0 regenerated from the package equals the distillation's images.
    pub regeneration_bit_identical: Option<bool>,
    pub student_seconds: f64,
    pub regen_seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpansionReport {
    pub command: String,
    pub dataset: String,
    pub teacher: String,
    pub teacher_accuracy: Option<f64>,
    pub prior: String,
    pub prior_fingerprint: String,
    pub config: ExpansionGridConfig,
    pub cells: Vec<Cell>,
    pub finished: bool,
}

impl ExpansionGridConfig {
    fn expansion(&self, v: Variant) -> ExpandConfig {
        let mut c = ExpandConfig::variant(v, self.steps, self.scheduler, self.gamma);
        c.guidance = self.guidance;
        if matches!(v, Variant::SrAug | Variant::SrAugMixup) {
            c.rho = self.rho;
        }
        c
    }
}

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// What every cell of one grid shares: the data, the teacher, the prior and where results go.
struct GridContext<'a, B: TrainBackend>
where
    Inner<B>: DiffusionKernels,
{
    ds: &'a Dataset,
    config: &'a ExpansionGridConfig,
    teacher: Classifier<Inner<B>>,
    meta: ModelMeta,
    teacher_ref: TeacherRef,
    prior: Prior<Inner<B>>,
    out: &'a Path,
    device: &'a B::Device,
}

/// One package of the grid: a variant distilled from one coreset.
struct PackageCell<'p, B: TrainBackend>
where
    Inner<B>: DiffusionKernels,
{
    name: String,
    variant: Variant,
    ipc: usize,
    factor: usize,
    epochs: usize,
    pkg: Package,
    /// The report of the distillation when this run made the package (not when reused).
    distilled: Option<DistillReport>,
    /// Seed 0 regenerated from the package equals the distillation's images.
    identical: Option<bool>,
    patches: usize,
    regen: Regenerator<'p, Inner<B>>,
}

/// Runs (or resumes) the grid into `out`.
pub fn run_grid<B: TrainBackend>(
    ds: &Dataset,
    teacher_dir: &Path,
    prior_dir: &Path,
    config: &ExpansionGridConfig,
    command: String,
    out: &Path,
    device: &B::Device,
) -> Result<ExpansionReport>
where
    Inner<B>: DiffusionKernels,
{
    check_epochs(&config.epochs, config.ipcs.len())?;
    let (teacher, meta) = train::load_model::<Inner<B>>(teacher_dir, device)?;
    train::teacher::check_fits(&meta.config, ds)?;
    let teacher_ref = distill::teacher_ref(teacher_dir, &meta)?;
    let prior = Prior::<Inner<B>>::load(prior_dir, device)?;
    let mut report = ExpansionReport {
        command,
        dataset: ds.name.clone(),
        teacher: teacher_dir.display().to_string(),
        teacher_accuracy: teacher_ref.test_accuracy,
        prior: prior_dir.display().to_string(),
        prior_fingerprint: prior.fingerprint.clone(),
        config: config.clone(),
        cells: Vec::new(),
        finished: false,
    };
    // Earlier results of this grid stay in the report while it resumes.
    if let Ok(old) = fsio::read_json::<ExpansionReport>(&out.join("results.json")) {
        report.cells = old.cells;
    }
    let ctx = GridContext::<B> { ds, config, teacher, meta, teacher_ref, prior, out, device };
    for (i, &ipc) in config.ipcs.iter().enumerate() {
        let epochs = epochs_for(&config.epochs, i);
        for &factor in &config.factors {
            let cdir = out.join("coresets").join(format!("ipc{ipc}-r{factor}"));
            let cc = CoresetConfig { ipc, factor, crops: config.crops, mipc: config.mipc, seed: config.coreset_seed };
            let coreset = cached_coreset(&cdir, ds, (&ctx.teacher, &ctx.meta, &ctx.teacher_ref.fingerprint), &cc, device)?;
            for &variant in &config.variants {
                let mut cell = ctx.package_cell(&coreset, variant, ipc, factor, epochs)?;
                for &arch in &config.archs {
                    ctx.student_cell(&mut cell, arch, &mut report)?;
                    fsio::write_json(&out.join("results.json"), &report)?;
                    write_plots(&report, out)?;
                }
            }
        }
    }
    report.finished = true;
    fsio::write_json(&out.join("results.json"), &report)?;
    Ok(report)
}

impl<'a, B: TrainBackend> GridContext<'a, B>
where
    Inner<B>: DiffusionKernels,
{
    /// Seeds per patch: the `rded` variant costs nothing to regenerate and gets one per epoch.
    fn seeds_per_patch(&self, variant: Variant, epochs: usize, patches: usize) -> usize {
        if variant == Variant::Rded {
            epochs
        } else {
            epochs.min((self.config.max_expansions / patches.max(1)).max(1))
        }
    }

    fn manifest(&self, coreset: &Coreset, variant: Variant, seeds: usize) -> Result<Manifest> {
        let settings = PackageSettings {
            expansion: self.config.expansion(variant),
            augment: self.config.augment.clone(),
            seeds: (0..seeds as u64).collect(),
            labels: self.config.labels,
            batch: self.config.batch,
            // The prior works at its own size (recorded only where that is not the student's).
            prior_size: (variant != Variant::Rded).then(|| self.prior.image_size()),
        };
        let prior = (variant != Variant::Rded).then_some(PriorRef::of(&self.prior));
        Manifest::new(&coreset.meta, settings, self.teacher_ref.clone(), self.meta.normalization.clone(), prior)
    }

    /// The package of one (IPC, r, variant): reused from disk when its manifest and patches are
    /// the ones this grid would write, otherwise distilled. A fresh distillation's images are kept
    /// for the students once seed 0 regenerated from the package proved bit-identical.
    fn package_cell(&self, coreset: &Coreset, variant: Variant, ipc: usize, factor: usize, epochs: usize) -> Result<PackageCell<'_, B>> {
        let n = coreset.meta.patches.len();
        let m = self.seeds_per_patch(variant, epochs, n);
        let name = format!("{}-ipc{ipc}-r{factor}", variant.name());
        let pdir = self.out.join("packages").join(&name);
        let manifest = self.manifest(coreset, variant, m)?;
        let use_prior = (variant != Variant::Rded).then_some(&self.prior);
        let cached = Package::load(&pdir).ok().filter(|p| {
            let mut m = p.manifest.clone();
            m.files.clear();
            m == manifest && p.patches == coreset.patches
        });
        let mut kept: Vec<Arc<Vec<u8>>> = Vec::new();
        let (pkg, distilled) = match cached {
            Some(p) => (p, None),
            None => {
                eprintln!("{name}: distilling {n} patches x {m} seeds");
                let mut keep = |_: usize, imgs: &[u8]| kept.push(Arc::new(imgs.to_vec()));
                let (p, r, preview) =
                    distill::distill(coreset, use_prior, &self.teacher, manifest, self.ds.train.len(), &pdir, &mut keep, self.device)?;
                let set = TrainingSet::from_package(&p.manifest, &p.patches);
                write_preview(&pdir.join("expansions.png"), &p.manifest, &set, &preview)?;
                fsio::write_json(&pdir.join("distill_report.json"), &r)?;
                (p, Some(r))
            }
        };
        let mut regen = regenerator(&pkg, use_prior, None, self.device)?;
        let identical = if kept.len() == m { Some(reuse_checked(&name, &mut regen, kept, pkg.manifest.seeds[0])?) } else { None };
        Ok(PackageCell { name, variant, ipc, factor, epochs, pkg, distilled, identical, patches: n, regen })
    }

    /// Trains the students of one architecture on a package and records the cell in `report`.
    fn student_cell(&self, cell: &mut PackageCell<'_, B>, arch: Arch, report: &mut ExpansionReport) -> Result<()> {
        let config = self.config;
        let name = format!("{}-{}", cell.name, arch.name());
        let (pkg, epochs) = (&cell.pkg, cell.epochs);
        let sc = |seed| student_config(pkg, arch, config.norm, epochs, None, config.temperature, seed);
        let reusable = |r: &StudentReport, seed| same_json(&r.config, &sc(seed)) && r.set == pkg.manifest.description();
        let regen = &mut cell.regen;
        let mut train = |seed| train_on_package::<B>(pkg, regen, &sc(seed), self.ds, self.device);
        let runs = student_runs(self.out, &name, config.student_seeds, &reusable, &mut train)?;
        let previous = report.cells.iter().find(|c| c.name == name).cloned();
        report.cells.retain(|c| c.name != name);
        let size = fsio::read_json::<serde_json::Value>(&self.out.join("packages").join(&cell.name).join("distill_report.json")).ok();
        let bytes = |k: &str| size.as_ref().and_then(|v| v["size"][k].as_u64()).unwrap_or(0);
        let acc = CellAccuracy::of(&runs);
        // A package reused from disk keeps the distillation figures of the run that made it.
        let d = cell.distilled.as_ref();
        let p = previous.as_ref();
        report.cells.push(Cell {
            name,
            variant: cell.variant,
            ipc: cell.ipc,
            factor: cell.factor,
            arch,
            epochs,
            patches: cell.patches,
            seeds: pkg.manifest.seeds.len(),
            final_stats: acc.final_stats,
            best_stats: acc.best_stats,
            final_accuracy: acc.finals,
            best_accuracy: acc.bests,
            package_bytes: bytes("total_bytes"),
            ipc_budget_bytes: bytes("ipc_budget_bytes"),
            distill_seconds: d.map(|r| r.seconds).or(p.and_then(|c| c.distill_seconds)),
            expansions_per_s: d.map(|r| r.expansions_per_s).or(p.and_then(|c| c.expansions_per_s)),
            label_argmax_is_class: d.map(|r| r.label_argmax_is_class).or(p.and_then(|c| c.label_argmax_is_class)),
            regeneration_bit_identical: cell.identical.or(p.and_then(|c| c.regeneration_bit_identical)),
            student_seconds: runs.iter().map(|r| r.seconds).sum(),
            regen_seconds: runs.iter().map(|r| r.regen_seconds).sum(),
        });
        Ok(())
    }
}

/// Hands a fresh distillation's images to the regenerator, after checking that seed 0
/// regenerated from the package is bit-identical to them.
fn reuse_checked<B: DaceBackend + DiffusionKernels>(
    name: &str,
    regen: &mut Regenerator<'_, B>,
    kept: Vec<Arc<Vec<u8>>>,
    seed0: u64,
) -> Result<bool> {
    let again = regen.expander().expand_all(seed0)?;
    if again != *kept[0] {
        return Err(DaceError::Invalid(format!("{name}: regenerating seed 0 from the package differs from the distillation's images")));
    }
    for (s, imgs) in kept.into_iter().enumerate() {
        regen.prefill(s, imgs);
    }
    Ok(true)
}

/// `accuracy_vs_r_ipc{K}_{arch}.png` (one line per variant over r) and
/// `curves_ipc{K}_r{r}_{arch}.png` (seed 0's test accuracy during training, one line per variant).
pub fn write_plots(report: &ExpansionReport, out: &Path) -> Result<()> {
    use crate::viz::{line_plot, Series};
    let mut keys: Vec<(usize, Arch)> = report.cells.iter().map(|c| (c.ipc, c.arch)).collect();
    keys.sort_by_key(|k| (k.0, k.1.name()));
    keys.dedup();
    for (ipc, arch) in keys {
        let cells: Vec<&Cell> = report.cells.iter().filter(|c| c.ipc == ipc && c.arch == arch).collect();
        let mut series = Vec::new();
        for v in Variant::ALL {
            let mut pts: Vec<(f64, f64)> =
                cells.iter().filter(|c| c.variant == v).filter_map(|c| c.final_stats.map(|s| (c.factor as f64, s.mean))).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if pts.len() > 1 {
                series.push(Series { name: v.name().into(), points: pts, dashed: v == Variant::Rded });
            }
        }
        if !series.is_empty() {
            let title = format!("{} IPC {ipc}, {} student: test accuracy vs patch factor r", report.dataset, arch.name());
            line_plot(
                &out.join(format!("accuracy_vs_r_ipc{ipc}_{}.png", arch.name())),
                &title,
                "r (patches are H/r x W/r)",
                "test accuracy (%), mean of seeds",
                &series,
            )?;
        }
        let mut factors: Vec<usize> = cells.iter().map(|c| c.factor).collect();
        factors.sort();
        factors.dedup();
        for r in factors {
            let mut curves = Vec::new();
            for c in cells.iter().filter(|c| c.factor == r) {
                let path = out.join("runs").join(format!("{}-seed0", c.name)).join("report.json");
                if let Ok(rep) = fsio::read_json::<StudentReport>(&path) {
                    let pts = rep.history.iter().filter_map(|p| p.test_accuracy.map(|a| (p.epoch as f64, a))).collect();
                    curves.push(Series { name: c.variant.name().into(), points: pts, dashed: c.variant == Variant::Rded });
                }
            }
            if curves.len() > 1 {
                let title = format!("{} IPC {ipc}, r = {r}, {}: test accuracy during training (seed 0)", report.dataset, arch.name());
                line_plot(&out.join(format!("curves_ipc{ipc}_r{r}_{}.png", arch.name())), &title, "epoch", "test accuracy (%)", &curves)?;
            }
        }
    }
    Ok(())
}

//! `dace student`: a student trained on a coreset (RDED) or on a package (its images regenerated
//! from the seeds), then evaluated.

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use clap::Args;
use serde::Serialize;

use super::common::{
    at_least_one, command_line, flips_ok, load_data_at, load_data_for_teacher, load_prior, setup_threads, DeviceArgs, StudentRecipeArgs,
};
use crate::fsio;
use crate::models::ClassifierConfig;
use crate::on_device;
use crate::package::Package;
use crate::student::package::{regenerator_on, student_config, train_on_package_checkpointed};
use crate::student::StudentCheckpoint;
use crate::train;

pub fn run(args: StudentArgs) -> anyhow::Result<()> {
    // Before any work (labels, regeneration): an earlier run's checkpoint is never overwritten.
    if args.checkpoint().exists() && !args.resume {
        bail!("{} holds a student checkpoint: pass --resume to continue it, or choose another --out", args.checkpoint().dir.display());
    }
    if args.package.is_some() {
        package_student(args)
    } else {
        coreset_student(args)
    }
}

#[derive(Args, Debug)]
pub struct StudentArgs {
    /// Coreset directory written by `dace coreset`.
    #[arg(long, conflicts_with = "package", required_unless_present = "package")]
    pub coreset: Option<PathBuf>,
    /// Distilled package written by `dace distill`: the student regenerates every epoch's
    /// images from its seeds (in memory) and trains on its stored labels; no teacher needed.
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// The package's prior (checked by fingerprint; not needed for the `rded` variant).
    #[arg(long, requires = "package")]
    pub prior: Option<PathBuf>,
    /// The dataset (its test split evaluates the student).
    #[arg(long)]
    pub data: String,
    /// Teacher directory (coresets only): soft labels (online, or to precompute stored ones) and
    /// input normalisation.
    #[arg(long, required_unless_present = "package")]
    pub teacher: Option<PathBuf>,
    #[command(flatten)]
    pub recipe: StudentRecipeArgs,
    #[arg(long, value_parser = at_least_one, default_value_t = 300)]
    pub epochs: usize,
    /// Default: RDED's (10 / 50 / 100 for IPC 1 / 10 / 50).
    #[arg(long, value_parser = at_least_one)]
    pub batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Memory for regenerated epochs kept for reuse, MiB (packages only). Seeds are kept while
    /// they fit; the others are regenerated when their epoch comes round. Default: half of the
    /// memory available when the student starts.
    #[arg(long)]
    pub cache_mb: Option<u64>,
    #[arg(long)]
    pub out: PathBuf,
    /// Regenerate each epoch's images between epochs instead of one epoch ahead on another thread
    /// (packages only; the prefetch holds one more epoch of images in memory, never other results).
    #[arg(long)]
    pub no_prefetch: bool,
    /// Continue the run whose per-epoch checkpoint is in OUT/checkpoint (a killed or preempted
    /// student; the same settings are required). Without it, an existing checkpoint is an error.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl StudentArgs {
    fn checkpoint(&self) -> StudentCheckpoint {
        StudentCheckpoint { dir: crate::student::checkpoint::default_dir(&self.out), resume: self.resume }
    }
}

fn coreset_student(args: StudentArgs) -> anyhow::Result<()> {
    use crate::coreset::Coreset;
    use crate::package::AugmentConfig;
    use crate::student::{self, LabelSource, Labels, StoredLabels, StudentConfig, TrainingSet};
    setup_threads(&args.device)?;
    let (Some(coreset_dir), Some(teacher_dir)) = (&args.coreset, &args.teacher) else {
        bail!("a coreset student needs --coreset and --teacher");
    };
    let ds = load_data_for_teacher(&args.data, teacher_dir, &Default::default())?;
    let coreset = Coreset::load(coreset_dir)?;
    if coreset.meta.dataset != ds.name || coreset.meta.image_size != [ds.height, ds.width] {
        bail!("coreset {} is of `{}` {:?}, not `{}`", coreset_dir.display(), coreset.meta.dataset, coreset.meta.image_size, ds.name);
    }
    let set = TrainingSet::from_coreset(&coreset, args.recipe.layout)?;
    let soft = args.recipe.labels != LabelSource::Hard;
    let augment = AugmentConfig {
        crop_scale_min: args.recipe.crop_scale_min.unwrap_or(1.0 / coreset.meta.config.factor as f32),
        flip: !args.recipe.no_flip && flips_ok(&ds),
        cutmix: soft,
        shuffle_factor: if args.recipe.layout == crate::coreset::Layout::Collage { coreset.meta.config.factor } else { 1 },
    };
    let model = ClassifierConfig::new(args.recipe.arch, ds.channels, ds.num_classes(), [ds.height, ds.width]).with_norm(args.recipe.norm);
    let batch = args.batch.unwrap_or_else(|| student::rded_batch_size(coreset.meta.config.ipc, ds.num_classes(), set.len()));
    let config = StudentConfig::rded(model, args.epochs, batch, args.recipe.temperature, augment.clone(), args.seed);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report = on_device!(args.device.one()?, |B, device| {
        let (teacher, meta) = train::load_model::<B>(teacher_dir, &device)?;
        let labels_dir = args.out.join("labels");
        let stored = if args.recipe.labels == LabelSource::Stored {
            let seeds: Vec<u64> = (0..args.epochs as u64).collect();
            let l = StoredLabels::compute(&set, &teacher, &meta.normalization, &augment, seeds, &device)?;
            l.save(&labels_dir)?;
            // The student side reads them back from disk, as a receiver of the labels would.
            drop(teacher);
            Some(StoredLabels::load(&labels_dir)?)
        } else {
            None
        };
        let teacher_online = match args.recipe.labels {
            LabelSource::Online => Some(train::load_model::<B>(teacher_dir, &device)?.0),
            _ => None,
        };
        let labels = match (&stored, &teacher_online) {
            (Some(s), _) => Labels::Stored(s),
            (_, Some(t)) => Labels::Online(t),
            _ => Labels::Hard,
        };
        student::train_student_with::<Autodiff<B>>(&config, &set, labels, &meta.normalization, &ds, None, Some(&args.checkpoint()), &device)
    })?;
    #[derive(Serialize)]
    struct Output<'a> {
        command: String,
        coreset: String,
        report: &'a student::StudentReport,
    }
    let path = args.out.join("report.json");
    fsio::write_json(&path, &Output { command: command_line(), coreset: coreset_dir.display().to_string(), report: &report })?;
    println!(
        "student {} on {} ({} images, {:?} labels): final test accuracy {:.2}% (best {:.2}%) after {} epochs, {:.0} s; report {}",
        args.recipe.arch.name(),
        set.description,
        set.len(),
        report.labels,
        report.final_accuracy,
        report.best_accuracy,
        args.epochs,
        report.seconds,
        path.display()
    );
    Ok(())
}

fn package_student(args: StudentArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let dir = args.package.as_ref().expect("dispatched with --package");
    let pkg = Package::load(dir)?;
    let ds = load_data_at(&args.data, Some(pkg.manifest.image_size))?;
    let config = student_config(&pkg, args.recipe.arch, args.recipe.norm, args.epochs, args.batch, args.recipe.temperature, args.seed);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let cache_mb = args.cache_mb.unwrap_or_else(|| available_mb() / 2);
    // Training runs on the first device; regeneration is spread over all of them.
    let (report, regen_images, cache) = on_device!(args.device.list()?, |B, device, devices| {
        let priors = devices.iter().map(|d| load_prior::<B>(args.prior.as_deref(), &pkg, d)).collect::<crate::Result<Vec<_>>>()?;
        let mut regen = regenerator_on(&pkg, &priors, None, &devices)?.with_cache_bytes((cache_mb << 20) as usize);
        let report = train_on_package_checkpointed::<Autodiff<B>>(
            &pkg,
            &mut regen,
            &config,
            &ds,
            Some(&args.checkpoint()),
            !args.no_prefetch,
            &device,
        )?;
        let cache = CacheReport {
            cache_mb,
            prefetch: !args.no_prefetch,
            hits: regen.hits,
            cached_mb: regen.cached_bytes() as f64 / (1 << 20) as f64,
        };
        Ok::<_, crate::DaceError>((report, regen.images, cache))
    })?;
    #[derive(Serialize)]
    struct Output<'a> {
        command: String,
        package: String,
        /// Training on the first; each epoch's regeneration spread over all.
        devices: String,
        regenerated_images: usize,
        cache: CacheReport,
        /// This process's peak resident memory, MiB (Linux).
        peak_rss_mb: Option<f64>,
        report: &'a crate::student::StudentReport,
    }
    let path = args.out.join("report.json");
    fsio::write_json(
        &path,
        &Output {
            command: command_line(),
            package: dir.display().to_string(),
            devices: args.device.names(),
            regenerated_images: regen_images,
            cache,
            peak_rss_mb: crate::bench::data::peak_rss_mb(),
            report: &report,
        },
    )?;
    println!(
        "student {} on {} ({} patches, {} images regenerated in {:.0} s): final test accuracy {:.2}% (best {:.2}%) after {} epochs, {:.0} s; report {}",
        args.recipe.arch.name(), pkg.manifest.description(), pkg.num_items(), regen_images, report.regen_seconds, report.final_accuracy,
        report.best_accuracy, args.epochs, report.seconds, path.display()
    );
    Ok(())
}

/// The regeneration cache of a package student: its budget, the epochs it served, what it held.
#[derive(Serialize)]
struct CacheReport {
    cache_mb: u64,
    /// Whether the next epoch was regenerated on another thread while one trained.
    prefetch: bool,
    hits: usize,
    cached_mb: f64,
}

/// Memory available to a new process, MiB (`MemAvailable`; 4 GiB where the OS does not say).
fn available_mb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    kib.map_or(4096, |k| k >> 10)
}

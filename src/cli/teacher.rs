//! `dace teacher train`, `dace teacher import` and `dace eval`: the teacher, trained on the full
//! dataset or imported from torchvision/timm weights, and evaluated.

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::{at_least_one, load_data_at, prepare, setup_threads, DeviceArgs};
use crate::data::{self, Dataset, LoadOptions, IN_MEMORY_LIMIT};
use crate::device::DeviceSpec;
use crate::fsio;
use crate::models::{Arch, ClassifierConfig, NormKind};
use crate::on_device;
use crate::train::import::{ImportArch, ImportOptions};
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::{self, CropKind, ImageBatcher, Normalization, SourceLibrary, TeacherConfig};

pub fn run(command: TeacherCommand) -> anyhow::Result<()> {
    match command {
        TeacherCommand::Train(args) => teacher_train(args),
        TeacherCommand::Import(args) => teacher_import(args),
    }
}

#[derive(Subcommand, Debug)]
pub enum TeacherCommand {
    /// Train a teacher on a dataset's train split, evaluating on its test split every epoch.
    Train(TeacherTrainArgs),
    /// Import a pretrained torchvision or timm ResNet (safetensors or .pth) as a teacher.
    Import(TeacherImportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TeacherTrainArgs {
    /// `embedded`, or a dataset directory (IDX, CIFAR binary or ImageFolder).
    #[arg(long)]
    pub data: String,
    #[arg(long, value_enum, default_value_t = Arch::Convnet3)]
    pub arch: Arch,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    #[arg(long, value_parser = at_least_one, default_value_t = 15)]
    pub epochs: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    pub optimizer: OptimizerKind,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The training crop: `padded` (small images, see --pad) or `resized` (ImageNet's random
    /// resized crop, taken from the full-resolution file when the data is read lazily).
    #[arg(long, value_enum, default_value_t = CropKind::Padded)]
    pub crop: CropKind,
    /// Random-crop padding in pixels of the `padded` crop (default: image size / 8).
    #[arg(long)]
    pub pad: Option<usize>,
    /// Disable horizontal flips (digits should not be flipped; auto-off for MNIST).
    #[arg(long)]
    pub no_flip: bool,
    /// Train at SIZE x SIZE: an ImageFolder's images are read at that size (centred box of the
    /// shorter side, resized), other datasets are resized after loading.
    #[arg(long, value_parser = at_least_one)]
    pub resize: Option<usize>,
    /// An ImageFolder tree whose decoded pixels exceed this many MiB is not held in memory: its
    /// files are decoded batch by batch (0: always).
    #[arg(long, default_value_t = IN_MEMORY_LIMIT >> 20)]
    pub in_memory_mb: u64,
    /// Use only the first N train images per class (quick runs).
    #[arg(long)]
    pub train_per_class: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn teacher_config(args: &TeacherTrainArgs, ds: &Dataset) -> TeacherConfig {
    let model = ClassifierConfig::new(args.arch, ds.channels, ds.num_classes(), [ds.height, ds.width]).with_norm(args.norm);
    let optimizer = OptimizerConfig::new().with_kind(args.optimizer).with_lr(args.lr).with_weight_decay(args.weight_decay);
    // Digits change meaning when mirrored; clothes do not.
    let digits = ds.name.eq_ignore_ascii_case("mnist");
    TeacherConfig::new(model, optimizer)
        .with_epochs(args.epochs)
        .with_batch_size(args.batch)
        .with_seed(args.seed)
        .with_crop(args.crop)
        .with_crop_pad(args.pad.unwrap_or(ds.height.min(ds.width) / 8))
        .with_flip(!args.no_flip && !digits)
}

fn teacher_train(args: TeacherTrainArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let options = LoadOptions { size: args.resize.map(|s| [s, s]), memory_limit: args.in_memory_mb << 20 };
    let loaded = data::load_with(&args.data, &options).with_context(|| format!("loading dataset `{}`", args.data))?;
    let ds = prepare(loaded, args.resize, args.train_per_class);
    let config = teacher_config(&args, &ds);
    eprintln!(
        "teacher {} on {} ({} train / {} test, {}x{}x{}) for {} epochs on {}",
        args.arch.name(),
        ds.name,
        ds.train.len(),
        ds.test.len(),
        ds.channels,
        ds.height,
        ds.width,
        config.epochs,
        args.device.one()?
    );
    let report =
        on_device!(args.device.one()?, |B, device| train::train_teacher::<Autodiff<B>>(config, &ds, &args.out, args.resume, &device))?;
    println!(
        "test accuracy {:.2}% after {} epochs; model and report.json in {}",
        report.test_accuracy().unwrap_or(f64::NAN),
        report.history.len(),
        args.out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct TeacherImportArgs {
    /// Weights: a .safetensors file or a torch.save state dict (.pth/.pt), also wrapped as
    /// {"state_dict": ...} or {"model": ...} and with DataParallel's `module.` prefixes.
    #[arg(long)]
    pub weights: PathBuf,
    /// The net the file must hold; `auto` reads it off the tensor names and shapes.
    #[arg(long, value_enum, default_value_t = ImportArch::Auto)]
    pub arch: ImportArch,
    /// The library the weights were saved from (recorded; both name the tensors alike).
    #[arg(long, value_enum, default_value_t = SourceLibrary::Torchvision)]
    pub from: SourceLibrary,
    #[arg(long)]
    pub out: PathBuf,
    /// Class names in the model's output order: a file with one name per line, or names
    /// separated by commas (default: class0, class1, ...).
    #[arg(long)]
    pub classes: Option<String>,
    /// Per-channel mean of the input normalisation `(x/255 - mean) / std` the weights expect.
    #[arg(long, value_delimiter = ',', default_values_t = [0.485, 0.456, 0.406])]
    pub mean: Vec<f32>,
    /// Per-channel std of that normalisation.
    #[arg(long, value_delimiter = ',', default_values_t = [0.229, 0.224, 0.225])]
    pub std: Vec<f32>,
    /// Dataset name recorded in model.json.
    #[arg(long, default_value = "custom")]
    pub dataset: String,
    /// Side of the square images the model runs at (`dace eval` resizes a dataset to it).
    #[arg(long, value_parser = at_least_one, default_value_t = 224)]
    pub size: usize,
    /// Check the import against the framework it came from: a safetensors file with an `input`
    /// batch (normalised, N x C x H x W) and the `logits` torchvision/timm computed for it. The
    /// result is written to OUT/parity.json; an error above --parity-tolerance fails the import.
    #[arg(long)]
    pub parity: Option<PathBuf>,
    /// Largest |dace - reference| logit difference --parity accepts.
    #[arg(long, default_value_t = 1e-4, value_parser = positive_tolerance)]
    pub parity_tolerance: f64,
}

fn positive_tolerance(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(t) => Err(format!("{t} is not a finite, non-negative tolerance")),
        Err(e) => Err(format!("not a number ({e})")),
    }
}

fn teacher_import(args: TeacherImportArgs) -> anyhow::Result<()> {
    let classes = match &args.classes {
        Some(spec) => Some(crate::data::names::class_list(spec).map_err(|e| anyhow::anyhow!("--classes: {e}"))?),
        None => None,
    };
    let options = ImportOptions {
        arch: args.arch,
        library: args.from,
        classes,
        normalization: Normalization { mean: args.mean.clone(), std: args.std.clone() },
        dataset: args.dataset.clone(),
        image_size: args.size,
    };
    // A conversion: the CPU backend is enough, whatever device the teacher later runs on.
    let meta = train::import::import_teacher::<crate::device::CpuBackend>(&args.weights, &options, &args.out, &Default::default())?;
    let shape = meta.config.resnet.map(|s| format!(" (blocks {:?}, stem width {}, width {})", s.blocks, s.stem_width, s.width));
    println!(
        "{} imported as {}{} for {} classes at {}x{}: {}",
        args.weights.display(),
        meta.config.arch.name(),
        shape.unwrap_or_default(),
        meta.config.num_classes,
        args.size,
        args.size,
        args.out.display()
    );
    match &args.parity {
        Some(reference) => check_import_parity(&args.out, reference, args.parity_tolerance),
        None => Ok(()),
    }
}

/// Runs the imported teacher, read back from `out` as any later command reads it, on the
/// reference input; writes OUT/parity.json and fails above the tolerance.
fn check_import_parity(out: &std::path::Path, reference: &std::path::Path, tolerance: f64) -> anyhow::Result<()> {
    let device = Default::default();
    let (model, meta) = train::load_model::<crate::device::CpuBackend>(out, &device)?;
    let report = train::parity::check_parity(&model, &meta.config, reference, tolerance, &device)?;
    let path = out.join("parity.json");
    fsio::write_json(&path, &report)?;
    println!(
        "parity with {}: max |dace - reference| = {:.3e} over {} images x {} logits (tolerance {:.0e}); {}",
        reference.display(),
        report.max_abs_err,
        report.images,
        report.classes,
        tolerance,
        path.display()
    );
    if !report.passes() {
        bail!(
            "{}: the imported teacher's logits differ from the reference by {:.3e}, above --parity-tolerance {:.0e}",
            reference.display(),
            report.max_abs_err,
            tolerance
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Directory holding model.json and model.bin.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: String,
    #[arg(long, value_parser = at_least_one, default_value_t = 256)]
    pub batch: usize,
    /// Where to write the JSON report (default: MODEL/eval.json).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Serialize)]
struct EvalOutput {
    command: &'static str,
    model: String,
    data: String,
    device: DeviceSpec,
    resized_from: Option<[usize; 2]>,
    report: train::EvalReport,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let meta = train::checkpoint::load_meta(&args.model)?;
    let mut ds = load_data_at(&args.data, Some(meta.config.image_size))?;
    let config = &meta.config;
    if ds.channels != config.in_channels {
        bail!("model {} takes {}-channel images, dataset `{}` has {}", args.model.display(), config.in_channels, args.data, ds.channels);
    }
    if ds.num_classes() != config.num_classes {
        bail!("model {} has {} classes, dataset `{}` has {}", args.model.display(), config.num_classes, args.data, ds.num_classes());
    }
    let original = [ds.height, ds.width];
    let resized_from = (original != config.image_size).then_some(original);
    if resized_from.is_some() {
        ds = ds.resized(config.image_size[0], config.image_size[1]);
    }
    let report = on_device!(args.device.one()?, |B, device| {
        let (model, meta) = train::load_model::<B>(&args.model, &device)?;
        let batcher = ImageBatcher::plain(&ds, meta.normalization);
        Ok::<_, crate::DaceError>(train::evaluate(&model, &batcher, &ds.test, ds.num_classes(), args.batch, &device)?)
    })?;
    println!(
        "{}: test accuracy {:.2}% on {} images ({:.0} img/s)",
        args.model.display(),
        report.accuracy,
        report.samples,
        report.infer_img_per_s
    );
    for (name, acc) in ds.classes.iter().zip(&report.per_class_accuracy) {
        println!("  {name:<24} {acc:6.2}%");
    }
    let path = args.report.clone().unwrap_or_else(|| args.model.join("eval.json"));
    let output = EvalOutput {
        command: "eval",
        model: args.model.display().to_string(),
        data: args.data.clone(),
        device: args.device.one()?,
        resized_from,
        report,
    };
    fsio::write_json(&path, &output)?;
    println!("report: {}", path.display());
    Ok(())
}

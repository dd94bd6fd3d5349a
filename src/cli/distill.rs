//! `dace distill`: coreset -> expansions -> teacher soft labels -> package.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use super::common::{at_least_one, command_line, flips_ok, hxw, load_data_for_teacher, setup_threads, DeviceArgs, InMemoryArgs, ShardArgs};
use crate::coreset::{self, Coreset, CoresetConfig};
use crate::data::Dataset;
use crate::device::DeviceSpec;
use crate::distill::{self as distiller, write_preview};
use crate::fsio;
use crate::on_device;
use crate::package::shard::{self, Shard, ShardSelect};
use crate::package::{AugmentConfig, ExpandConfig, LabelEncoding, Manifest, Mode, PackageSettings, PriorRef, MAX_PRIOR_SIDE};
use crate::prior::bundle::Prior;
use crate::student::TrainingSet;
use crate::train;

#[derive(Args, Debug, Clone)]
pub struct ExpansionArgs {
    /// An ablation preset; the options below override its settings.
    #[arg(long, value_enum, default_value_t = crate::package::Variant::SrAugMixup)]
    pub variant: crate::package::Variant,
    /// img2img strength (preset: 0.4 for sr, 0.8 otherwise).
    #[arg(long)]
    pub rho: Option<f64>,
    /// Inference steps of the full schedule.
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = crate::package::SchedulerKind::EulerA)]
    pub scheduler: crate::package::SchedulerKind,
    /// Same-class latent mixup on top of the preset.
    #[arg(long)]
    pub mixup: bool,
    /// Range of the mixup weight of the patch's own latent.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.5f32, 1.0])]
    pub gamma_range: Vec<f32>,
    /// Classifier-free guidance scale (1 = none, one UNet pass per step).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f32,
    /// The UNet's compute type (recorded in the package; regeneration uses the same on every
    /// device). f16 halves its weight memory on a GPU; the VAE always runs in f32.
    #[arg(long, value_enum, default_value_t = crate::package::UNetDType::F32)]
    pub unet_dtype: crate::package::UNetDType,
}

pub fn expansion_config(a: &ExpansionArgs) -> anyhow::Result<ExpandConfig> {
    let [lo, hi] = a.gamma_range[..] else { bail!("--gamma-range takes two values a,b") };
    let mut c = ExpandConfig::variant(a.variant, a.steps, a.scheduler, [lo, hi]);
    if let Some(rho) = a.rho {
        c.rho = rho;
    }
    if a.mixup {
        c.mixup = Some([lo, hi]);
    }
    c.guidance = a.guidance;
    c.unet_dtype = a.unet_dtype;
    c.plan()?;
    Ok(c)
}

#[derive(Args, Debug)]
pub struct DistillArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub teacher: PathBuf,
    /// Diffusion prior directory (`dace prior train` output or an imported checkpoint).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Reuse a coreset written by `dace coreset` instead of selecting one.
    #[arg(long)]
    pub coreset: Option<PathBuf>,
    #[arg(long, value_parser = at_least_one, default_value_t = 1)]
    pub ipc: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 2)]
    pub factor: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub crops: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub coreset_seed: u64,
    #[command(flatten)]
    pub expansion: ExpansionArgs,
    /// Seeds per patch (m; the paper uses one per student epoch).
    #[arg(long, value_parser = at_least_one, default_value_t = 300)]
    pub seeds: usize,
    /// First seed (seeds are first, first + 1, ...).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Soft-label encoding: f16, int8 or top-K.
    #[arg(long, default_value = "f16")]
    pub labels: String,
    /// Smallest area fraction of the seeded RandomResizedCrop applied to each expansion.
    #[arg(long, default_value_t = 0.5)]
    pub crop_scale_min: f32,
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long)]
    pub no_cutmix: bool,
    /// Expansion batch size.
    #[arg(long, value_parser = at_least_one, default_value_t = 64)]
    pub batch: usize,
    /// The size the prior works at, `N` or `HxW` (a multiple of its VAE's downsampling factor):
    /// patches are upsampled to it and the decoded images resized to the data's size. Default:
    /// the prior's own size (its model_index.json `image_shape`).
    #[arg(long, value_parser = parse_prior_size, value_name = "N|HxW")]
    pub prior_size: Option<[usize; 2]>,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub shard: ShardArgs,
    #[command(flatten)]
    pub memory: InMemoryArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Writes the shard's distill_report.json and says what it holds.
fn report_shard(args: &DistillArgs, report: &distiller::ShardReport) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Output<'a> {
        command: String,
        report: &'a distiller::ShardReport,
    }
    let path = args.out.join("distill_report.json");
    fsio::write_json(&path, &Output { command: command_line(), report })?;
    println!(
        "package shard {}: {} classes, {} patches x {} seeds ({} resumed); {} expansions of its own, {} of CutMix partners; report {}",
        args.out.display(),
        report.classes.len(),
        report.items,
        report.seeds,
        report.resumed_seeds,
        report.expansions,
        report.partner_expansions,
        path.display()
    );
    Ok(())
}

/// clap value parser of `--prior-size`: `N` (square) or `HxW`, each side in 1..=MAX_PRIOR_SIDE.
fn parse_prior_size(text: &str) -> Result<[usize; 2], String> {
    let side = |t: &str| match t.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_PRIOR_SIDE).contains(&n) => Ok(n),
        Ok(n) => Err(format!("side {n} is outside 1..={MAX_PRIOR_SIDE}")),
        Err(_) => Err(format!("`{t}` is not a whole number (N or HxW, e.g. 512 or 512x768)")),
    };
    match text.split_once(['x', 'X']) {
        Some((h, w)) => Ok([side(h)?, side(w)?]),
        None => side(text).map(|n| [n, n]),
    }
}

/// The prior's working size: `--prior-size` or the prior's own; refused, naming the flag, where
/// the prior cannot work at it or there is no prior to work at it.
fn prior_size_for<B: crate::kernels::DaceBackend>(
    flag: Option<[usize; 2]>,
    mode: Mode,
    prior: Option<&Prior<B>>,
    image_size: [usize; 2],
) -> anyhow::Result<Option<[usize; 2]>> {
    let Some(prior) = prior.filter(|_| mode != Mode::Upsample) else {
        match flag {
            Some(s) if s != image_size => bail!(
                "--prior-size {}x{}: the `rded` variant uses no prior (its patches are upsampled to the data's {}x{})",
                s[0],
                s[1],
                image_size[0],
                image_size[1]
            ),
            _ => return Ok(None),
        }
    };
    let size = flag.unwrap_or(prior.image_size());
    let f = prior.vae_config.downscale();
    if size.iter().any(|s| s % f != 0) {
        let source = if flag.is_some() { "--prior-size" } else { "the prior's own size (set --prior-size)" };
        bail!("{source} {}x{} is not a multiple of the prior's VAE downsampling factor {f}", size[0], size[1]);
    }
    Ok(Some(size))
}

/// What every device of a run shares: the settings the flags and the data give.
struct Plan {
    expansion: ExpandConfig,
    labels: LabelEncoding,
    augment: AugmentConfig,
    seeds: Vec<u64>,
}

impl Plan {
    fn new(args: &DistillArgs, ds: &Dataset) -> anyhow::Result<Plan> {
        let seeds: Vec<u64> = (0..args.seeds as u64).map(|s| args.first_seed + s).collect();
        if seeds.is_empty() {
            bail!("--seeds must be at least 1");
        }
        Ok(Plan {
            expansion: expansion_config(&args.expansion)?,
            labels: LabelEncoding::parse(&args.labels).map_err(anyhow::Error::msg)?,
            augment: AugmentConfig {
                crop_scale_min: args.crop_scale_min,
                flip: !args.no_flip && flips_ok(ds),
                cutmix: !args.no_cutmix,
                shuffle_factor: 1,
            },
            seeds,
        })
    }
}

/// A whole package (with its preview images) or a shard of one.
enum Made {
    Package(Box<crate::package::Package>, Box<distiller::DistillReport>),
    Shard(Box<Shard>, Box<distiller::ShardReport>),
}

/// Distills on one device: the whole package, or the shard of `classes`, into `out`. The coreset
/// is `coreset` where given (selected once for all devices), else --coreset's or selected here.
fn distill_on(
    args: &DistillArgs,
    ds: &Dataset,
    plan: &Plan,
    device: DeviceSpec,
    classes: Option<Vec<u32>>,
    coreset: Option<&Coreset>,
    out: &Path,
) -> anyhow::Result<Made> {
    let made = on_device!(device, |B, device| {
        let (teacher, meta) = train::load_model::<B>(&args.teacher, &device)?;
        train::teacher::check_fits(&meta.config, ds)?;
        // The prior first: a size it cannot work at is refused before the coreset is selected.
        let prior = args.prior.as_deref().map(|dir| Prior::<B>::load(dir, &device)).transpose()?;
        let prior = prior.map(|p| p.with_unet_dtype(plan.expansion.unet_dtype.float())).transpose()?;
        let prior_size = prior_size_for(args.prior_size, plan.expansion.mode, prior.as_ref(), [ds.height, ds.width])?;
        let selected;
        let coreset = match (coreset, &args.coreset) {
            (Some(c), _) => c,
            (None, Some(dir)) => {
                selected = Coreset::load(dir)?;
                &selected
            }
            (None, None) => {
                selected = coreset::select(ds, &teacher, &meta, &coreset_config(args), &device)?;
                &selected
            }
        };
        if coreset.meta.dataset != ds.name {
            return Err(anyhow::anyhow!("the coreset is of `{}`, the data is `{}`", coreset.meta.dataset, ds.name));
        }
        let settings = PackageSettings {
            expansion: plan.expansion.clone(),
            augment: plan.augment.clone(),
            seeds: plan.seeds.clone(),
            labels: plan.labels,
            batch: args.batch,
            prior_size,
        };
        let teacher_ref = distiller::teacher_ref(&args.teacher, &meta)?;
        let manifest = Manifest::new(&coreset.meta, settings, teacher_ref, meta.normalization.clone(), prior.as_ref().map(PriorRef::of))?;
        let made = if let Some(classes) = classes {
            let (shard, report) = distiller::distill_shard(coreset, prior.as_ref(), &teacher, manifest, classes, out, &device)?;
            Made::Shard(Box::new(shard), Box::new(report))
        } else {
            let (package, report, preview) =
                distiller::distill(coreset, prior.as_ref(), &teacher, manifest, ds.train.len(), out, &mut |_, _| {}, &device)?;
            write_preview(
                &out.join("expansions.png"),
                &package.manifest,
                &TrainingSet::from_package(&package.manifest, &package.patches),
                &preview,
            )?;
            Made::Package(Box::new(package), Box::new(report))
        };
        Ok::<_, crate::error::DaceError>(made)
    })?;
    Ok(made)
}

fn coreset_config(args: &DistillArgs) -> CoresetConfig {
    CoresetConfig { ipc: args.ipc, factor: args.factor, crops: args.crops, mipc: args.mipc, seed: args.coreset_seed }
}

pub fn run(args: DistillArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let ds = load_data_for_teacher(&args.data, &args.teacher, &args.memory)?;
    let plan = Plan::new(&args, &ds)?;
    if args.device.device.len() > 1 {
        return run_on_devices(&args, &ds, &plan);
    }
    // A shard's classes are checked against the data's before any work.
    let shard_classes = args.shard.class_indices(&ds.classes)?;
    let made = distill_on(&args, &ds, &plan, args.device.one()?, shard_classes, None, &args.out)?;
    let (package, report) = match made {
        Made::Package(package, report) => (package, report),
        Made::Shard(_, report) => return report_shard(&args, &report),
    };
    #[derive(Serialize)]
    struct Output<'a> {
        command: String,
        report: &'a distiller::DistillReport,
    }
    let path = args.out.join("distill_report.json");
    fsio::write_json(&path, &Output { command: command_line(), report: &report })?;
    let s = &report.size;
    println!(
        "package {}: {} patches x {} seeds = {} expansions at {:.1} img/s; labels' argmax = patch class for {:.1}%",
        args.out.display(),
        report.patches,
        report.seeds,
        report.expansions,
        report.expansions_per_s,
        report.label_argmax_is_class
    );
    println!(
        "size: {} B ({} patches + {} labels ({}) + {} manifest) = {:.2}x the IPC {} image budget ({} B), {:.4}% of the full training set ({} B)",
        s.total_bytes, s.patches_bytes, s.labels_bytes, package.manifest.labels, s.manifest_bytes, s.total_over_budget,
        package.manifest.ipc, s.ipc_budget_bytes, 100.0 * s.total_over_full_dataset, s.full_dataset_bytes
    );
    let r = &report.resolutions;
    println!("resolutions: images {}, patches {}, prior {}", hxw(r.image_size), hxw(r.patch_size), hxw(r.prior_size));
    println!("grid {}, report {}", args.out.join("expansions.png").display(), path.display());
    Ok(())
}

/// `--device a,b,...`: the classes split into one shard per device, distilled side by side (one
/// thread each) into `.OUT.devices/shard-i` beside `--out` (each resumable from its per-seed
/// checkpoint, removed once merged), then merged into the package at --out: the bytes one device writes
/// where the devices compute alike (the same GPU model, or the CPU). The coreset is selected
/// once, on the first device.
fn run_on_devices(args: &DistillArgs, ds: &Dataset, plan: &Plan) -> anyhow::Result<()> {
    let devices = args.device.list()?;
    if args.shard.is_set() {
        bail!("--device {}: several devices split the classes among themselves; leave out --shard and --classes", args.device.names());
    }
    if devices.len() > ds.num_classes() {
        bail!("--device {}: {} devices for {} classes would leave some idle", args.device.names(), devices.len(), ds.num_classes());
    }
    let coreset = match &args.coreset {
        Some(dir) => Coreset::load(dir)?,
        None => on_device!(devices[0], |B, device| {
            let (teacher, meta) = train::load_model::<B>(&args.teacher, &device)?;
            train::teacher::check_fits(&meta.config, ds)?;
            coreset::select(ds, &teacher, &meta, &coreset_config(args), &device)
        })?,
    };
    let parts = (0..devices.len())
        .map(|index| ShardSelect::Part { index, count: devices.len() }.classes(&ds.classes))
        .collect::<crate::Result<Vec<_>>>()?;
    // Beside --out, not in it: saving the package replaces --out as a whole. A stable name, so
    // that a rerun after a kill finds the shards' checkpoints.
    let name = args.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "package".into());
    let work = args.out.with_file_name(format!(".{name}.devices"));
    let started = std::time::Instant::now();
    let made: Vec<(PathBuf, Shard, distiller::ShardReport)> = std::thread::scope(|scope| {
        let threads: Vec<_> = devices
            .iter()
            .zip(parts)
            .enumerate()
            .map(|(i, (&device, classes))| {
                let (dir, coreset) = (work.join(format!("shard-{i}")), &coreset);
                scope.spawn(move || -> anyhow::Result<(PathBuf, Shard, distiller::ShardReport)> {
                    match distill_on(args, ds, plan, device, Some(classes), Some(coreset), &dir)? {
                        Made::Shard(shard, report) => Ok((dir, *shard, *report)),
                        Made::Package(..) => unreachable!("a class list makes a shard"),
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a device's thread panicked"))))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let (shards, reports): (Vec<(PathBuf, Shard)>, Vec<distiller::ShardReport>) =
        made.into_iter().map(|(dir, shard, report)| ((dir, shard), report)).unzip();
    let mut package = shard::merge(&shards)?;
    let size = package.save(&args.out, ds.train.len())?;
    // The shards were only the devices' working state: the package holds all of it.
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    report_devices(args, &reports, &size, started.elapsed().as_secs_f64())
}

/// Writes distill_report.json of a run on several devices and says what it made.
fn report_devices(
    args: &DistillArgs,
    reports: &[distiller::ShardReport],
    size: &crate::package::SizeReport,
    seconds: f64,
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct PerDevice<'a> {
        device: String,
        report: &'a distiller::ShardReport,
    }
    #[derive(Serialize)]
    struct Output<'a> {
        command: String,
        devices: Vec<PerDevice<'a>>,
        seconds: f64,
        size: &'a crate::package::SizeReport,
    }
    let devices =
        reports.iter().zip(&args.device.device).map(|(report, device)| PerDevice { device: device.to_string(), report }).collect();
    let path = args.out.join("distill_report.json");
    fsio::write_json(&path, &Output { command: command_line(), devices, seconds, size })?;
    for (r, device) in reports.iter().zip(&args.device.device) {
        println!(
            "{device}: {} classes, {} patches x {} seeds ({} resumed), {} expansions",
            r.classes.len(),
            r.items,
            r.seeds,
            r.resumed_seeds,
            r.expansions
        );
    }
    println!(
        "package {}: {} B, merged from {} devices in {seconds:.1} s; report {}",
        args.out.display(),
        size.total_bytes,
        reports.len(),
        path.display()
    );
    Ok(())
}

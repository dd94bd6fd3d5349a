//! `dace distill`, `dace expand`, `dace student --package`: the package's life cycle.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use serde::{Deserialize, Serialize};

use super::commands::{command_line, flips_ok, load_data, setup_threads};
use super::{DistillArgs, ExpandArgs, ExpansionArgs, ExpansionGridArgs, StudentArgs};
use crate::coreset::{self, Coreset, CoresetConfig};
use crate::expand::distill::{self as distiller, argmax, patch_set, write_preview};
use crate::expand::student::{regenerator, student_config, train_on_package};
use crate::expand::ExpandConfig;
use crate::fsio;
use crate::on_device;
use crate::package::{LabelEncoding, Package};
use crate::prior::bundle::Prior;
use crate::student::labels::teacher_logits;
use crate::student::AugmentConfig;
use crate::train;

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

pub fn distill(args: DistillArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let ds = load_data(&args.data)?;
    let expansion = expansion_config(&args.expansion)?;
    let labels = LabelEncoding::parse(&args.labels).map_err(anyhow::Error::msg)?;
    let augment = AugmentConfig {
        crop_scale_min: args.crop_scale_min,
        flip: !args.no_flip && flips_ok(&ds),
        cutmix: !args.no_cutmix,
        shuffle_factor: 1,
    };
    let seeds: Vec<u64> = (0..args.seeds as u64).map(|s| args.first_seed + s).collect();
    if seeds.is_empty() {
        bail!("--seeds must be at least 1");
    }
    let (package, report) = on_device!(args.device.device, |B, device| {
        let (teacher, meta) = train::load_model::<B>(&args.teacher, &device)?;
        train::teacher::check_fits(&meta.config, &ds)?;
        let coreset = match &args.coreset {
            Some(dir) => Coreset::load(dir)?,
            None => {
                let config = CoresetConfig { ipc: args.ipc, factor: args.factor, crops: args.crops, mipc: args.mipc, seed: args.coreset_seed };
                coreset::select(&ds, &teacher, &meta, &config, &device)?
            }
        };
        if coreset.meta.dataset != ds.name {
            return Err(anyhow::anyhow!("the coreset is of `{}`, the data is `{}`", coreset.meta.dataset, ds.name));
        }
        let prior = args.prior.as_deref().map(|dir| Prior::<B>::load(dir, &device)).transpose()?;
        let prior = prior.map(|p| p.with_unet_dtype(expansion.unet_dtype.float())).transpose()?;
        let manifest = distiller::manifest(
            &ds,
            meta.normalization.clone(),
            expansion.clone(),
            augment.clone(),
            seeds.clone(),
            labels,
            args.batch,
            distiller::teacher_ref(&args.teacher, &meta)?,
        );
        let (package, report, preview) = distiller::distill(&coreset, prior.as_ref(), &teacher, manifest, ds.train.len(), &args.out, &mut |_, _| {}, &device)?;
        write_preview(&args.out.join("expansions.png"), &package.manifest, &patch_set(&package.manifest, &package.patches), &preview)?;
        Ok::<_, crate::error::DaceError>((package, report))
    })?;
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
        args.out.display(), report.patches, report.seeds, report.expansions, report.expansions_per_s, report.label_argmax_is_class
    );
    println!(
        "size: {} B ({} patches + {} labels ({}) + {} manifest) = {:.2}x the IPC {} image budget ({} B), {:.4}% of the full training set ({} B)",
        s.total_bytes, s.patches_bytes, s.labels_bytes, package.manifest.labels, s.manifest_bytes, s.total_over_budget,
        package.manifest.ipc, s.ipc_budget_bytes, 100.0 * s.total_over_full_dataset, s.full_dataset_bytes
    );
    println!("grid {}, report {}", args.out.join("expansions.png").display(), path.display());
    Ok(())
}

/// What `dace expand` writes next to the images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpandReport {
    pub command: String,
    pub package: String,
    pub device: String,
    pub seeds: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Teacher argmax on the regenerated, augmented images vs the stored labels' argmax (%).
    pub argmax_agreement: Option<f64>,
    /// Against `--compare`: PSNR (dB) over all images, max abs pixel difference, bit identity.
    pub compare: Option<Comparison>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub other: String,
    pub psnr_db: f64,
    pub max_abs_diff: u8,
    pub bit_identical: bool,
}

pub const IMAGES_FILE: &str = "expansions.bin";
pub const EXPAND_REPORT: &str = "expand.json";

/// PSNR of u8 images (infinite when identical).
pub fn psnr_u8(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

pub fn expand(args: ExpandArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let pkg = Package::load(&args.package)?;
    let m = &pkg.manifest;
    let n_seeds = args.seeds.unwrap_or(m.seeds.len()).min(m.seeds.len());
    let (images, seconds, agreement) = on_device!(args.device.device, |B, device| {
        let prior = args.prior.as_deref().map(|dir| Prior::<B>::load(dir, &device)).transpose()?;
        let prior = prior.map(|p| p.with_unet_dtype(m.expansion.unet_dtype.float())).transpose()?;
        let mut regen = regenerator(&pkg, prior.as_ref(), args.batch, &device)?;
        let teacher = match &args.teacher {
            Some(dir) => Some(train::load_model::<B>(dir, &device)?.0),
            None => None,
        };
        let set = patch_set(m, &pkg.patches);
        let (mut images, mut agree, mut total) = (Vec::new(), 0usize, 0usize);
        let bar = train::progress::bar(n_seeds as u64, format!("expand {}", m.description()));
        let start = Instant::now();
        let mut label_s = 0.0;
        for (s, &seed) in m.seeds[..n_seeds].iter().enumerate() {
            let imgs = regen.epoch(s, seed)?;
            if let Some(t) = &teacher {
                let t0 = Instant::now();
                let logits = teacher_logits(&set, &imgs, seed, t, &m.normalization, &m.augment, &device)?;
                let k = m.num_classes();
                for item in 0..set.len() {
                    total += 1;
                    agree += (argmax(&logits[item * k..(item + 1) * k]) == argmax(pkg.logits(s, item))) as usize;
                }
                label_s += t0.elapsed().as_secs_f64();
            }
            images.extend_from_slice(&imgs);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64() - label_s;
        Ok::<_, crate::DaceError>((images, seconds, teacher.map(|_| 100.0 * agree as f64 / total.max(1) as f64)))
    })?;
    fsio::write_atomic(&args.out.join(IMAGES_FILE), &images)?;
    // Grid: one row per seed shown, the first patch of each class per column.
    let set = patch_set(m, &pkg.patches);
    let per_class: Vec<usize> = (0..m.num_classes() as u32).filter_map(|c| m.items.iter().position(|&i| i == c)).collect();
    let len = set.image_len();
    let mut cells = Vec::new();
    for &i in &per_class {
        cells.extend_from_slice(&set.images[i * len..(i + 1) * len]);
    }
    for s in 0..n_seeds.min(7) {
        for &i in &per_class {
            let at = (s * set.len() + i) * len;
            cells.extend_from_slice(&images[at..at + len]);
        }
    }
    crate::viz::write_grid(&args.out.join("expansions.png"), &cells, m.channels, m.image_size[0], m.image_size[1], per_class.len(), 28)?;
    let compare = match &args.compare {
        Some(other) => Some(compare_with(&images, other)?),
        None => None,
    };
    let report = ExpandReport {
        command: command_line(),
        package: args.package.display().to_string(),
        device: args.device.device.name().into(),
        seeds: n_seeds,
        images: images.len() / len,
        seconds,
        images_per_s: (images.len() / len) as f64 / seconds.max(1e-9),
        argmax_agreement: agreement,
        compare,
    };
    fsio::write_json(&args.out.join(EXPAND_REPORT), &report)?;
    println!(
        "regenerated {} images ({} seeds) on {} at {:.1} img/s into {}",
        report.images, n_seeds, report.device, report.images_per_s, args.out.display()
    );
    if let Some(a) = report.argmax_agreement {
        println!("teacher argmax on regenerated images = stored label argmax for {a:.2}%");
    }
    if let Some(c) = &report.compare {
        println!("vs {}: PSNR {:.2} dB, max |diff| {}, bit-identical: {}", c.other, c.psnr_db, c.max_abs_diff, c.bit_identical);
    }
    Ok(())
}

fn compare_with(images: &[u8], other: &Path) -> anyhow::Result<Comparison> {
    let path = other.join(IMAGES_FILE);
    let theirs = fsio::read(&path)?;
    if theirs.len() != images.len() {
        bail!("{}: {} bytes, these expansions have {} (different package or seed count)", path.display(), theirs.len(), images.len());
    }
    Ok(Comparison {
        other: other.display().to_string(),
        psnr_db: psnr_u8(images, &theirs),
        max_abs_diff: images.iter().zip(&theirs).map(|(&a, &b)| a.abs_diff(b)).max().unwrap_or(0),
        bit_identical: images == theirs.as_slice(),
    })
}

pub fn student(args: StudentArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let dir = args.package.as_ref().expect("dispatched with --package");
    let ds = load_data(&args.data)?;
    let pkg = Package::load(dir)?;
    let config = student_config(&pkg, args.arch, args.norm, args.epochs, args.batch, args.temperature, args.seed);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let (report, regen_images) = on_device!(args.device.device, |B, device| {
        let prior = args.prior.as_deref().map(|dir| Prior::<B>::load(dir, &device)).transpose()?;
        let prior = prior.map(|p| p.with_unet_dtype(pkg.manifest.expansion.unet_dtype.float())).transpose()?;
        let mut regen = regenerator(&pkg, prior.as_ref(), None, &device)?;
        let report = train_on_package::<Autodiff<B>>(&pkg, &mut regen, &config, &ds, &device)?;
        Ok::<_, crate::DaceError>((report, regen.images))
    })?;
    #[derive(Serialize)]
    struct Output<'a> {
        command: String,
        package: String,
        regenerated_images: usize,
        report: &'a crate::student::StudentReport,
    }
    let path = args.out.join("report.json");
    fsio::write_json(&path, &Output { command: command_line(), package: dir.display().to_string(), regenerated_images: regen_images, report: &report })?;
    println!(
        "student {} on {} ({} patches, {} images regenerated in {:.0} s): final test accuracy {:.2}% (best {:.2}%) after {} epochs, {:.0} s; report {}",
        args.arch.name(), pkg.manifest.description(), pkg.num_items(), regen_images, report.regen_seconds, report.final_accuracy,
        report.best_accuracy, args.epochs, report.seconds, path.display()
    );
    Ok(())
}

pub fn experiment(args: ExpansionGridArgs) -> anyhow::Result<()> {
    use crate::experiment::expansion::{run_grid, write_plots, ExpansionGridConfig, ExpansionReport};
    setup_threads(&args.device)?;
    if args.plots_only {
        let report: ExpansionReport = fsio::read_json(&args.out.join("results.json"))?;
        write_plots(&report, &args.out)?;
        println!("plots redrawn in {}", args.out.display());
        return Ok(());
    }
    let ds = load_data(&args.data)?;
    let [lo, hi] = args.gamma_range[..] else { bail!("--gamma-range takes two values a,b") };
    let config = ExpansionGridConfig {
        ipcs: args.ipc.clone(),
        factors: args.factor.clone(),
        variants: args.variants.clone(),
        epochs: args.epochs.clone(),
        archs: args.arch.clone(),
        norm: args.norm,
        student_seeds: args.seeds,
        max_expansions: args.max_expansions,
        crops: args.crops,
        mipc: args.mipc,
        coreset_seed: args.coreset_seed,
        steps: args.steps,
        scheduler: args.scheduler,
        gamma: [lo, hi],
        guidance: args.guidance,
        rho: args.rho,
        augment: AugmentConfig { crop_scale_min: args.crop_scale_min, flip: !args.no_flip && flips_ok(&ds), cutmix: !args.no_cutmix, shuffle_factor: 1 },
        labels: LabelEncoding::parse(&args.labels).map_err(anyhow::Error::msg)?,
        batch: args.batch,
        temperature: args.temperature,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report = on_device!(args.device.device, |B, device| {
        run_grid::<Autodiff<B>>(&ds, &args.teacher, &args.prior, &config, command_line(), &args.out, &device)
    })?;
    for c in &report.cells {
        println!(
            "{:<40} m={:<4} {}",
            c.name, c.seeds, c.final_stats.map(|s| s.show(args.seeds)).unwrap_or_else(|| "-".into())
        );
    }
    println!("results in {}", args.out.join("results.json").display());
    Ok(())
}

/// `dace demo` after the teacher: a small prior on the same data, then the ablation in small
/// (every variant distilled into a package at IPC 1, r = 2, a student trained from each).
pub fn demo_ablation(args: &super::DemoArgs, ds: &crate::data::Dataset, teacher_dir: &Path) -> anyhow::Result<crate::experiment::expansion::ExpansionReport> {
    use crate::expand::{SchedulerKind, Variant};
    use crate::experiment::expansion::{run_grid, ExpansionGridConfig};
    use crate::prior::train::{train_prior, PriorTrainConfig};
    let prior_dir = args.out.join("prior");
    let prior_config = PriorTrainConfig {
        vae_channels: vec![8, 16],
        unet_channels: vec![16, 32],
        class_dim: 32,
        vae_steps: args.prior_steps,
        unet_steps: args.prior_steps,
        batch_size: 32,
        checkpoint_every: args.prior_steps.max(1),
        ..PriorTrainConfig::default()
    };
    println!("demo: a small latent diffusion prior ({} VAE + {} UNet steps) on the same subset", args.prior_steps, args.prior_steps);
    on_device!(args.device.device, |B, device| train_prior::<Autodiff<B>>(prior_config.clone(), ds, &prior_dir, false, &device))?;
    let config = ExpansionGridConfig {
        ipcs: vec![1],
        factors: vec![2],
        variants: Variant::ALL.to_vec(),
        epochs: vec![args.student_epochs],
        archs: vec![crate::models::Arch::Convnet3],
        norm: crate::models::NormKind::Instance,
        student_seeds: 1,
        max_expansions: 40 * args.seeds,
        crops: 5,
        mipc: 100,
        coreset_seed: 0,
        steps: 5,
        scheduler: SchedulerKind::EulerA,
        gamma: [0.5, 1.0],
        guidance: 1.0,
        rho: 0.8,
        augment: AugmentConfig { crop_scale_min: 0.5, flip: true, cutmix: true, shuffle_factor: 1 },
        labels: LabelEncoding::F16,
        batch: 64,
        temperature: 20.0,
    };
    println!("demo: distilling IPC 1, r = 2 packages of every ablation variant and training a student from each");
    let out = args.out.join("ablation");
    let report = on_device!(args.device.device, |B, device| {
        run_grid::<Autodiff<B>>(ds, teacher_dir, &prior_dir, &config, command_line(), &out, &device)
    })?;
    println!("{:<14} {:>9} {:>14} {:>12}", "variant", "test acc", "package bytes", "seeds/patch");
    for c in &report.cells {
        println!(
            "{:<14} {:>8.2}% {:>14} {:>12}",
            c.variant.name(), c.final_stats.map_or(f64::NAN, |s| s.mean), c.package_bytes, c.seeds
        );
    }
    println!("(embedded 1,000-image subset, tiny prior, {} student epochs, one student seed: a smoke run of the pipeline, not a result; see docs/results/expansion.md)", args.student_epochs);
    Ok(report)
}

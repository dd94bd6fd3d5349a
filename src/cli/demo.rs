//! `dace demo`: the whole pipeline on the embedded Fashion-MNIST subset.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use clap::Args;
use serde::Serialize;

use super::common::{at_least_one, command_line, setup_threads, DeviceArgs};
use super::teacher::{teacher_config, TeacherTrainArgs};
use crate::data;
use crate::device::DeviceSpec;
use crate::fsio;
use crate::models::{Arch, NormKind};
use crate::on_device;
use crate::package::{AugmentConfig, LabelEncoding};
use crate::train;

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Teacher epochs.
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub epochs: usize,
    /// Steps of each stage (VAE, UNet) of the demo's small prior.
    #[arg(long, default_value_t = 300)]
    pub prior_steps: usize,
    /// Student epochs of the ablation (one package seed per epoch, at most --seeds).
    #[arg(long, value_parser = at_least_one, default_value_t = 60)]
    pub student_epochs: usize,
    /// Seeds per patch of each package.
    #[arg(long, value_parser = at_least_one, default_value_t = 20)]
    pub seeds: usize,
    /// Only train and evaluate the teacher (the first stage).
    #[arg(long)]
    pub teacher_only: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Serialize)]
struct DemoReport {
    command: &'static str,
    dataset: String,
    device: DeviceSpec,
    teacher: train::TeacherReport,
    /// The whole pipeline in small: prior, packages of every ablation variant, students.
    ablation: Option<crate::experiment::expansion::ExpansionReport>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let ds = data::load_embedded();
    println!(
        "demo: ConvNet-3 teacher on the embedded Fashion-MNIST subset ({} train / {} test) for {} epochs",
        ds.train.len(),
        ds.test.len(),
        args.epochs
    );
    let teacher_args = TeacherTrainArgs {
        data: "embedded".into(),
        arch: Arch::Convnet3,
        norm: NormKind::Instance,
        epochs: args.epochs,
        batch: 64,
        optimizer: crate::train::optim::OptimizerKind::Adamw,
        lr: 1e-3,
        weight_decay: 0.01,
        seed: 0,
        crop: crate::train::CropKind::Padded,
        pad: None,
        no_flip: false,
        resize: None,
        in_memory_mb: crate::data::IN_MEMORY_LIMIT >> 20,
        train_per_class: None,
        out: args.out.join("teacher"),
        resume: false,
        device: args.device.clone(),
    };
    let config = teacher_config(&teacher_args, &ds);
    let teacher = on_device!(args.device.one()?, |B, device| {
        train::train_teacher::<Autodiff<B>>(config, &ds, &teacher_args.out, false, &device)
    })?;
    let mut report = DemoReport { command: "demo", dataset: ds.name.clone(), device: args.device.one()?, teacher, ablation: None };
    let path = args.out.join("demo_report.json");
    fsio::write_json(&path, &report)?;
    print_demo_summary(&report, &path);
    if args.teacher_only {
        return Ok(());
    }
    report.ablation = Some(demo_ablation(&args, &ds, &teacher_args.out)?);
    fsio::write_json(&path, &report)?;
    println!("report: {}", path.display());
    Ok(())
}

fn print_demo_summary(report: &DemoReport, path: &Path) {
    println!("{:>5} {:>10} {:>10} {:>9} {:>10}", "epoch", "train loss", "train acc", "test acc", "img/s");
    for e in &report.teacher.history {
        println!("{:>5} {:>10.4} {:>9.2}% {:>8.2}% {:>10.0}", e.epoch, e.train_loss, e.train_accuracy, e.test_accuracy, e.train_img_per_s);
    }
    println!("teacher test accuracy: {:.2}%", report.teacher.test_accuracy().unwrap_or(f64::NAN));
    println!("report: {}", path.display());
}

/// `dace demo` after the teacher: a small prior on the same data, then the ablation in small
/// (every variant distilled into a package at IPC 1, r = 2, a student trained from each).
pub fn demo_ablation(
    args: &DemoArgs,
    ds: &crate::data::Dataset,
    teacher_dir: &Path,
) -> anyhow::Result<crate::experiment::expansion::ExpansionReport> {
    use crate::experiment::expansion::{run_grid, ExpansionGridConfig};
    use crate::package::{SchedulerKind, Variant};
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
    on_device!(args.device.one()?, |B, device| train_prior::<Autodiff<B>>(prior_config.clone(), ds, &prior_dir, false, &device))?;
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
    let report = on_device!(args.device.one()?, |B, device| {
        run_grid::<Autodiff<B>>(ds, teacher_dir, &prior_dir, &config, command_line(), &out, &device)
    })?;
    println!("{:<14} {:>9} {:>14} {:>12}", "variant", "test acc", "package bytes", "seeds/patch");
    for c in &report.cells {
        println!("{:<14} {:>8.2}% {:>14} {:>12}", c.variant.name(), c.final_stats.map_or(f64::NAN, |s| s.mean), c.package_bytes, c.seeds);
    }
    println!("(embedded 1,000-image subset, tiny prior, {} student epochs, one student seed: a smoke run of the pipeline, not a result; see docs/results/expansion.md)", args.student_epochs);
    Ok(report)
}

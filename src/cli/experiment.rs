//! `dace experiment rded|expansion`: the resumable experiment grids behind docs/results.

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use clap::{Args, Subcommand};

use super::common::{at_least_one, command_line, flips_ok, load_data, setup_threads, DeviceArgs, StudentRecipeArgs};
use crate::fsio;
use crate::models::{Arch, NormKind};
use crate::on_device;
use crate::package::{AugmentConfig, LabelEncoding};

pub fn run(command: ExperimentCommand) -> anyhow::Result<()> {
    match command {
        ExperimentCommand::Rded(args) => experiment_rded(args),
        ExperimentCommand::Expansion(args) => experiment_expansion(args),
    }
}

#[derive(Subcommand, Debug)]
pub enum ExperimentCommand {
    /// RDED grid over IPC and r with random-subset baselines; resumable.
    Rded(RdedArgs),
    /// Diffusion expansion grid (ablation variants x IPC x r x student arch), every student
    /// trained from a real package; resumable.
    Expansion(ExpansionGridArgs),
}

#[derive(Args, Debug)]
pub struct RdedArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub teacher: PathBuf,
    #[arg(long, value_parser = at_least_one, value_delimiter = ',', default_value = "1,10,50")]
    pub ipc: Vec<usize>,
    #[arg(long, value_parser = at_least_one, value_delimiter = ',', default_value = "1,2,4")]
    pub factor: Vec<usize>,
    /// Student epochs: one value, or one per IPC.
    #[arg(long, value_parser = at_least_one, value_delimiter = ',', default_value = "300")]
    pub epochs: Vec<usize>,
    /// Student seeds per cell.
    #[arg(long, value_parser = at_least_one, default_value_t = 3)]
    pub seeds: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub crops: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub coreset_seed: u64,
    #[command(flatten)]
    pub recipe: StudentRecipeArgs,
    /// Skip the random-subset baselines.
    #[arg(long)]
    pub no_baselines: bool,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct ExpansionGridArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub teacher: PathBuf,
    #[arg(long)]
    pub prior: PathBuf,
    #[arg(long, value_parser = at_least_one, value_delimiter = ',', default_value = "1")]
    pub ipc: Vec<usize>,
    #[arg(long, value_parser = at_least_one, value_delimiter = ',', default_value = "2")]
    pub factor: Vec<usize>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rded,cond-only,sr,sr-aug,sr-aug-mixup")]
    pub variants: Vec<crate::package::Variant>,
    /// Student epochs: one value, or one per IPC.
    #[arg(long, value_parser = at_least_one, value_delimiter = ',', default_value = "300")]
    pub epochs: Vec<usize>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "convnet3")]
    pub arch: Vec<Arch>,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    /// Student seeds per cell.
    #[arg(long, value_parser = at_least_one, default_value_t = 3)]
    pub seeds: usize,
    /// Expansions per package: seeds per patch = min(epochs, this / patches).
    #[arg(long, value_parser = at_least_one, default_value_t = 4000)]
    pub max_expansions: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub crops: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub coreset_seed: u64,
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = crate::package::SchedulerKind::EulerA)]
    pub scheduler: crate::package::SchedulerKind,
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.5f32, 1.0])]
    pub gamma_range: Vec<f32>,
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f32,
    /// rho of sr-aug and sr-aug-mixup.
    #[arg(long, default_value_t = 0.8)]
    pub rho: f64,
    #[arg(long, default_value_t = 0.5)]
    pub crop_scale_min: f32,
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long)]
    pub no_cutmix: bool,
    #[arg(long, default_value = "f16")]
    pub labels: String,
    #[arg(long, value_parser = at_least_one, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 20.0)]
    pub temperature: f64,
    /// Only redraw the plots of the results already in --out (runs nothing).
    #[arg(long)]
    pub plots_only: bool,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn experiment_rded(args: RdedArgs) -> anyhow::Result<()> {
    use crate::experiment::rded::{self, RdedGridConfig};
    setup_threads(&args.device)?;
    let ds = load_data(&args.data)?;
    let config = RdedGridConfig {
        ipcs: args.ipc.clone(),
        factors: args.factor.clone(),
        epochs: args.epochs.clone(),
        student_seeds: args.seeds,
        crops: args.crops,
        mipc: args.mipc,
        coreset_seed: args.coreset_seed,
        layout: args.recipe.layout,
        labels: args.recipe.labels,
        temperature: args.recipe.temperature,
        crop_scale_min: args.recipe.crop_scale_min,
        flip: !args.recipe.no_flip && flips_ok(&ds),
        baselines: !args.no_baselines,
        arch: args.recipe.arch,
        norm: args.recipe.norm,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report = on_device!(args.device.one()?, |B, device| {
        rded::run_grid::<Autodiff<B>>(&ds, &args.teacher, &config, command_line(), &args.out, &device)
    })?;
    println!("{}", rded::markdown(&report));
    println!("results in {}", args.out.display());
    Ok(())
}

fn experiment_expansion(args: ExpansionGridArgs) -> anyhow::Result<()> {
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
        augment: AugmentConfig {
            crop_scale_min: args.crop_scale_min,
            flip: !args.no_flip && flips_ok(&ds),
            cutmix: !args.no_cutmix,
            shuffle_factor: 1,
        },
        labels: LabelEncoding::parse(&args.labels).map_err(anyhow::Error::msg)?,
        batch: args.batch,
        temperature: args.temperature,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report = on_device!(args.device.one()?, |B, device| {
        run_grid::<Autodiff<B>>(&ds, &args.teacher, &args.prior, &config, command_line(), &args.out, &device)
    })?;
    for c in &report.cells {
        println!("{:<40} m={:<4} {}", c.name, c.seeds, c.final_stats.map(|s| s.show(args.seeds)).unwrap_or_else(|| "-".into()));
    }
    println!("results in {}", args.out.join("results.json").display());
    Ok(())
}

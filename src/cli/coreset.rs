//! `dace coreset`: RDED's coreset of low-resolution patches, scored by the teacher; its class
//! shards (`--shard i/n`) and `dace coreset merge`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::{at_least_one, load_data_for_teacher, setup_threads, DeviceArgs, InMemoryArgs, ShardArgs};
use crate::coreset::{self, Coreset, CoresetConfig, CoresetMeta};
use crate::on_device;
use crate::train;

/// `dace coreset --data ... --out DIR` selects; `dace coreset merge SHARD... --out DIR` joins.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CoresetCommand {
    #[command(subcommand)]
    pub action: Option<CoresetAction>,
    #[command(flatten)]
    pub select: CoresetArgs,
}

#[derive(Subcommand, Debug)]
pub enum CoresetAction {
    /// Join coreset shards (`dace coreset --shard i/n`) into the coreset a single run selects;
    /// refuses shards of another dataset, settings or teacher, shards that share a class, and a
    /// set that leaves a class out.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shard directories, in any order.
    #[arg(required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

/// The selection's flags. The required ones are `Option`s that clap requires unless `merge` is
/// given (a flattened struct with plain required fields cannot be parsed beside a subcommand).
#[derive(Args, Debug)]
pub struct CoresetArgs {
    #[arg(long, required = true)]
    pub data: Option<String>,
    /// Teacher directory (model.json + model.bin).
    #[arg(long, required = true)]
    pub teacher: Option<PathBuf>,
    /// Images per class of the budget (K).
    #[arg(long, value_parser = at_least_one, required = true)]
    pub ipc: Option<usize>,
    /// Patch factor r: K * r^2 patches of H/r x W/r per class.
    #[arg(long, value_parser = at_least_one, default_value_t = 1)]
    pub factor: usize,
    /// Random crops scored per image.
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub crops: usize,
    /// Real images considered per class (raised to K * r^2 if smaller).
    #[arg(long, value_parser = at_least_one, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub shard: ShardArgs,
    #[command(flatten)]
    pub memory: InMemoryArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(command: CoresetCommand) -> anyhow::Result<()> {
    match command.action {
        Some(CoresetAction::Merge(args)) => merge(args),
        None => select(command.select),
    }
}

/// A flag clap requires whenever `merge` is absent.
fn given<T>(value: Option<T>, flag: &str) -> anyhow::Result<T> {
    value.ok_or_else(|| anyhow::anyhow!("dace coreset: {flag} is required"))
}

fn select(args: CoresetArgs) -> anyhow::Result<()> {
    let (data, teacher_dir) = (given(args.data, "--data")?, given(args.teacher, "--teacher")?);
    let (ipc, out) = (given(args.ipc, "--ipc")?, given(args.out, "--out")?);
    setup_threads(&args.device)?;
    let ds = load_data_for_teacher(&data, &teacher_dir, &args.memory)?;
    // A shard's classes are checked against the data's before any work.
    let classes = args.shard.class_indices(&ds.classes)?;
    let config = CoresetConfig { ipc, factor: args.factor, crops: args.crops, mipc: args.mipc, seed: args.seed };
    let mut c = on_device!(args.device.one()?, |B, device| {
        let (teacher, meta) = train::load_model::<B>(&teacher_dir, &device)?;
        train::teacher::check_fits(&meta.config, &ds)?;
        match &classes {
            Some(classes) => coreset::select_shard(&ds, &teacher, &meta, &config, classes, &device),
            None => coreset::select(&ds, &teacher, &meta, &config, &device),
        }
    })?;
    // Shards scored by another teacher are told apart when merged.
    c.meta.teacher = train::checkpoint::fingerprint(&teacher_dir)?;
    c.save(&out)?;
    describe(&c.meta, &out);
    Ok(())
}

fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let shards = args.shards.iter().map(|dir| Ok((dir.clone(), Coreset::load_shard(dir)?))).collect::<crate::Result<Vec<_>>>()?;
    let merged = coreset::shard::merge(&shards)?;
    merged.save(&args.out)?;
    print!("{} shards merged: ", shards.len());
    describe(&merged.meta, &args.out);
    Ok(())
}

fn describe(m: &CoresetMeta, out: &std::path::Path) {
    let classes = m.shard.as_ref().map_or(m.classes.len(), Vec::len);
    let what = match &m.shard {
        Some(_) => format!("coreset shard of {} ({classes} of {} classes)", m.dataset, m.classes.len()),
        None => format!("coreset of {}", m.dataset),
    };
    println!(
        "{what}: {} patches of {}x{}x{} ({} per class, from {} images/class x {} crops, {} teacher evaluations, {:.1} s) in {}",
        m.patches.len(),
        m.channels,
        m.patch_size[0],
        m.patch_size[1],
        m.patches.len() / classes.max(1),
        m.mipc_used,
        m.config.crops,
        m.teacher_evals,
        m.seconds,
        out.display()
    );
}

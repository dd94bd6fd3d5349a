//! `dace package merge`: the shards of one distillation (`dace distill --shard i/n`) joined into
//! the package a single process writes.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::command_line;
use crate::fsio;
use crate::package::shard::{self, Shard};

#[derive(Subcommand, Debug)]
pub enum PackageCommand {
    /// Join package shards into one package, byte-identical to a single-process distillation;
    /// refuses shards of different settings, priors, teachers or coresets, shards that share a
    /// class, and a set that leaves a class out.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shard directories (`dace distill --shard i/n --out SHARD`), in any order.
    #[arg(required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(command: PackageCommand) -> anyhow::Result<()> {
    match command {
        PackageCommand::Merge(args) => merge(args),
    }
}

#[derive(Serialize)]
struct MergeReport {
    command: String,
    package: String,
    shards: Vec<ShardEntry>,
    items: usize,
    seeds: usize,
    total_bytes: u64,
}

#[derive(Serialize)]
struct ShardEntry {
    dir: String,
    classes: usize,
    items: usize,
}

fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let shards = args.shards.iter().map(|dir| Ok((dir.clone(), Shard::load(dir)?))).collect::<crate::Result<Vec<_>>>()?;
    let mut package = shard::merge(&shards)?;
    // The full dataset's size is not known here; it only enters the size report's ratio.
    let size = package.save(&args.out, 0)?;
    let report = MergeReport {
        command: command_line(),
        package: args.out.display().to_string(),
        shards: shards
            .iter()
            .map(|(dir, s)| ShardEntry { dir: dir.display().to_string(), classes: s.classes.len(), items: s.items().len() })
            .collect(),
        items: package.num_items(),
        seeds: package.manifest.seeds.len(),
        total_bytes: size.total_bytes,
    };
    let path = args.out.join("merge_report.json");
    fsio::write_json(&path, &report)?;
    println!(
        "package {}: {} shards merged, {} patches x {} seeds, {} B; report {}",
        args.out.display(),
        shards.len(),
        report.items,
        report.seeds,
        report.total_bytes,
        path.display()
    );
    Ok(())
}

//! Command-line interface (the `anyhow` edge of the crate). Each command group lives in one file
//! with its arguments next to its handler; this file only parses and dispatches, and the shared
//! helpers (threads, data loading, the recorded command line) are in `common`.

mod bench;
mod common;
mod coreset;
mod data;
mod demo;
mod distill;
mod expand;
mod experiment;
mod package;
mod prior;
mod slurm;
mod student;
mod teacher;
mod web;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "dace", version, about = "Distill an image dataset into a tiny package and regenerate it anywhere")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Datasets: fetch the real ones, describe any.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Model architectures.
    #[command(subcommand)]
    Model(data::ModelCommand),
    /// Teacher training.
    #[command(subcommand)]
    Teacher(teacher::TeacherCommand),
    /// Evaluate a trained classifier on a dataset's test split.
    Eval(teacher::EvalArgs),
    /// End-to-end run on the embedded Fashion-MNIST subset (no downloads needed).
    Demo(demo::DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Select an RDED coreset: the lowest-teacher-loss crops of each class, stored at H/r x W/r
    /// (`--shard i/n` for a part of the classes; `dace coreset merge` joins the shards).
    Coreset(coreset::CoresetCommand),
    /// Train a student on a coreset (soft labels online or stored, or hard labels) or on a
    /// distilled package (its images regenerated from the seeds), and evaluate it.
    Student(student::StudentArgs),
    /// Distill: coreset, diffusion expansion of every patch under every seed, teacher soft labels,
    /// written as a package of patches + seeds + labels.
    Distill(distill::DistillArgs),
    /// Package shards: merge them into one package.
    #[command(subcommand)]
    Package(package::PackageCommand),
    /// Slurm clusters: a sharded distillation as a job array and a dependent merge job.
    #[command(subcommand)]
    Slurm(slurm::SlurmCommand),
    /// Regenerate a package's expansions on a device: PNG grid, images, fidelity checks.
    Expand(expand::ExpandArgs),
    /// Experiment grids whose results go to docs/results.
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    /// The latent diffusion prior: train dace's own, sample from one.
    #[command(subcommand)]
    Prior(prior::PriorCommand),
    /// The browser demo (web/): stage a package and prior for it, serve it on 127.0.0.1.
    #[command(subcommand)]
    Web(web::WebCommand),
}

pub fn main() -> anyhow::Result<()> {
    run(Cli::parse().command)
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Data(cmd) => data::run_data(cmd),
        Command::Model(cmd) => data::run_model(cmd),
        Command::Teacher(cmd) => teacher::run(cmd),
        Command::Eval(args) => teacher::eval(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Coreset(args) => coreset::run(args),
        Command::Student(args) => student::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Expand(args) => expand::run(args),
        Command::Package(cmd) => package::run(cmd),
        Command::Slurm(cmd) => slurm::run(cmd),
        Command::Experiment(cmd) => experiment::run(cmd),
        Command::Prior(cmd) => prior::run(cmd),
        Command::Web(cmd) => web::run(cmd),
    }
}

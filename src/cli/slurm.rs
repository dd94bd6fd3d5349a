//! `dace slurm submit`: a distillation as a Slurm job array, one task per class shard
//! (`SLURM_ARRAY_TASK_ID` is the shard index), and a merge job that runs once every task has
//! succeeded. Tasks are requeue-safe: a preempted or requeued task reruns the same command, which
//! resumes from its shard's per-seed checkpoint.
//!
//! Layout of `--out`: `slurm/distill.sbatch`, `slurm/merge.sbatch`, `slurm/jobs.json` (job ids),
//! `slurm/logs/`, `shards/shard-<i>/`, and `package/` once the merge job has run.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use super::common::{at_least_one, command_line};
use super::distill::DistillArgs;
use crate::fsio;

#[derive(Subcommand, Debug)]
pub enum SlurmCommand {
    /// Write and submit the sbatch files of a sharded distillation: a job array of `dace distill
    /// --shard i/n` and a dependent `dace package merge`.
    Submit(SubmitArgs),
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Class shards, one array task each.
    #[arg(long, value_parser = at_least_one)]
    pub shards: usize,
    /// The run's folder (on storage the compute nodes share): sbatch files, logs, shards, package.
    #[arg(long)]
    pub out: PathBuf,
    /// An `#SBATCH` option of the array tasks, repeatable: `--sbatch=--partition=gpu
    /// --sbatch=--gres=gpu:1 --sbatch=--time=24:00:00`.
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch: Vec<String>,
    /// An `#SBATCH` option of the merge job (CPU only, minutes), repeatable.
    #[arg(long = "merge-sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub merge_sbatch: Vec<String>,
    /// The dace binary the jobs run (default: this one); the compute nodes must reach it.
    #[arg(long)]
    pub dace: Option<PathBuf>,
    /// Write the sbatch files and print the sbatch commands, submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The `dace distill` options every shard shares, after `--` (not --out, --shard or --classes).
    #[arg(last = true, required = true, value_name = "DISTILL_ARGS")]
    pub distill: Vec<String>,
}

pub fn run(command: SlurmCommand) -> anyhow::Result<()> {
    match command {
        SlurmCommand::Submit(args) => submit(args),
    }
}

/// What was submitted, for `squeue -j`, `scontrol requeue` and the record of the run.
#[derive(Serialize)]
struct Jobs {
    command: String,
    shards: usize,
    array_job: Option<String>,
    merge_job: Option<String>,
    distill_sbatch: String,
    merge_sbatch: String,
    package: String,
}

fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    check_distill_args(&args.distill, args.shards)?;
    let out = absolute_dir(&args.out)?;
    let slurm_dir = out.join("slurm");
    std::fs::create_dir_all(slurm_dir.join("logs")).with_context(|| format!("creating {}", slurm_dir.display()))?;
    std::fs::create_dir_all(out.join("shards")).with_context(|| format!("creating {}", out.display()))?;
    let dace = match &args.dace {
        Some(p) => p.canonicalize().with_context(|| format!("--dace {}", p.display()))?,
        None => std::env::current_exe().context("locating this dace binary")?,
    };
    let cwd = std::env::current_dir().context("reading the working directory")?;
    if cwd.to_string_lossy().chars().any(char::is_whitespace) {
        bail!("the working directory {} has blanks, which Slurm's #SBATCH --chdir cannot hold", cwd.display());
    }
    let distill_path = slurm_dir.join("distill.sbatch");
    let merge_path = slurm_dir.join("merge.sbatch");
    fsio::write_atomic(&distill_path, distill_script(&args, &dace, &out, &cwd)?.as_bytes())?;
    fsio::write_atomic(&merge_path, merge_script(&args, &dace, &out, &cwd)?.as_bytes())?;
    let mut jobs = Jobs {
        command: command_line(),
        shards: args.shards,
        array_job: None,
        merge_job: None,
        distill_sbatch: distill_path.display().to_string(),
        merge_sbatch: merge_path.display().to_string(),
        package: out.join("package").display().to_string(),
    };
    if args.dry_run {
        println!("sbatch --parsable {}", distill_path.display());
        println!("sbatch --parsable --dependency=afterok:<array job> {}", merge_path.display());
    } else {
        let array = sbatch(&[], &distill_path)?;
        let merge = sbatch(&[format!("--dependency=afterok:{array}")], &merge_path)?;
        println!(
            "submitted job array {array} ({} distill tasks) and merge job {merge}; the package will be at {}",
            args.shards, jobs.package
        );
        (jobs.array_job, jobs.merge_job) = (Some(array), Some(merge));
    }
    fsio::write_json(&slurm_dir.join("jobs.json"), &jobs)?;
    Ok(())
}

/// `dace distill`'s own options, parsed as the array tasks will parse them.
#[derive(Parser, Debug)]
struct DistillProbe {
    #[command(flatten)]
    _distill: DistillArgs,
}

/// The distill options are checked here, by the same parser the tasks use, so that a typo fails
/// at submission rather than in every array task.
fn check_distill_args(distill: &[String], shards: usize) -> anyhow::Result<()> {
    for owned in ["--out", "--shard", "--classes"] {
        if distill.iter().any(|a| a == owned || a.starts_with(&format!("{owned}="))) {
            bail!("`{owned}` is set by `dace slurm submit` for each shard: leave it out of the distill options");
        }
    }
    let probe = ["dace distill".to_string()].into_iter().chain(distill.iter().cloned());
    let probe = probe.chain(["--shard".into(), format!("0/{shards}"), "--out".into(), "probe".into()]);
    if let Err(e) = DistillProbe::try_parse_from(probe) {
        bail!("the distill options after `--` do not parse: {}", e.render().to_string().trim());
    }
    Ok(())
}

/// `dir`, created, as an absolute path (the jobs run on other nodes, from another directory).
fn absolute_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating --out {}", dir.display()))?;
    let abs = dir.canonicalize().with_context(|| format!("--out {}", dir.display()))?;
    // #SBATCH lines are not parsed by a shell: a path with blanks would split there.
    if abs.to_string_lossy().chars().any(char::is_whitespace) {
        bail!("--out {}: Slurm's #SBATCH lines cannot hold a path with blanks", abs.display());
    }
    Ok(abs)
}

fn quote(arg: &str) -> anyhow::Result<String> {
    Ok(shlex::try_quote(arg).with_context(|| format!("cannot quote `{arg}` for a shell (a NUL byte)"))?.into_owned())
}

fn quote_path(p: &Path) -> anyhow::Result<String> {
    quote(&p.display().to_string())
}

fn sbatch_lines(options: &[String]) -> String {
    options.iter().map(|o| format!("#SBATCH {o}\n")).collect()
}

fn distill_script(args: &SubmitArgs, dace: &Path, out: &Path, cwd: &Path) -> anyhow::Result<String> {
    let distill: Vec<String> = args.distill.iter().map(|a| quote(a)).collect::<anyhow::Result<_>>()?;
    let logs = out.join("slurm/logs");
    Ok(format!(
        "#!/bin/bash\n\
         #SBATCH --job-name=dace-distill\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={logs}/distill-%A_%a.log\n\
         #SBATCH --open-mode=append\n\
         #SBATCH --requeue\n\
         #SBATCH --chdir={cwd}\n\
         {user}\
         # One task per class shard. A requeued or preempted task runs the same command again,\n\
         # which resumes from the shard's per-seed checkpoint.\n\
         set -euo pipefail\n\
         shard=\"$SLURM_ARRAY_TASK_ID\"\n\
         exec {dace} distill {distill} --shard \"$shard/{n}\" --out {shards}/shard-\"$shard\"\n",
        last = args.shards - 1,
        logs = logs.display(),
        cwd = cwd.display(),
        user = sbatch_lines(&args.sbatch),
        dace = quote_path(dace)?,
        distill = distill.join(" "),
        n = args.shards,
        shards = quote_path(&out.join("shards"))?,
    ))
}

fn merge_script(args: &SubmitArgs, dace: &Path, out: &Path, cwd: &Path) -> anyhow::Result<String> {
    let shards: Vec<String> =
        (0..args.shards).map(|i| quote_path(&out.join(format!("shards/shard-{i}")))).collect::<anyhow::Result<_>>()?;
    Ok(format!(
        "#!/bin/bash\n\
         #SBATCH --job-name=dace-merge\n\
         #SBATCH --output={logs}/merge-%j.log\n\
         #SBATCH --chdir={cwd}\n\
         {user}\
         set -euo pipefail\n\
         exec {dace} package merge {shards} --out {package}\n",
        logs = out.join("slurm/logs").display(),
        cwd = cwd.display(),
        user = sbatch_lines(&args.merge_sbatch),
        dace = quote_path(dace)?,
        shards = shards.join(" "),
        package = quote_path(&out.join("package"))?,
    ))
}

/// Submits `script` and returns its job id (`sbatch --parsable` prints `id[;cluster]`).
fn sbatch(options: &[String], script: &Path) -> anyhow::Result<String> {
    let output = Process::new("sbatch")
        .arg("--parsable")
        .args(options)
        .arg(script)
        .output()
        .context("running sbatch (is Slurm installed here, or SLURM_CONF set?)")?;
    if !output.status.success() {
        bail!("sbatch {} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch {} printed `{}`, not a job id", script.display(), stdout.trim());
    }
    Ok(id)
}

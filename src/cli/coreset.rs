//! `dace coreset`: RDED's coreset of low-resolution patches, scored by the teacher.

use std::path::PathBuf;

use clap::Args;

use super::common::{at_least_one, load_data_for_teacher, setup_threads, DeviceArgs, InMemoryArgs};
use crate::on_device;
use crate::train;

#[derive(Args, Debug)]
pub struct CoresetArgs {
    #[arg(long)]
    pub data: String,
    /// Teacher directory (model.json + model.bin).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Images per class of the budget (K).
    #[arg(long, value_parser = at_least_one)]
    pub ipc: usize,
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
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub memory: InMemoryArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: CoresetArgs) -> anyhow::Result<()> {
    use crate::coreset::{self, CoresetConfig};
    setup_threads(&args.device)?;
    let ds = load_data_for_teacher(&args.data, &args.teacher, &args.memory)?;
    let config = CoresetConfig { ipc: args.ipc, factor: args.factor, crops: args.crops, mipc: args.mipc, seed: args.seed };
    let c = on_device!(args.device.one()?, |B, device| {
        let (teacher, meta) = train::load_model::<B>(&args.teacher, &device)?;
        train::teacher::check_fits(&meta.config, &ds)?;
        coreset::select(&ds, &teacher, &meta, &config, &device)
    })?;
    c.save(&args.out)?;
    let m = &c.meta;
    println!(
        "coreset of {}: {} patches of {}x{}x{} ({} per class, from {} images/class x {} crops, {} teacher evaluations, {:.1} s) in {}",
        m.dataset,
        m.patches.len(),
        m.channels,
        m.patch_size[0],
        m.patch_size[1],
        m.patches.len() / m.classes.len().max(1),
        m.mipc_used,
        m.config.crops,
        m.teacher_evals,
        m.seconds,
        args.out.display()
    );
    Ok(())
}

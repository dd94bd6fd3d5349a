//! Helpers every command shares: thread setup, dataset loading, the recorded command line, the
//! device flags.

use std::path::Path;

use anyhow::Context;
use clap::Args;

use crate::coreset::Layout;
use crate::data::{self, Dataset, LoadOptions};
use crate::device::DeviceSpec;
use crate::kernels::DaceBackend;
use crate::models::{Arch, NormKind};
use crate::package::shard::ShardSelect;
use crate::package::Package;
use crate::prior::bundle::Prior;
use crate::student::LabelSource;

#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where to run: cpu, wgpu (Vulkan/Metal/DX12) or cuda; a GPU by index as cuda:1 or wgpu:0
    /// (the first discrete GPU). Several (cuda:0,cuda:1): `dace distill` spreads class shards over
    /// them, `dace expand` and a package student spread each epoch's regeneration.
    #[arg(long, value_parser = parse_device, value_delimiter = ',', default_value = "cpu", value_name = "DEVICE[,DEVICE...]")]
    pub device: Vec<DeviceSpec>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn parse_device(text: &str) -> Result<DeviceSpec, String> {
    text.parse()
}

impl DeviceArgs {
    /// The one device of a command that runs on one.
    pub fn one(&self) -> anyhow::Result<DeviceSpec> {
        match self.device[..] {
            [one] => Ok(one),
            _ => anyhow::bail!(
                "--device {}: this command runs on one device (distill, expand and a package student take several)",
                self.names()
            ),
        }
    }

    /// The devices of a command that spreads its work over several (one backend, no GPU twice).
    pub fn list(&self) -> anyhow::Result<&[DeviceSpec]> {
        crate::device::check_device_list(&self.device).map_err(|e| anyhow::anyhow!("--device {}: {e}", self.names()))?;
        Ok(&self.device)
    }

    /// The devices as given, `cuda:0,cuda:1`.
    pub fn names(&self) -> String {
        self.device.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

/// A shard of the classes (`dace coreset` and `dace distill`): merged shards equal a single run.
#[derive(Args, Debug, Clone)]
pub struct ShardArgs {
    /// Work on one shard of the classes and write a shard at --out: `i/n` is the i-th (from 0)
    /// of n contiguous blocks of classes. `dace coreset merge` / `dace package merge` join the
    /// shards into what a single run writes, byte for byte.
    #[arg(long, value_parser = crate::package::shard::parse_part, value_name = "i/n", conflicts_with = "classes")]
    pub shard: Option<ShardSelect>,
    /// Work on these classes only and write a shard: a file of one class name per line, or
    /// names (or indices) separated by commas.
    #[arg(long, value_name = "FILE|a,b,c")]
    pub classes: Option<String>,
}

impl ShardArgs {
    pub fn is_set(&self) -> bool {
        self.shard.is_some() || self.classes.is_some()
    }

    /// The shard's class indices (ascending) among `names`, or `None` for all classes.
    pub fn class_indices(&self, names: &[String]) -> anyhow::Result<Option<Vec<u32>>> {
        let select = match (&self.shard, &self.classes) {
            (Some(part), _) => part.clone(),
            (None, Some(spec)) => ShardSelect::Named(data::names::class_list(spec).map_err(|e| anyhow::anyhow!("--classes: {e}"))?),
            (None, None) => return Ok(None),
        };
        Ok(Some(select.classes(names)?))
    }
}

/// How much of an ImageFolder tree may be held decoded in memory (the commands that read a
/// dataset at a teacher's size).
#[derive(Args, Debug, Clone)]
pub struct InMemoryArgs {
    /// An ImageFolder tree whose decoded pixels exceed this many MiB is not held in memory: its
    /// files are decoded batch by batch (0: always).
    #[arg(long, default_value_t = data::IN_MEMORY_LIMIT >> 20)]
    pub in_memory_mb: u64,
}

impl Default for InMemoryArgs {
    fn default() -> Self {
        Self { in_memory_mb: data::IN_MEMORY_LIMIT >> 20 }
    }
}

/// The student recipe flags `dace student` and `dace experiment rded` share.
#[derive(Args, Debug, Clone)]
pub struct StudentRecipeArgs {
    /// How a coreset's patches become training images.
    #[arg(long, value_enum, default_value_t = Layout::Collage)]
    pub layout: Layout,
    #[arg(long, value_enum, default_value_t = LabelSource::Stored)]
    pub labels: LabelSource,
    #[arg(long, value_enum, default_value_t = Arch::Convnet3)]
    pub arch: Arch,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    /// Softmax temperature of the soft labels.
    #[arg(long, default_value_t = 20.0)]
    pub temperature: f64,
    /// Smallest area fraction of the student's RandomResizedCrop; default RDED's 1/r (no crop at
    /// r = 1 and for the random-subset baselines).
    #[arg(long)]
    pub crop_scale_min: Option<f32>,
    /// Disable flips (auto-off for MNIST).
    #[arg(long)]
    pub no_flip: bool,
}

/// Where a benchmark writes its rows, and the device it runs on.
#[derive(Args, Debug, Clone)]
pub struct BenchOutputArgs {
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl BenchOutputArgs {
    /// Writes `{command, threads, rows}` to `--json`, when given.
    pub fn write_rows<T: serde::Serialize>(&self, rows: &[T]) -> anyhow::Result<()> {
        #[derive(serde::Serialize)]
        struct Output<'a, T> {
            command: String,
            threads: usize,
            rows: &'a [T],
        }
        if let Some(path) = &self.json {
            crate::fsio::write_json(path, &Output { command: command_line(), threads: rayon::current_num_threads(), rows })?;
            println!("rows written to {}", path.display());
        }
        Ok(())
    }
}

pub fn setup_threads(device: &DeviceArgs) -> anyhow::Result<()> {
    if let Some(n) = device.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("configuring the CPU thread pool")?;
    }
    Ok(())
}

pub fn load_data(spec: &str) -> anyhow::Result<Dataset> {
    load_data_at(spec, None)
}

/// [`load_data`] with an ImageFolder tree read at `size` (`[h, w]`: each image's centred box of
/// that aspect, resized), e.g. a teacher's input size; other formats ignore it.
pub fn load_data_at(spec: &str, size: Option<[usize; 2]>) -> anyhow::Result<Dataset> {
    let options = LoadOptions { size, ..LoadOptions::default() };
    data::load_with(spec, &options).with_context(|| format!("loading dataset `{spec}`"))
}

/// The data a teacher in `teacher_dir` reads: an ImageFolder tree at the teacher's input size,
/// held in memory only up to `memory.in_memory_mb`.
pub fn load_data_for_teacher(spec: &str, teacher_dir: &std::path::Path, memory: &InMemoryArgs) -> anyhow::Result<Dataset> {
    let meta = crate::train::checkpoint::load_meta(teacher_dir)?;
    let options = LoadOptions { size: Some(meta.config.image_size), memory_limit: memory.in_memory_mb << 20 };
    data::load_with(spec, &options).with_context(|| format!("loading dataset `{spec}`"))
}

/// Applies the optional resize and per-class subset of the training commands.
pub fn prepare(mut ds: Dataset, resize: Option<usize>, train_per_class: Option<usize>) -> Dataset {
    if let Some(s) = resize {
        ds = ds.resized(s, s);
    }
    if let Some(k) = train_per_class {
        ds = ds.per_class_subset(k, usize::MAX);
    }
    ds
}

pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// `[h, w]` as `HxW`.
pub fn hxw([h, w]: [usize; 2]) -> String {
    format!("{h}x{w}")
}

/// Digits change meaning when mirrored; clothes do not.
pub fn flips_ok(ds: &Dataset) -> bool {
    !ds.name.eq_ignore_ascii_case("mnist")
}

/// clap value parser for counts and sizes that must be positive (`--batch 0` is refused with the
/// flag named, before any work starts).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// The package's prior from `dir` on `device`, in the UNet precision the package records.
pub fn load_prior<B: DaceBackend>(dir: Option<&Path>, pkg: &Package, device: &B::Device) -> crate::Result<Option<Prior<B>>> {
    let prior = dir.map(|dir| Prior::<B>::load(dir, device)).transpose()?;
    prior.map(|p| p.with_unet_dtype(pkg.manifest.expansion.unet_dtype.float())).transpose()
}

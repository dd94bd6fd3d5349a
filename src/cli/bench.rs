//! `dace bench train|kernels|prior|conformance`: speed and conformance measurements.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::{at_least_one, command_line, setup_threads, BenchOutputArgs};
use crate::fsio;
use crate::models::{Arch, ClassifierConfig, NormKind};
use crate::on_device;

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Train(args) => bench_train(args),
        BenchCommand::Kernels(args) => bench_kernels(args),
        BenchCommand::Prior(args) => bench_prior(args),
        BenchCommand::Conformance(args) => bench_conformance(args),
        BenchCommand::Data(args) => bench_data(args),
    }
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
    /// One epoch of training batches from an image folder: images/s and peak memory, read from
    /// the files or held in memory (bench/data_loading.py adds torchvision).
    Data(BenchDataArgs),
}

#[derive(Args, Debug)]
pub struct BenchDataArgs {
    /// An ImageFolder tree.
    #[arg(long)]
    pub data: String,
    /// Side the images are read at.
    #[arg(long, value_parser = at_least_one, default_value_t = 224)]
    pub size: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = crate::train::CropKind::Resized)]
    pub crop: crate::train::CropKind,
    /// Hold the decoded folder in memory up to this many MiB (0: always read the files).
    #[arg(long, default_value_t = 0)]
    pub in_memory_mb: u64,
    #[command(flatten)]
    pub output: BenchOutputArgs,
}

fn bench_data(args: BenchDataArgs) -> anyhow::Result<()> {
    setup_threads(&args.output.device)?;
    let row = crate::bench::data::bench_epoch(&args.data, args.size, args.batch, args.crop, args.in_memory_mb << 20)?;
    println!(
        "{} images at {}px, {}: load {:.2}s, epoch {:.2}s = {:.0} img/s, peak RSS {} MiB",
        row.images,
        row.size,
        if row.lazy { "read from files" } else { "held in memory" },
        row.load_s,
        row.epoch_s,
        row.img_per_s,
        row.peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}"))
    );
    args.output.write_rows(&[row])
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
    #[arg(long, value_parser = at_least_one, value_delimiter = ',', default_value = "16,64")]
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
    #[command(flatten)]
    pub output: BenchOutputArgs,
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
    #[command(flatten)]
    pub output: BenchOutputArgs,
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
    pub dtype: Vec<crate::package::UNetDType>,
    #[arg(long, value_parser = at_least_one, default_value_t = 64)]
    pub batch: usize,
    /// Denoising steps of the expansion (strength 1: all of them run).
    #[arg(long, value_parser = at_least_one, default_value_t = 5)]
    pub steps: usize,
    /// Minimum seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    #[command(flatten)]
    pub output: BenchOutputArgs,
}

#[derive(Args, Debug)]
pub struct BenchConformanceArgs {
    /// Random cases beside the fixed edge cases.
    #[arg(long, default_value_t = 40)]
    pub random: usize,
    /// Seed of the random cases.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub output: BenchOutputArgs,
}

fn bench_train(args: BenchTrainArgs) -> anyhow::Result<()> {
    use crate::bench::{self, BenchRow};
    use std::time::Duration;
    setup_threads(&args.output.device)?;
    let budget = Duration::from_secs_f64(args.seconds);
    let mut rows: Vec<BenchRow> = Vec::new();
    for &arch in &args.arch {
        for &size in &args.size {
            let channels = args.channels.unwrap_or(if size == 28 { 1 } else { 3 });
            let config = ClassifierConfig::new(arch, channels, 10, [size, size]).with_norm(args.norm);
            for &batch in &args.batch {
                for backend in &args.backend {
                    eprintln!("bench {} {channels}x{size}x{size} batch {batch} on {backend} ...", arch.name());
                    let depth = match arch {
                        Arch::Convnet3 => 3,
                        Arch::Convnet4 => 4,
                        Arch::Convnet5 => 5,
                        _ => 0,
                    };
                    macro_rules! measure {
                        ($B:ty) => {{
                            let device = Default::default();
                            let mut row = bench::bench_model::<$B>(backend, &config, batch, budget, &device);
                            if args.profile {
                                row.convs = bench::convnet_conv_shapes(&config, batch, depth)
                                    .into_iter()
                                    .map(|s| bench::bench_conv::<$B>(s, budget / 4, &device))
                                    .collect();
                            }
                            row
                        }};
                    }
                    let row = match backend.as_str() {
                        "flex" => measure!(burn::backend::Flex),
                        "ndarray" => measure!(burn::backend::NdArray),
                        #[cfg(feature = "candle")]
                        "candle" => measure!(burn::backend::Candle),
                        #[cfg(feature = "wgpu")]
                        "wgpu" => measure!(burn::backend::Wgpu),
                        other => bail!("unknown or not compiled-in backend `{other}`; available: {:?}", bench::available_backends()),
                    };
                    print_bench_row(&row);
                    rows.push(row);
                }
            }
        }
    }
    args.output.write_rows(&rows)?;
    Ok(())
}

fn print_bench_row(row: &crate::bench::BenchRow) {
    println!(
        "{:<8} {:<10} {}x{}x{} batch {:>3}: train {:>8.1} img/s, infer {:>8.1} img/s | step: fwd {:.1} ms, bwd {:.1} ms, optim {:.1} ms",
        row.backend,
        row.arch,
        row.channels,
        row.size,
        row.size,
        row.batch,
        row.train_img_s,
        row.infer_img_s,
        row.step.forward_ms,
        row.step.backward_ms,
        row.step.optimizer_ms
    );
    for c in &row.convs {
        println!(
            "    conv {:?}: dace fwd {:.2} ms, bwd {:.2} ms | burn fwd {:.2} ms, input-grad {:.2} ms, weight-grad {:.2} ms",
            c.shape, c.forward_ms, c.backward_ms, c.burn_forward_ms, c.burn_input_grad_ms, c.burn_weight_grad_ms
        );
    }
}

fn bench_kernels(args: BenchKernelsArgs) -> anyhow::Result<()> {
    use crate::bench::kernels::{bench_scheduler_step, KernelBenchRow};
    use std::time::Duration;
    setup_threads(&args.output.device)?;
    let budget = Duration::from_secs_f64(args.seconds);
    let mut rows: Vec<KernelBenchRow> = Vec::new();
    for spec in &args.shape {
        let dims: Vec<usize> = spec
            .split('x')
            .map(|d| d.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("shape `{spec}`: expected BATCHxCxHxW"))?;
        let [b, c, h, w] = dims[..] else { bail!("shape `{spec}`: expected BATCHxCxHxW") };
        for backend in &args.backend {
            eprintln!("bench kernels {spec} on {backend} ...");
            let row = match backend.as_str() {
                "flex" => bench_scheduler_step::<burn::backend::Flex>(backend, [b, c, h, w], budget, &Default::default()),
                "ndarray" => bench_scheduler_step::<burn::backend::NdArray>(backend, [b, c, h, w], budget, &Default::default()),
                #[cfg(feature = "wgpu")]
                "wgpu" => bench_scheduler_step::<burn::backend::Wgpu>(backend, [b, c, h, w], budget, &Default::default()),
                #[cfg(feature = "cuda")]
                "cuda" => {
                    crate::device::check_cuda()?;
                    bench_scheduler_step::<burn::backend::Cuda>(backend, [b, c, h, w], budget, &Default::default())
                }
                other => bail!("unknown or not compiled-in backend `{other}`"),
            };
            println!(
                "{:<8} {:<26} {:>16}: fused {:>8.3} ms ({:>6.2} GB/s) | unfused {:>8.3} ms ({:.2}x) | copy {:>8.3} ms ({:>6.2} GB/s, fused/copy {:.2})",
                row.backend, row.kernel, spec, row.fused_ms, row.fused_gb_s, row.unfused_ms, row.speedup_vs_unfused,
                row.copy_ms, row.copy_gb_s, row.fused_over_copy
            );
            rows.push(row);
        }
    }
    args.output.write_rows(&rows)?;
    Ok(())
}

fn bench_conformance(args: BenchConformanceArgs) -> anyhow::Result<()> {
    use crate::kernels::conformance::{self, ConformanceRow};
    setup_threads(&args.output.device)?;
    let cases = conformance::cases(args.random, args.seed);
    let device_name = args.output.device.one()?.to_string();
    eprintln!("{} cases x {} kernels on {device_name} against the CPU reference ...", cases.len(), conformance::KERNELS.len());
    let rows: Vec<ConformanceRow> = crate::on_device!(args.output.device.one()?, |B, device| Ok::<_, crate::error::DaceError>(
        conformance::check::<B>(&cases, &device)
    ))?;
    let worst = conformance::worst_per_kernel(&rows);
    for (kernel, err) in &worst {
        println!("{device_name:<6} {kernel:<30} max abs error {err:.2e} over {} cases", cases.len());
    }
    let overall = worst.iter().map(|(_, e)| *e).fold(0f32, f32::max);
    if let Some(path) = &args.output.json {
        #[derive(Serialize)]
        struct Output<'a> {
            command: String,
            device: &'a str,
            tolerance: f32,
            max_abs_err: f32,
            worst_per_kernel: &'a [(String, f32)],
            rows: &'a [ConformanceRow],
        }
        let out = Output {
            command: command_line(),
            device: &device_name,
            tolerance: conformance::TOLERANCE,
            max_abs_err: overall,
            worst_per_kernel: &worst,
            rows: &rows,
        };
        fsio::write_json(path, &out)?;
        println!("rows written to {}", path.display());
    }
    // NaN-aware: an error of NaN does not conform.
    if overall.is_nan() || overall > conformance::TOLERANCE {
        bail!("{device_name} does not conform: max abs error {overall:.2e} > {:.0e}", conformance::TOLERANCE);
    }
    println!("{device_name} conforms: max abs error {overall:.2e} <= {:.0e}", conformance::TOLERANCE);
    Ok(())
}

fn bench_prior(args: BenchPriorArgs) -> anyhow::Result<()> {
    setup_threads(&args.output.device)?;
    let budget = std::time::Duration::from_secs_f64(args.seconds);
    let name = args.output.device.one()?.to_string();
    let rows = on_device!(args.output.device.one()?, |B, device| {
        match (&args.prior, args.layout) {
            (Some(dir), _) => crate::bench::prior::bench_prior::<B>(dir, &args.dtype, &name, args.batch, args.steps, budget, &device),
            (None, Some(layout)) => {
                crate::bench::prior::bench_layout::<B>(layout, args.resolution, &args.dtype, &name, args.batch, args.steps, budget, &device)
            }
            (None, None) => unreachable!("clap requires --prior or --layout"),
        }
    })?;
    for r in &rows {
        let err = r.eps_rel_err_vs_f32.map_or(String::new(), |e| format!(", eps rel err vs f32 {e:.1e}"));
        println!(
            "{:<6} {:<12} {:>4}px {:<4} {:<16} batch {:>4}: {:>9.2} ms/batch, {:>9.2} img/s, {:>8.4} s/image{err}",
            r.device,
            r.prior,
            r.image_shape[1],
            r.dtype,
            r.what,
            r.batch,
            r.ms_per_batch,
            r.img_per_s,
            1.0 / r.img_per_s
        );
    }
    args.output.write_rows(&rows)?;
    Ok(())
}

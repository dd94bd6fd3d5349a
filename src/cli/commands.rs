//! What each subcommand does. Library errors become `anyhow` errors here, with context.

use std::path::Path;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::module::Module;
use serde::Serialize;

use super::{BenchKernelsArgs, CoresetArgs, ExperimentCommand, RdedArgs, StudentArgs, BenchCommand, BenchTrainArgs, Command, DataCommand, DemoArgs, DeviceArgs, EvalArgs, ModelCommand, TeacherCommand, TeacherTrainArgs};
use crate::data::{self, Dataset};
use crate::device::{CpuBackend, DeviceKind};
use crate::fsio;
use crate::models::{Arch, ClassifierConfig, NormKind};
use crate::on_device;
use crate::train::optim::OptimizerConfig;
use crate::train::{self, ImageBatcher, TeacherConfig};

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Data(DataCommand::Fetch { name, dest }) => {
            let dir = data::fetch::fetch(&name, &dest)?;
            let ds = data::load(&dir.to_string_lossy())?;
            println!("{name}: {} train + {} test images in {}", ds.train.len(), ds.test.len(), dir.display());
            Ok(())
        }
        Command::Data(DataCommand::Info { data }) => data_info(&data),
        Command::Model(ModelCommand::Info { arch, channels, size, classes, norm }) => {
            model_info(arch, channels, size, classes, norm)
        }
        Command::Teacher(TeacherCommand::Train(args)) => teacher_train(args),
        Command::Eval(args) => eval(args),
        Command::Demo(args) => demo(args),
        Command::Bench(BenchCommand::Train(args)) => bench_train(args),
        Command::Bench(BenchCommand::Kernels(args)) => bench_kernels(args),
        Command::Bench(BenchCommand::Prior(args)) => super::prior::bench(args),
        Command::Bench(BenchCommand::Conformance(args)) => bench_conformance(args),
        Command::Coreset(args) => coreset(args),
        Command::Student(args) if args.package.is_some() => super::distill::student(args),
        Command::Student(args) => student(args),
        Command::Distill(args) => super::distill::distill(args),
        Command::Expand(args) => super::distill::expand(args),
        Command::Experiment(ExperimentCommand::Rded(args)) => experiment_rded(args),
        Command::Experiment(ExperimentCommand::Expansion(args)) => super::distill::experiment(args),
        Command::Prior(cmd) => super::prior::run(cmd),
        Command::Web(cmd) => super::web::run(cmd),
    }
}

pub(super) fn setup_threads(device: &DeviceArgs) -> anyhow::Result<()> {
    if let Some(n) = device.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("configuring the CPU thread pool")?;
    }
    Ok(())
}

pub(super) fn load_data(spec: &str) -> anyhow::Result<Dataset> {
    data::load(spec).with_context(|| format!("loading dataset `{spec}`"))
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
        if let Some(min) = min_size(arch) {
            if size < min {
                println!("{:<20} {:>14}", arch.name(), format!("(needs >= {min} px)"));
                continue;
            }
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

/// Smallest input a ConvNet-D accepts (each block halves the size).
fn min_size(arch: Arch) -> Option<usize> {
    match arch {
        Arch::Convnet3 => Some(8),
        Arch::Convnet4 => Some(16),
        Arch::Convnet5 => Some(32),
        _ => None,
    }
}

fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Applies the optional resize and per-class subset of the training commands.
pub(super) fn prepare(mut ds: Dataset, resize: Option<usize>, train_per_class: Option<usize>) -> Dataset {
    if let Some(s) = resize {
        ds = ds.resized(s, s);
    }
    if let Some(k) = train_per_class {
        ds = ds.per_class_subset(k, usize::MAX);
    }
    ds
}

pub fn teacher_config(args: &TeacherTrainArgs, ds: &Dataset) -> TeacherConfig {
    let model = ClassifierConfig::new(args.arch, ds.channels, ds.num_classes(), [ds.height, ds.width]).with_norm(args.norm);
    let optimizer = OptimizerConfig::new()
        .with_kind(args.optimizer)
        .with_lr(args.lr)
        .with_weight_decay(args.weight_decay);
    // Digits change meaning when mirrored; clothes do not.
    let digits = ds.name.eq_ignore_ascii_case("mnist");
    TeacherConfig::new(model, optimizer)
        .with_epochs(args.epochs)
        .with_batch_size(args.batch)
        .with_seed(args.seed)
        .with_crop_pad(args.pad.unwrap_or(ds.height.min(ds.width) / 8))
        .with_flip(!args.no_flip && !digits)
}

fn teacher_train(args: TeacherTrainArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let ds = prepare(load_data(&args.data)?, args.resize, args.train_per_class);
    let config = teacher_config(&args, &ds);
    eprintln!(
        "teacher {} on {} ({} train / {} test, {}x{}x{}) for {} epochs on {}",
        args.arch.name(), ds.name, ds.train.len(), ds.test.len(), ds.channels, ds.height, ds.width,
        config.epochs, args.device.device.name()
    );
    let report = on_device!(args.device.device, |B, device| {
        train::train_teacher::<Autodiff<B>>(config, &ds, &args.out, args.resume, &device)
    })?;
    println!(
        "test accuracy {:.2}% after {} epochs; model and report.json in {}",
        report.test_accuracy().unwrap_or(f64::NAN),
        report.history.len(),
        args.out.display()
    );
    Ok(())
}

#[derive(Serialize)]
struct EvalOutput {
    command: &'static str,
    model: String,
    data: String,
    device: DeviceKind,
    resized_from: Option<[usize; 2]>,
    report: train::EvalReport,
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let meta = train::checkpoint::load_meta(&args.model)?;
    let mut ds = load_data(&args.data)?;
    let config = &meta.config;
    if ds.channels != config.in_channels {
        bail!("model {} takes {}-channel images, dataset `{}` has {}", args.model.display(), config.in_channels, args.data, ds.channels);
    }
    if ds.num_classes() != config.num_classes {
        bail!("model {} has {} classes, dataset `{}` has {}", args.model.display(), config.num_classes, args.data, ds.num_classes());
    }
    let original = [ds.height, ds.width];
    let resized_from = (original != config.image_size).then_some(original);
    if resized_from.is_some() {
        ds = ds.resized(config.image_size[0], config.image_size[1]);
    }
    let report = on_device!(args.device.device, |B, device| {
        let (model, meta) = train::load_model::<B>(&args.model, &device)?;
        let batcher = ImageBatcher::plain(&ds, meta.normalization);
        Ok::<_, crate::DaceError>(train::evaluate(&model, &batcher, &ds.test, ds.num_classes(), args.batch, &device))
    })?;
    println!("{}: test accuracy {:.2}% on {} images ({:.0} img/s)", args.model.display(), report.accuracy, report.samples, report.infer_img_per_s);
    for (name, acc) in ds.classes.iter().zip(&report.per_class_accuracy) {
        println!("  {name:<24} {acc:6.2}%");
    }
    let path = args.report.clone().unwrap_or_else(|| args.model.join("eval.json"));
    let output = EvalOutput {
        command: "eval",
        model: args.model.display().to_string(),
        data: args.data.clone(),
        device: args.device.device,
        resized_from,
        report,
    };
    fsio::write_json(&path, &output)?;
    println!("report: {}", path.display());
    Ok(())
}

#[derive(Serialize)]
struct DemoReport {
    command: &'static str,
    dataset: String,
    device: DeviceKind,
    teacher: train::TeacherReport,
    /// The whole pipeline in small: prior, packages of every ablation variant, students.
    ablation: Option<crate::experiment::expansion::ExpansionReport>,
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let ds = data::load_embedded();
    println!(
        "demo: ConvNet-3 teacher on the embedded Fashion-MNIST subset ({} train / {} test) for {} epochs",
        ds.train.len(), ds.test.len(), args.epochs
    );
    let teacher_args = TeacherTrainArgs {
        data: "embedded".into(),
        arch: Arch::Convnet3,
        norm: NormKind::Instance,
        epochs: args.epochs,
        batch: 64,
        optimizer: crate::train::optim::OptimizerKind::Adamw,
        lr: 1e-3,
        weight_decay: 0.01,
        seed: 0,
        pad: None,
        no_flip: false,
        resize: None,
        train_per_class: None,
        out: args.out.join("teacher"),
        resume: false,
        device: args.device.clone(),
    };
    let config = teacher_config(&teacher_args, &ds);
    let teacher = on_device!(args.device.device, |B, device| {
        train::train_teacher::<Autodiff<B>>(config, &ds, &teacher_args.out, false, &device)
    })?;
    let mut report = DemoReport { command: "demo", dataset: ds.name.clone(), device: args.device.device, teacher, ablation: None };
    let path = args.out.join("demo_report.json");
    fsio::write_json(&path, &report)?;
    print_demo_summary(&report, &path);
    if args.teacher_only {
        return Ok(());
    }
    report.ablation = Some(super::distill::demo_ablation(&args, &ds, &teacher_args.out)?);
    fsio::write_json(&path, &report)?;
    println!("report: {}", path.display());
    Ok(())
}

fn print_demo_summary(report: &DemoReport, path: &Path) {
    println!("{:>5} {:>10} {:>10} {:>9} {:>10}", "epoch", "train loss", "train acc", "test acc", "img/s");
    for e in &report.teacher.history {
        println!("{:>5} {:>10.4} {:>9.2}% {:>8.2}% {:>10.0}", e.epoch, e.train_loss, e.train_accuracy, e.test_accuracy, e.train_img_per_s);
    }
    println!("teacher test accuracy: {:.2}%", report.teacher.test_accuracy().unwrap_or(f64::NAN));
    println!("report: {}", path.display());
}

fn bench_train(args: BenchTrainArgs) -> anyhow::Result<()> {
    use crate::bench::{self, BenchRow};
    use std::time::Duration;
    setup_threads(&args.device)?;
    let budget = Duration::from_secs_f64(args.seconds);
    let threads = rayon::current_num_threads();
    let mut rows: Vec<BenchRow> = Vec::new();
    for &arch in &args.arch {
        for &size in &args.size {
            let channels = args.channels.unwrap_or(if size == 28 { 1 } else { 3 });
            let config = ClassifierConfig::new(arch, channels, 10, [size, size]).with_norm(args.norm);
            for &batch in &args.batch {
                for backend in &args.backend {
                    eprintln!("bench {} {channels}x{size}x{size} batch {batch} on {backend} ...", arch.name());
                    let depth = match arch { Arch::Convnet3 => 3, Arch::Convnet4 => 4, Arch::Convnet5 => 5, _ => 0 };
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
    if let Some(path) = &args.json {
        #[derive(Serialize)]
        struct Output<'a> { command: String, threads: usize, rows: &'a [BenchRow] }
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        fsio::write_json(path, &Output { command, threads, rows: &rows })?;
        println!("rows written to {}", path.display());
    }
    Ok(())
}

fn print_bench_row(row: &crate::bench::BenchRow) {
    println!(
        "{:<8} {:<10} {}x{}x{} batch {:>3}: train {:>8.1} img/s, infer {:>8.1} img/s | step: fwd {:.1} ms, bwd {:.1} ms, optim {:.1} ms",
        row.backend, row.arch, row.channels, row.size, row.size, row.batch, row.train_img_s, row.infer_img_s,
        row.step.forward_ms, row.step.backward_ms, row.step.optimizer_ms
    );
    for c in &row.convs {
        println!(
            "    conv {:?}: dace fwd {:.2} ms, bwd {:.2} ms | burn fwd {:.2} ms, input-grad {:.2} ms, weight-grad {:.2} ms",
            c.shape, c.forward_ms, c.backward_ms, c.burn_forward_ms, c.burn_input_grad_ms, c.burn_weight_grad_ms
        );
    }
}

pub(super) fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Digits change meaning when mirrored; clothes do not.
pub(super) fn flips_ok(ds: &Dataset) -> bool {
    !ds.name.eq_ignore_ascii_case("mnist")
}

fn coreset(args: CoresetArgs) -> anyhow::Result<()> {
    use crate::coreset::{self, CoresetConfig};
    setup_threads(&args.device)?;
    let ds = load_data(&args.data)?;
    let config = CoresetConfig { ipc: args.ipc, factor: args.factor, crops: args.crops, mipc: args.mipc, seed: args.seed };
    let c = on_device!(args.device.device, |B, device| {
        let (teacher, meta) = train::load_model::<B>(&args.teacher, &device)?;
        train::teacher::check_fits(&meta.config, &ds)?;
        coreset::select(&ds, &teacher, &meta, &config, &device)
    })?;
    c.save(&args.out)?;
    let m = &c.meta;
    println!(
        "coreset of {}: {} patches of {}x{}x{} ({} per class, from {} images/class x {} crops, {} teacher evaluations, {:.1} s) in {}",
        m.dataset, m.patches.len(), m.channels, m.patch_size[0], m.patch_size[1], m.patches.len() / m.classes.len().max(1),
        m.mipc_used, m.config.crops, m.teacher_evals, m.seconds, args.out.display()
    );
    Ok(())
}

fn student(args: StudentArgs) -> anyhow::Result<()> {
    use crate::coreset::Coreset;
    use crate::student::{self, AugmentConfig, LabelSource, Labels, StoredLabels, StudentConfig, TrainingSet};
    setup_threads(&args.device)?;
    let ds = load_data(&args.data)?;
    let (Some(coreset_dir), Some(teacher_dir)) = (&args.coreset, &args.teacher) else {
        bail!("a coreset student needs --coreset and --teacher");
    };
    let coreset = Coreset::load(coreset_dir)?;
    if coreset.meta.dataset != ds.name || coreset.meta.image_size != [ds.height, ds.width] {
        bail!("coreset {} is of `{}` {:?}, not `{}`", coreset_dir.display(), coreset.meta.dataset, coreset.meta.image_size, ds.name);
    }
    let set = TrainingSet::from_coreset(&coreset, args.layout)?;
    let soft = args.labels != LabelSource::Hard;
    let augment = AugmentConfig {
        crop_scale_min: args.crop_scale_min.unwrap_or(1.0 / coreset.meta.config.factor as f32),
        flip: !args.no_flip && flips_ok(&ds),
        cutmix: soft,
        shuffle_factor: if args.layout == crate::coreset::Layout::Collage { coreset.meta.config.factor } else { 1 },
    };
    let config = StudentConfig {
        model: ClassifierConfig::new(args.arch, ds.channels, ds.num_classes(), [ds.height, ds.width]).with_norm(args.norm),
        epochs: args.epochs,
        batch_size: args.batch.unwrap_or_else(|| student::rded_batch_size(coreset.meta.config.ipc, ds.num_classes(), set.len())),
        lr: 1e-3,
        weight_decay: 0.01,
        temperature: args.temperature,
        augment: augment.clone(),
        seed: args.seed,
        eval_every: (args.epochs / 10).max(1),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report = on_device!(args.device.device, |B, device| {
        let (teacher, meta) = train::load_model::<B>(teacher_dir, &device)?;
        let labels_dir = args.out.join("labels");
        let stored = if args.labels == LabelSource::Stored {
            let seeds: Vec<u64> = (0..args.epochs as u64).collect();
            let l = StoredLabels::compute(&set, &teacher, &meta.normalization, &augment, seeds, &device)?;
            l.save(&labels_dir)?;
            // The student side reads them back from disk, as a receiver of the labels would.
            drop(teacher);
            Some(StoredLabels::load(&labels_dir)?)
        } else {
            None
        };
        let teacher_online = match args.labels {
            LabelSource::Online => Some(train::load_model::<B>(teacher_dir, &device)?.0),
            _ => None,
        };
        let labels = match (&stored, &teacher_online) {
            (Some(s), _) => Labels::Stored(s),
            (_, Some(t)) => Labels::Online(t),
            _ => Labels::Hard,
        };
        student::train_student::<Autodiff<B>>(&config, &set, labels, &meta.normalization, &ds, &device)
    })?;
    #[derive(Serialize)]
    struct Output<'a> { command: String, coreset: String, report: &'a student::StudentReport }
    let path = args.out.join("report.json");
    fsio::write_json(&path, &Output { command: command_line(), coreset: coreset_dir.display().to_string(), report: &report })?;
    println!(
        "student {} on {} ({} images, {:?} labels): final test accuracy {:.2}% (best {:.2}%) after {} epochs, {:.0} s; report {}",
        args.arch.name(), set.description, set.len(), report.labels, report.final_accuracy, report.best_accuracy,
        args.epochs, report.seconds, path.display()
    );
    Ok(())
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
        layout: args.layout,
        labels: args.labels,
        temperature: args.temperature,
        crop_scale_min: args.crop_scale_min,
        flip: !args.no_flip && flips_ok(&ds),
        baselines: !args.no_baselines,
        arch: args.arch,
        norm: args.norm,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report = on_device!(args.device.device, |B, device| {
        rded::run_grid::<Autodiff<B>>(&ds, &args.teacher, &config, command_line(), &args.out, &device)
    })?;
    println!("{}", rded::markdown(&report));
    println!("results in {}", args.out.display());
    Ok(())
}

fn bench_conformance(args: super::BenchConformanceArgs) -> anyhow::Result<()> {
    use crate::kernels::conformance::{self, ConformanceRow};
    setup_threads(&args.device)?;
    let cases = conformance::cases(args.random, args.seed);
    let device_name = args.device.device.name();
    eprintln!("{} cases x {} kernels on {device_name} against the CPU reference ...", cases.len(), conformance::KERNELS.len());
    let rows: Vec<ConformanceRow> = crate::on_device!(args.device.device, |B, device| Ok::<_, crate::error::DaceError>(conformance::check::<B>(&cases, &device)))?;
    let worst = conformance::worst_per_kernel(&rows);
    for (kernel, err) in &worst {
        println!("{device_name:<6} {kernel:<30} max abs error {err:.2e} over {} cases", cases.len());
    }
    let overall = worst.iter().map(|(_, e)| *e).fold(0f32, f32::max);
    if let Some(path) = &args.json {
        #[derive(Serialize)]
        struct Output<'a> {
            command: String,
            device: &'a str,
            tolerance: f32,
            max_abs_err: f32,
            worst_per_kernel: &'a [(String, f32)],
            rows: &'a [ConformanceRow],
        }
        let out = Output { command: command_line(), device: device_name, tolerance: conformance::TOLERANCE, max_abs_err: overall, worst_per_kernel: &worst, rows: &rows };
        fsio::write_json(path, &out)?;
        println!("rows written to {}", path.display());
    }
    if !(overall <= conformance::TOLERANCE) {
        bail!("{device_name} does not conform: max abs error {overall:.2e} > {:.0e}", conformance::TOLERANCE);
    }
    println!("{device_name} conforms: max abs error {overall:.2e} <= {:.0e}", conformance::TOLERANCE);
    Ok(())
}

fn bench_kernels(args: BenchKernelsArgs) -> anyhow::Result<()> {
    use crate::bench::kernels::{bench_scheduler_step, KernelBenchRow};
    use std::time::Duration;
    setup_threads(&args.device)?;
    let budget = Duration::from_secs_f64(args.seconds);
    let mut rows: Vec<KernelBenchRow> = Vec::new();
    for spec in &args.shape {
        let dims: Vec<usize> = spec.split('x').map(|d| d.parse()).collect::<Result<_, _>>().with_context(|| format!("shape `{spec}`: expected BATCHxCxHxW"))?;
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
    if let Some(path) = &args.json {
        #[derive(Serialize)]
        struct Output<'a> { command: String, threads: usize, rows: &'a [KernelBenchRow] }
        fsio::write_json(path, &Output { command: command_line(), threads: rayon::current_num_threads(), rows: &rows })?;
        println!("rows written to {}", path.display());
    }
    Ok(())
}

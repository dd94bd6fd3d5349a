//! `dace prior ...`: train dace's own latent diffusion prior, import a diffusers one, sample from
//! and evaluate a prior.

use burn::backend::Autodiff;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::{at_least_one, load_data, prepare, setup_threads, DeviceArgs};
use crate::on_device;
use crate::prior::bundle::Prior;
use crate::prior::eval::PriorEvalConfig;
use crate::prior::train::{self as prior_train, PriorTrainConfig};

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
pub struct PriorTrainArgs {
    #[arg(long)]
    pub data: String,
    #[arg(long)]
    pub out: PathBuf,
    /// VAE widths per level (n levels downsample by 2^(n-1)): 16,32 gives 14x14 latents at 28 px.
    #[arg(long, value_delimiter = ',', default_value = "16,32")]
    pub vae_channels: Vec<usize>,
    #[arg(long, value_parser = at_least_one, default_value_t = 4)]
    pub latent_channels: usize,
    /// UNet widths per level (level 0 without attention, deeper levels with cross-attention).
    #[arg(long, value_delimiter = ',', default_value = "32,64")]
    pub unet_channels: Vec<usize>,
    #[arg(long, default_value_t = 3000)]
    pub vae_steps: usize,
    #[arg(long, default_value_t = 6000)]
    pub unet_steps: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 250)]
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
    #[arg(long, value_parser = at_least_one, default_value_t = 8)]
    pub per_class: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 20)]
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
    #[arg(long, value_parser = at_least_one, default_value_t = 100)]
    pub samples_per_class: usize,
    #[arg(long, value_parser = at_least_one, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 2.0)]
    pub guidance: f32,
    #[command(flatten)]
    pub device: DeviceArgs,
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
    /// Class names instead of --data: a file with one name per line (names may contain commas,
    /// as ImageNet's "tench, Tinca tinca"), or names separated by commas.
    #[arg(long, required_unless_present = "data")]
    pub classes: Option<String>,
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

pub fn run(cmd: PriorCommand) -> anyhow::Result<()> {
    match cmd {
        PriorCommand::Train(args) => train(args),
        PriorCommand::Sample(args) => sample(args),
        PriorCommand::Eval(args) => eval(args),
        PriorCommand::Import(args) => import(args),
    }
}

fn train(args: PriorTrainArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let ds = prepare(load_data(&args.data)?, None, args.train_per_class);
    let config = PriorTrainConfig {
        vae_channels: args.vae_channels.clone(),
        latent_channels: args.latent_channels,
        unet_channels: args.unet_channels.clone(),
        vae_steps: args.vae_steps,
        unet_steps: args.unet_steps,
        batch_size: args.batch,
        checkpoint_every: args.checkpoint_every,
        seed: args.seed,
        ..PriorTrainConfig::default()
    };
    eprintln!(
        "prior on {} ({} train images, {}x{}x{}): VAE {:?} -> {} latent channels, UNet {:?}; {} + {} steps of batch {} on {}",
        ds.name,
        ds.train.len(),
        ds.channels,
        ds.height,
        ds.width,
        config.vae_channels,
        config.latent_channels,
        config.unet_channels,
        config.vae_steps,
        config.unet_steps,
        config.batch_size,
        args.device.one()?
    );
    let state = on_device!(args.device.one()?, |B, device| {
        prior_train::train_prior::<Autodiff<B>>(config, &ds, &args.out, args.fresh, &device)
    })?;
    let psnr = state.vae_history.last().and_then(|p| p.test_psnr_db).unwrap_or(f64::NAN);
    println!(
        "prior in {} (fingerprint {}): VAE test PSNR {psnr:.2} dB on 1000 test images, latent scale {:.4}",
        args.out.display(),
        state.fingerprint.as_deref().unwrap_or("?"),
        state.scaling_factor.unwrap_or(f64::NAN)
    );
    Ok(())
}

fn sample(args: PriorSampleArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    on_device!(args.device.one()?, |B, device| {
        let prior = Prior::<B>::load(&args.prior, &device)?;
        let n = prior.index.classes.len();
        let ids: Vec<usize> = (0..n).flat_map(|c| std::iter::repeat_n(c, args.per_class)).collect();
        let x = prior_train::sample_classes(
            &prior.vae,
            &prior.unet,
            &prior.classes,
            &ids,
            prior.latent_shape(),
            prior.vae_config.scaling_factor,
            args.steps,
            args.guidance,
            args.seed,
            0,
            &device,
        );
        let [c, h, w] = prior.index.image_shape;
        prior_train::write_images(&x, c, h, w, args.per_class, &args.out)
    })?;
    println!("samples in {}", args.out.display());
    Ok(())
}

fn eval(args: PriorEvalArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let ds = load_data(&args.data)?;
    let cfg = PriorEvalConfig {
        samples_per_class: args.samples_per_class,
        sample_steps: args.steps,
        guidance: args.guidance,
        ..PriorEvalConfig::default()
    };
    let report = on_device!(args.device.one()?, |B, device| {
        let prior = Prior::<B>::load(&args.prior, &device)?;
        let (teacher, meta) = crate::train::checkpoint::load_model::<B>(&args.teacher, &device)?;
        crate::prior::eval::evaluate_prior(&prior, &ds, &teacher, &meta, &cfg, &args.out, &device)
    })?;
    crate::fsio::write_json(&args.out.join("prior_eval.json"), &report)?;
    println!(
        "VAE PSNR {:.2} dB on {} test images; teacher accuracy of class-conditional samples {:.2}%; report and grids in {}",
        report.vae_psnr_db,
        report.test_images,
        report.cond_teacher_acc,
        args.out.display()
    );
    for c in &report.cond_teacher_acc_per_class {
        println!("  {:<12} {:6.2}%", c.class, c.accuracy);
    }
    Ok(())
}

fn import(args: PriorImportArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let (dataset, classes) = match &args.data {
        Some(data) => {
            let ds = load_data(data)?;
            (ds.name.clone(), ds.classes.clone())
        }
        None => {
            let spec = args.classes.as_deref().ok_or_else(|| anyhow::anyhow!("give --data or --classes"))?;
            let classes = crate::data::names::class_list(spec).map_err(|e| anyhow::anyhow!("--classes: {e}"))?;
            (args.dataset.clone(), classes)
        }
    };
    let opts = crate::prior::import::ImportOptions { dataset, classes, prompt: args.prompt.clone(), resolution: args.resolution };
    eprintln!(
        "importing {} for {} classes (prompt {:?}, {} px) on {}",
        args.diffusers.display(),
        opts.classes.len(),
        opts.prompt,
        opts.resolution,
        args.device.one()?
    );
    let report = on_device!(args.device.one()?, |B, device| crate::prior::import::import::<B>(&args.diffusers, &opts, &args.out, &device))?;
    crate::fsio::write_json(&args.out.join("import_report.json"), &report)?;
    println!(
        "{} ({}) imported to {} in {:.1} s: {} classes x {} tokens x {} (pooled {:?}); fingerprint {}",
        report.record.pipeline,
        args.diffusers.display(),
        report.out,
        report.seconds,
        report.record.prompts.len(),
        report.tokens,
        report.context_dim,
        report.pooled_dim,
        report.fingerprint
    );
    Ok(())
}

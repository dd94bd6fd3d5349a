//! `dace prior ...`: train dace's own latent diffusion prior, import a diffusers one, sample from
//! and evaluate a prior.

use burn::backend::Autodiff;

use super::commands::{load_data, prepare, setup_threads};
use super::{PriorCommand, PriorEvalArgs, PriorImportArgs, PriorSampleArgs, PriorTrainArgs};
use crate::on_device;
use crate::prior::bundle::Prior;
use crate::prior::eval::PriorEvalConfig;
use crate::prior::train::{self as prior_train, PriorTrainConfig};

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
        ds.name, ds.train.len(), ds.channels, ds.height, ds.width, config.vae_channels, config.latent_channels,
        config.unet_channels, config.vae_steps, config.unet_steps, config.batch_size, args.device.device.name()
    );
    let state = on_device!(args.device.device, |B, device| {
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
    on_device!(args.device.device, |B, device| {
        let prior = Prior::<B>::load(&args.prior, &device)?;
        let n = prior.index.classes.len();
        let ids: Vec<usize> = (0..n).flat_map(|c| std::iter::repeat_n(c, args.per_class)).collect();
        let x = prior_train::sample_classes(
            &prior.vae, &prior.unet, &prior.classes, &ids, prior.latent_shape(), prior.vae_config.scaling_factor,
            args.steps, args.guidance, args.seed, 0, &device,
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
    let report = on_device!(args.device.device, |B, device| {
        let prior = Prior::<B>::load(&args.prior, &device)?;
        let (teacher, meta) = crate::train::checkpoint::load_model::<B>(&args.teacher, &device)?;
        crate::prior::eval::evaluate_prior(&prior, &ds, &teacher, &meta, &cfg, &args.out, &device)
    })?;
    crate::fsio::write_json(&args.out.join("prior_eval.json"), &report)?;
    println!(
        "VAE PSNR {:.2} dB on {} test images; teacher accuracy of class-conditional samples {:.2}%; report and grids in {}",
        report.vae_psnr_db, report.test_images, report.cond_teacher_acc, args.out.display()
    );
    for c in &report.cond_teacher_acc_per_class {
        println!("  {:<12} {:6.2}%", c.class, c.accuracy);
    }
    Ok(())
}

pub fn bench(args: super::BenchPriorArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let budget = std::time::Duration::from_secs_f64(args.seconds);
    let name = args.device.device.name();
    let rows = on_device!(args.device.device, |B, device| {
        match (&args.prior, args.layout) {
            (Some(dir), _) => crate::bench::prior::bench_prior::<B>(dir, &args.dtype, name, args.batch, args.steps, budget, &device),
            (None, Some(layout)) => crate::bench::prior::bench_layout::<B>(layout, args.resolution, &args.dtype, name, args.batch, args.steps, budget, &device),
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
    if let Some(path) = &args.json {
        #[derive(serde::Serialize)]
        struct Output<'a> {
            command: String,
            threads: usize,
            rows: &'a [crate::bench::prior::PriorBenchRow],
        }
        crate::fsio::write_json(path, &Output { command: super::commands::command_line(), threads: rayon::current_num_threads(), rows: &rows })?;
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
        None => (args.dataset.clone(), args.classes.clone()),
    };
    let opts = crate::prior::import::ImportOptions { dataset, classes, prompt: args.prompt.clone(), resolution: args.resolution };
    eprintln!(
        "importing {} for {} classes (prompt {:?}, {} px) on {}",
        args.diffusers.display(),
        opts.classes.len(),
        opts.prompt,
        opts.resolution,
        args.device.device.name()
    );
    let report = on_device!(args.device.device, |B, device| {
        crate::prior::import::import::<B>(&args.diffusers, &opts, &args.out, &device)
    })?;
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

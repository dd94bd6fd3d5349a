//! Teacher training: a classifier trained on the full dataset with hard labels. Checkpoints every
//! epoch (weights, optimiser state, history) and resumes from the last one.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::record::Recorder;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::batch::{CropKind, ImageBatcher};
use super::checkpoint::{self, ModelMeta, Normalization};
use super::eval::{evaluate, EvalReport};
use super::optim::{cosine_lr, OptimizerConfig, OptimizerKind};
use super::progress;
use super::step::{optimizer_step, StepAt};
use crate::data::{augment, Dataset};
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::TrainBackend;
use crate::models::{Classifier, ClassifierConfig};

const STATE_FILE: &str = "train_state.json";
const OPTIM_FILE: &str = "optim.bin";
pub const REPORT_FILE: &str = "report.json";

#[derive(Config, Debug)]
pub struct TeacherConfig {
    pub model: ClassifierConfig,
    pub optimizer: OptimizerConfig,
    #[config(default = 15)]
    pub epochs: usize,
    #[config(default = 128)]
    pub batch_size: usize,
    #[config(default = 0)]
    pub seed: u64,
    /// The random crop of the augmentation.
    #[config(default = "CropKind::Padded")]
    pub crop: CropKind,
    /// Zero padding of the `Padded` crop (0 = no crop).
    #[config(default = 2)]
    pub crop_pad: usize,
    #[config(default = true)]
    pub flip: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub seconds: f64,
    pub train_img_per_s: f64,
    pub infer_img_per_s: f64,
}

/// Written after every epoch; the final one is the run's JSON report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TeacherReport {
    pub command: String,
    pub config: TeacherConfig,
    pub dataset: String,
    pub train_samples: usize,
    pub test_samples: usize,
    pub device: String,
    pub history: Vec<EpochStats>,
    pub finished: bool,
    pub final_eval: Option<EvalReport>,
}

impl TeacherReport {
    pub fn test_accuracy(&self) -> Option<f64> {
        self.history.last().map(|e| e.test_accuracy)
    }
}

/// Trains (or resumes) a teacher into `out`. The model is saved with `model.json`/`model.bin`.
pub fn train_teacher<B: TrainBackend>(
    config: TeacherConfig,
    ds: &Dataset,
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<TeacherReport> {
    check_fits(&config.model, ds)?;
    if config.batch_size == 0 || config.epochs == 0 {
        return Err(DaceError::Invalid(format!(
            "teacher: batch size ({}) and epochs ({}) must be at least 1",
            config.batch_size, config.epochs
        )));
    }
    let (mean, std) = augment::channel_mean_std(ds)?;
    let normalization = Normalization { mean, std };
    match config.optimizer.kind {
        OptimizerKind::Adamw => {
            let optim = AdamWConfig::new().with_weight_decay(config.optimizer.weight_decay as f32).init::<B, Classifier<B>>();
            run(config, ds, normalization, optim, out, resume, device)
        }
        OptimizerKind::Sgd => {
            let optim = SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new().with_momentum(config.optimizer.momentum).with_dampening(0.0)))
                .with_weight_decay(Some(WeightDecayConfig::new(config.optimizer.weight_decay as f32)))
                .init::<B, Classifier<B>>();
            run(config, ds, normalization, optim, out, resume, device)
        }
    }
}

pub fn check_fits(model: &ClassifierConfig, ds: &Dataset) -> Result<()> {
    model.validate().map_err(DaceError::Invalid)?;
    if model.in_channels != ds.channels || model.image_size != [ds.height, ds.width] {
        return Err(DaceError::Invalid(format!(
            "model expects {}x{}x{} images but dataset `{}` has {}x{}x{}",
            model.in_channels, model.image_size[0], model.image_size[1], ds.name, ds.channels, ds.height, ds.width
        )));
    }
    if model.num_classes != ds.num_classes() {
        return Err(DaceError::Invalid(format!(
            "model has {} classes but dataset `{}` has {}",
            model.num_classes,
            ds.name,
            ds.num_classes()
        )));
    }
    Ok(())
}

fn run<B: TrainBackend, O: Optimizer<Classifier<B>, B>>(
    config: TeacherConfig,
    ds: &Dataset,
    normalization: Normalization,
    mut optim: O,
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<TeacherReport> {
    let meta = ModelMeta::new(config.model.clone(), normalization.clone(), &ds.name, &ds.classes);
    let mut model: Classifier<B> = config.model.init(device);
    let mut report = TeacherReport {
        command: "teacher train".into(),
        config: config.clone(),
        dataset: ds.name.clone(),
        train_samples: ds.train.len(),
        test_samples: ds.test.len(),
        device: format!("{device:?}"),
        history: Vec::new(),
        finished: false,
        final_eval: None,
    };
    if resume && out.join(STATE_FILE).exists() {
        (model, optim, report.history) = resume_from(out, &config, ds, optim, device)?;
        eprintln!("resuming {} after epoch {}", out.display(), report.history.len());
    }
    let batcher = ImageBatcher::plain(ds, normalization).augmenting(config.crop, config.crop_pad, config.flip);
    let eval_batcher = ImageBatcher { crop: CropKind::Padded, crop_pad: 0, flip: false, ..batcher.clone() };
    for epoch in report.history.len()..config.epochs {
        let start = Instant::now();
        let (trained, loss_sum, correct) = train_epoch(model, &mut optim, &config, ds, &batcher, epoch, device)?;
        model = trained;
        let train_seconds = start.elapsed().as_secs_f64();
        let eval = evaluate(&model.valid(), &eval_batcher, &ds.test, ds.num_classes(), 256, device)?;
        let stats = EpochStats {
            epoch: epoch + 1,
            train_loss: loss_sum / ds.train.len() as f64,
            train_accuracy: 100.0 * correct as f64 / ds.train.len() as f64,
            test_accuracy: eval.accuracy,
            test_loss: eval.mean_loss,
            seconds: start.elapsed().as_secs_f64(),
            train_img_per_s: ds.train.len() as f64 / train_seconds,
            infer_img_per_s: eval.infer_img_per_s,
        };
        print_epoch(&stats, config.epochs);
        report.history.push(stats);
        report.finished = epoch + 1 == config.epochs;
        if report.finished {
            report.final_eval = Some(eval);
        }
        save_state(out, &model, &meta, &optim, &report)?;
    }
    report.finished = true;
    if report.final_eval.is_none() {
        let (model, meta) = checkpoint::load_model::<B::InnerBackend>(out, device)?;
        let batcher = ImageBatcher::plain(ds, meta.normalization);
        report.final_eval = Some(evaluate(&model, &batcher, &ds.test, ds.num_classes(), 256, device)?);
    }
    fsio::write_json(&out.join(REPORT_FILE), &report)?;
    Ok(report)
}

/// The weights, optimiser state and history of an interrupted run in `out`, after checking that
/// it trained this architecture on this dataset.
fn resume_from<B: TrainBackend, O: Optimizer<Classifier<B>, B>>(
    out: &Path,
    config: &TeacherConfig,
    ds: &Dataset,
    optim: O,
    device: &B::Device,
) -> Result<(Classifier<B>, O, Vec<EpochStats>)> {
    let state_path = out.join(STATE_FILE);
    let saved: TeacherReport = fsio::read_json(&state_path)?;
    if saved.config.model.arch != config.model.arch || saved.dataset != ds.name {
        return Err(DaceError::bad_file(
            &state_path,
            format!("checkpoint is for {:?} on `{}`, not this run", saved.config.model.arch, saved.dataset),
        ));
    }
    let (model, _) = checkpoint::load_model::<B>(out, device)?;
    let optim_path = out.join(OPTIM_FILE);
    let record = checkpoint::WeightRecorder::default()
        .load(fsio::read(&optim_path)?, device)
        .map_err(|e| DaceError::bad_file(&optim_path, format!("cannot read optimiser state: {e}")))?;
    Ok((model, optim.load_record(record), saved.history))
}

/// One pass over the shuffled training set. Returns the model, the summed loss and the number
/// of correct predictions.
fn train_epoch<B: TrainBackend, O: Optimizer<Classifier<B>, B>>(
    mut model: Classifier<B>,
    optim: &mut O,
    config: &TeacherConfig,
    ds: &Dataset,
    batcher: &ImageBatcher,
    epoch: usize,
    device: &B::Device,
) -> Result<(Classifier<B>, f64, usize)> {
    let steps_per_epoch = ds.train.len().div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let mut order: Vec<usize> = (0..ds.train.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(epoch as u64)));
    let bar = progress::bar(steps_per_epoch as u64, format!("epoch {}/{}", epoch + 1, config.epochs));
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for (step, batch) in order.chunks(config.batch_size).enumerate() {
        let seed = config.seed ^ ((epoch as u64) << 32 | step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let images = batcher.images::<B>(&ds.train, batch, Some(seed), device)?;
        let labels = ImageBatcher::labels::<B>(&ds.train, batch, device);
        let logits = model.forward(images);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(device).forward(logits.clone(), labels.clone());
        let hits = logits.argmax(1).squeeze_dim::<1>(1).equal(labels).int().sum();
        let lr = cosine_lr(config.optimizer.lr, epoch * steps_per_epoch + step, total_steps);
        let (updated, loss_value) = optimizer_step(model, optim, loss, lr, StepAt { epoch: epoch + 1, step }, &bar)?;
        model = updated;
        loss_sum += loss_value as f64 * batch.len() as f64;
        correct += hits.into_scalar().elem::<i64>() as usize;
        let seen = (step * config.batch_size + batch.len()) as f64;
        bar.set_message(format!("loss {:.4} acc {:.2}%", loss_sum / seen, 100.0 * correct as f64 / seen));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((model, loss_sum, correct))
}

fn print_epoch(stats: &EpochStats, epochs: usize) {
    eprintln!(
        "epoch {:>3}/{epochs}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.0}s, {:.0} img/s train, {:.0} img/s infer",
        stats.epoch,
        stats.train_loss,
        stats.train_accuracy,
        stats.test_loss,
        stats.test_accuracy,
        stats.seconds,
        stats.train_img_per_s,
        stats.infer_img_per_s
    );
}

/// Weights and optimiser first, history last: a crash between them resumes one epoch early
/// rather than skipping one.
fn save_state<B: TrainBackend, O: Optimizer<Classifier<B>, B>>(
    out: &Path,
    model: &Classifier<B>,
    meta: &ModelMeta,
    optim: &O,
    report: &TeacherReport,
) -> Result<()> {
    checkpoint::save_model(out, model, meta)?;
    let optim_bytes = checkpoint::WeightRecorder::default()
        .record(optim.to_record(), ())
        .map_err(|e| DaceError::Invalid(format!("cannot serialise optimiser state: {e}")))?;
    fsio::write_atomic(&out.join(OPTIM_FILE), &optim_bytes)?;
    fsio::write_json(&out.join(STATE_FILE), report)
}

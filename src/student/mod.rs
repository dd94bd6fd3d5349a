//! Student training on a distilled set (RDED's recipe): KL divergence to
//! the teacher's temperature-softened outputs, AdamW without decay on biases and norm parameters,
//! the cosine-to-half schedule, and final-epoch test accuracy as the result.

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod feed;
pub mod labels;
pub mod package;
pub mod set;

use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use checkpoint::StudentCheckpoint;
pub use config::{rded_batch_size, rded_lr_factor, EpochPoint, StudentConfig, ADAM_EPSILON};
pub use feed::{EpochFeed, EpochImages, EpochSource};
pub use labels::StoredLabels;
pub use set::TrainingSet;

use crate::data::Dataset;
use crate::error::{DaceError, Result};
use crate::kernels::TrainBackend;
use crate::models::Classifier;
use crate::train::step::{finite_loss, StepAt};
use crate::train::{evaluate, progress, EvalReport, ImageBatcher, Normalization};

/// Where the training targets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LabelSource {
    /// Teacher run on every augmented batch (RDED's own setting; the teacher must be present).
    Online,
    /// Precomputed per (item, seed) (the transmitted setting: no teacher at training time).
    Stored,
    /// The true class, cross-entropy (baselines).
    Hard,
}

/// The targets, with what each source needs.
pub enum Labels<'a, B: Backend> {
    Online(&'a Classifier<B>),
    Stored(&'a StoredLabels),
    Hard,
}

impl<B: Backend> Labels<'_, B> {
    pub fn source(&self) -> LabelSource {
        match self {
            Labels::Online(_) => LabelSource::Online,
            Labels::Stored(_) => LabelSource::Stored,
            Labels::Hard => LabelSource::Hard,
        }
    }
}

/// Augmentation seed of epoch `e`: the epoch index itself for stored labels (the seed list of the
/// label file), a per-run stream otherwise.
fn epoch_seed(labels_stored: Option<&StoredLabels>, run_seed: u64, e: usize) -> u64 {
    match labels_stored {
        Some(l) => l.meta.seeds[e % l.meta.seeds.len()],
        None => (run_seed << 20) ^ (e as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

/// Test images of the learning curve's intermediate points (every k-th image of the test split);
/// the final epoch is always evaluated on the whole split.
pub const CURVE_TEST_IMAGES: usize = 2000;

fn curve_subset(ds: &Dataset, n: usize) -> crate::data::Split {
    let step = ds.test.len().div_ceil(n.max(1)).max(1);
    let every: Vec<usize> = (0..ds.test.len()).step_by(step).collect();
    ds.test.select(&every, ds.image_len())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudentReport {
    pub config: StudentConfig,
    pub set: String,
    pub train_images: usize,
    pub labels: LabelSource,
    pub history: Vec<EpochPoint>,
    /// Test accuracy after the last epoch (the headline number).
    pub final_accuracy: f64,
    /// Best evaluated accuracy over the last 20 % of epochs (RDED reports this; an extra column
    /// only; intermediate points are on the curve subset).
    pub best_accuracy: f64,
    pub per_class_accuracy: Vec<f64>,
    pub seconds: f64,
    /// Training images/s, regeneration excluded.
    pub train_img_per_s: f64,
    /// Time spent regenerating epoch images from seeds (0 for fixed sets).
    #[serde(default)]
    pub regen_seconds: f64,
}

/// Ids of the parameters AdamW decays: everything but biases and norm scales/shifts (rank 1).
fn decayed_params<B: Backend, M: Module<B>>(module: &M) -> (Vec<ParamId>, Vec<ParamId>) {
    struct Split(Vec<ParamId>, Vec<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Split {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if D > 1 {
                self.0.push(param.id)
            } else {
                self.1.push(param.id)
            }
        }
    }
    let mut split = Split(Vec::new(), Vec::new());
    module.visit(&mut split);
    (split.0, split.1)
}

/// Trains a student on `set` and evaluates it on the test split of `ds`.
pub fn train_student<B: TrainBackend>(
    config: &StudentConfig,
    set: &TrainingSet,
    labels: Labels<'_, B::InnerBackend>,
    norm: &Normalization,
    ds: &Dataset,
    device: &B::Device,
) -> Result<StudentReport> {
    train_student_with::<B>(config, set, labels, norm, ds, None, None, device)
}

/// [`train_student`] with each epoch's images supplied by `epoch_images` (stored labels only: the
/// seed of epoch `e` is `seeds[e % len]` of the labels, which also indexes the images; made one
/// epoch ahead on another thread where the source allows), saving its state after every epoch
/// into `checkpoint` (and resuming from it where allowed).
pub fn train_student_with<B: TrainBackend>(
    config: &StudentConfig,
    set: &TrainingSet,
    labels: Labels<'_, B::InnerBackend>,
    norm: &Normalization,
    ds: &Dataset,
    epoch_images: Option<EpochSource<'_>>,
    checkpoint: Option<&StudentCheckpoint>,
    device: &B::Device,
) -> Result<StudentReport> {
    check_inputs(config, set, &labels, epoch_images.is_some())?;
    let start = Instant::now();
    let set_fingerprint = checkpoint.map(|_| set.fingerprint()).unwrap_or_default();
    let resumed = checkpoint.map(|c| c.check_start(config, &set_fingerprint)).transpose()?.flatten();
    B::seed(device, config.seed);
    let mut model: Classifier<B> = match (checkpoint, &resumed) {
        (Some(c), Some(p)) => c.load_model(config, p.epochs_done, device)?,
        _ => config.model.init(device),
    };
    let mut optim = StudentOptimizer::new(&model, config.weight_decay);
    if let (Some(c), Some(p)) = (checkpoint, &resumed) {
        optim.optims = c.load_optims(p.epochs_done, optim.optims, device)?;
        eprintln!("student: resuming {} after epoch {}", c.dir.display(), p.epochs_done);
    }
    let mut run = resumed.unwrap_or_default();
    let stored = match &labels {
        Labels::Stored(s) => Some(*s),
        _ => None,
    };
    let eval = StudentEval { batcher: ImageBatcher::plain(ds, norm.clone()), curve_split: curve_subset(ds, CURVE_TEST_IMAGES), ds };
    let mut last_eval = None;
    let bar = progress::bar(config.epochs as u64, format!("student {}", set.description));
    bar.inc(run.epochs_done as u64);
    let plan: Vec<(usize, u64)> = (run.epochs_done..config.epochs).map(|e| (e, epoch_seed(stored, config.seed, e))).collect();
    let wanted = stored.map(|s| plan.iter().map(|&(e, seed)| (stored_index(s, e), seed)).collect()).unwrap_or_default();
    // The weights move into the scope (its loop replaces them every step) and come back out.
    let model = std::thread::scope(|scope| -> Result<Classifier<B>> {
        let mut feed = EpochFeed::start(scope, epoch_images, wanted);
        for &(epoch, seed) in &plan {
            let epoch_start = Instant::now();
            let mut order: Vec<usize> = (0..set.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
            let lr = config.lr * rded_lr_factor(epoch, config.epochs);
            let mut loss_sum = 0.0;
            // The wait for this epoch's images (all of their making unless prefetched).
            let t = Instant::now();
            let regenerated = feed.next_epoch()?;
            run.regen_seconds += t.elapsed().as_secs_f64();
            let images: &[u8] = regenerated.as_deref().map_or(&set.images, |v| v.as_slice());
            for batch in order.chunks(config.batch_size) {
                let n = batch.len();
                let views = set.views_in(images, batch, seed, &config.augment, norm);
                let x = Tensor::<B, 4>::from_data(TensorData::new(views, [n, set.channels, set.height, set.width]), device);
                let logits = model.forward(x.clone());
                let loss = batch_loss(&labels, set, batch, epoch, x, logits, config.temperature, device);
                let value = finite_loss(&loss, StepAt { epoch: epoch + 1, step: run.trained_images }, &bar)?;
                loss_sum += value as f64 * n as f64;
                model = optim.step(lr, model, loss);
                run.trained_images += n;
            }
            run.train_seconds += epoch_start.elapsed().as_secs_f64();
            let test_accuracy = if epoch + 1 == config.epochs {
                let full = eval.full(&model, device)?;
                let acc = full.accuracy;
                last_eval = Some(full);
                Some(acc)
            } else {
                eval.curve_point(epoch, config.eval_every, &model, device)?
            };
            run.history.push(EpochPoint { epoch: epoch + 1, train_loss: loss_sum / set.len() as f64, test_accuracy });
            run.epochs_done = epoch + 1;
            if let Some(c) = checkpoint {
                c.save(config, &set_fingerprint, &model, &optim.optims, &run)?;
            }
            bar.set_message(format!(
                "loss {:.4}{}",
                loss_sum / set.len() as f64,
                run.history.iter().rev().find_map(|p| p.test_accuracy).map(|a| format!(" test {a:.2}%")).unwrap_or_default()
            ));
            bar.inc(1);
        }
        Ok(model)
    })?;
    bar.finish_and_clear();
    // A run resumed after its last epoch (killed while writing its report) evaluates again.
    let eval = match last_eval {
        Some(e) => e,
        None => eval.full(&model, device)?,
    };
    let history = run.history;
    // RDED's reporting: the best evaluation over the last 20 % of training.
    let best = history.iter().filter(|p| 5 * p.epoch >= 4 * config.epochs).filter_map(|p| p.test_accuracy).fold(f64::MIN, f64::max);
    Ok(StudentReport {
        config: config.clone(),
        set: set.description.clone(),
        train_images: set.len(),
        labels: labels.source(),
        history,
        final_accuracy: eval.accuracy,
        best_accuracy: best,
        per_class_accuracy: eval.per_class_accuracy,
        seconds: start.elapsed().as_secs_f64(),
        train_img_per_s: run.trained_images as f64 / (run.train_seconds - run.regen_seconds).max(1e-9),
        regen_seconds: run.regen_seconds,
    })
}

/// Refuses a run that cannot train before any work starts.
fn check_inputs<B: Backend>(config: &StudentConfig, set: &TrainingSet, labels: &Labels<'_, B>, regenerated: bool) -> Result<()> {
    if set.is_empty() {
        return Err(DaceError::Invalid("empty training set".into()));
    }
    if config.batch_size == 0 || config.epochs == 0 {
        return Err(DaceError::Invalid(format!(
            "student: batch size ({}) and epochs ({}) must be at least 1",
            config.batch_size, config.epochs
        )));
    }
    if regenerated && !matches!(labels, Labels::Stored(_)) {
        return Err(DaceError::Invalid("regenerated training images need the stored labels made for them".into()));
    }
    if let Labels::Stored(stored) = labels {
        stored.check_fits(set, &config.augment)?;
    }
    Ok(())
}

/// The loss of one batch: cross-entropy to the class, or KL to the teacher's softened outputs
/// (run online on the same augmented views, or stored for this epoch's seed).
fn batch_loss<B: TrainBackend>(
    labels: &Labels<'_, B::InnerBackend>,
    set: &TrainingSet,
    batch: &[usize],
    epoch: usize,
    x: Tensor<B, 4>,
    logits: Tensor<B, 2>,
    temperature: f64,
    device: &B::Device,
) -> Tensor<B, 1> {
    let n = batch.len();
    match labels {
        Labels::Hard => {
            let y: Vec<i64> = batch.iter().map(|&i| set.labels[i] as i64).collect();
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [n]), device);
            burn::nn::loss::CrossEntropyLossConfig::new().init(device).forward(logits, y)
        }
        Labels::Online(teacher) => {
            let target = teacher.forward(x.inner());
            kl_loss(logits, Tensor::from_inner(target), temperature)
        }
        Labels::Stored(s) => {
            let si = stored_index(s, epoch);
            let v: Vec<f32> = batch.iter().flat_map(|&i| s.get(si, i).iter().copied()).collect();
            kl_loss(logits, Tensor::from_data(TensorData::new(v, [n, set.num_classes]), device), temperature)
        }
    }
}

/// RDED's AdamW: weight decay on weights only, none on biases and norm parameters.
struct StudentOptimizer<B: TrainBackend> {
    decay: Vec<ParamId>,
    plain: Vec<ParamId>,
    /// The decayed group's optimiser, then the plain group's (the order of the checkpoint).
    optims: [OptimizerAdaptor<AdamW, Classifier<B>, B>; 2],
}

impl<B: TrainBackend> StudentOptimizer<B> {
    fn new(model: &Classifier<B>, weight_decay: f64) -> Self {
        let (decay, plain) = decayed_params(model);
        // PyTorch's AdamW epsilon (burn's default is 1e-5). With T = 20 and no T^2 factor the KL
        // gradients are ~1/400 of a cross-entropy's, small enough for 1e-5 to damp Adam's steps.
        let adamw = || AdamWConfig::new().with_epsilon(ADAM_EPSILON);
        let opt_decay = adamw().with_weight_decay(weight_decay as f32).init::<B, Classifier<B>>();
        let opt_plain = adamw().with_weight_decay(0.0).init::<B, Classifier<B>>();
        StudentOptimizer { decay, plain, optims: [opt_decay, opt_plain] }
    }

    /// Backpropagates `loss` (already checked finite) and updates both parameter groups.
    fn step(&mut self, lr: f64, model: Classifier<B>, loss: Tensor<B, 1>) -> Classifier<B> {
        let mut grads = loss.backward();
        let g_decay = GradientsParams::from_params(&mut grads, &model, &self.decay);
        let g_plain = GradientsParams::from_params(&mut grads, &model, &self.plain);
        let [opt_decay, opt_plain] = &mut self.optims;
        let model = opt_decay.step(lr, model, g_decay);
        opt_plain.step(lr, model, g_plain)
    }
}

/// The student's evaluations: the full test split at the end, a fixed subset for the curve.
struct StudentEval<'a> {
    batcher: ImageBatcher,
    curve_split: crate::data::Split,
    ds: &'a Dataset,
}

impl StudentEval<'_> {
    fn full<B: TrainBackend>(&self, model: &Classifier<B>, device: &B::Device) -> Result<EvalReport> {
        Ok(evaluate(&model.valid(), &self.batcher, &self.ds.test, self.ds.num_classes(), 500, device)?)
    }

    /// The learning curve's point after `epoch` (every `every` epochs; never when 0).
    fn curve_point<B: TrainBackend>(&self, epoch: usize, every: usize, model: &Classifier<B>, device: &B::Device) -> Result<Option<f64>> {
        if every == 0 || !(epoch + 1).is_multiple_of(every) {
            return Ok(None);
        }
        Ok(Some(evaluate(&model.valid(), &self.batcher, &self.curve_split, self.ds.num_classes(), 500, device)?.accuracy))
    }
}

fn stored_index(s: &StoredLabels, epoch: usize) -> usize {
    epoch % s.meta.seeds.len()
}

/// KL(teacher || student) on temperature-softened outputs, summed over classes and averaged over
/// the batch (PyTorch's `kl_div(reduction="batchmean")`).
pub fn kl_loss<B: Backend>(student: Tensor<B, 2>, teacher: Tensor<B, 2>, t: f64) -> Tensor<B, 1> {
    let n = student.dims()[0] as f64;
    let teacher = teacher.detach().div_scalar(t);
    let p = softmax(teacher.clone(), 1);
    let log_p = log_softmax(teacher, 1);
    let log_q = log_softmax(student.div_scalar(t), 1);
    (p * (log_p - log_q)).sum().div_scalar(n)
}

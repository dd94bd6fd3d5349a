//! Student training on a distilled set (RDED's recipe): KL divergence to
//! the teacher's temperature-softened outputs, AdamW without decay on biases and norm parameters,
//! the cosine-to-half schedule, and final-epoch test accuracy as the result.

pub mod augment;
pub mod labels;
pub mod package;
pub mod set;

use std::sync::Arc;
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

pub use labels::StoredLabels;
pub use set::TrainingSet;

use crate::data::Dataset;
use crate::error::{DaceError, Result};
use crate::kernels::TrainBackend;
use crate::models::{Classifier, ClassifierConfig};
use crate::package::AugmentConfig;
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudentConfig {
    pub model: ClassifierConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub temperature: f64,
    pub augment: AugmentConfig,
    /// Student seed: initialisation, batch order, and (online labels) the augmentation seeds.
    pub seed: u64,
    /// Test-set evaluation every this many epochs (the last epoch always).
    pub eval_every: usize,
}

impl StudentConfig {
    /// RDED's recipe (AdamW at 1e-3 with decay 0.01, a test evaluation every tenth of the run)
    /// for `model`, with the run's own length, batch, temperature, augmentation and seed.
    pub fn rded(model: ClassifierConfig, epochs: usize, batch_size: usize, temperature: f64, augment: AugmentConfig, seed: u64) -> Self {
        StudentConfig {
            model,
            epochs,
            batch_size,
            lr: 1e-3,
            weight_decay: 0.01,
            temperature,
            augment,
            seed,
            eval_every: (epochs / 10).max(1),
        }
    }
}

/// AdamW's epsilon: PyTorch's default, which RDED uses.
pub const ADAM_EPSILON: f32 = 1e-8;

/// RDED's student batch size: 10 / 50 / 100 for IPC 1 / 10 / 50, doubled for 100+ classes,
/// never more than the set.
pub fn rded_batch_size(ipc: usize, classes: usize, set_len: usize) -> usize {
    let base = if ipc >= 50 {
        100
    } else if ipc >= 10 {
        50
    } else {
        10
    };
    let base = if classes >= 100 { 2 * base } else { base };
    base.min(set_len).max(1)
}

/// RDED's learning-rate factor at epoch `e` of `epochs`: cosine from 1 down to 0.5.
pub fn rded_lr_factor(e: usize, epochs: usize) -> f64 {
    0.5 * (1.0 + (std::f64::consts::PI * e as f64 / epochs.max(1) as f64 / 2.0).cos())
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
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    /// Intermediate epochs: accuracy on the `CURVE_TEST_IMAGES` subset; last epoch: whole split.
    pub test_accuracy: Option<f64>,
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

/// The images of epoch `e` when they are not the set's own: `(seed index, seed) ->` u8 images of
/// every item (a package's expansions, regenerated from the seed).
pub type EpochImages<'a> = &'a mut dyn FnMut(usize, u64) -> Result<Arc<Vec<u8>>>;

/// Trains a student on `set` and evaluates it on the test split of `ds`.
pub fn train_student<B: TrainBackend>(
    config: &StudentConfig,
    set: &TrainingSet,
    labels: Labels<'_, B::InnerBackend>,
    norm: &Normalization,
    ds: &Dataset,
    device: &B::Device,
) -> Result<StudentReport> {
    train_student_with::<B>(config, set, labels, norm, ds, None, device)
}

/// [`train_student`] with each epoch's images supplied by `epoch_images` (stored labels only: the
/// seed of epoch `e` is `seeds[e % len]` of the labels, which also indexes the images).
pub fn train_student_with<B: TrainBackend>(
    config: &StudentConfig,
    set: &TrainingSet,
    labels: Labels<'_, B::InnerBackend>,
    norm: &Normalization,
    ds: &Dataset,
    mut epoch_images: Option<EpochImages<'_>>,
    device: &B::Device,
) -> Result<StudentReport> {
    check_inputs(config, set, &labels, epoch_images.is_some())?;
    let start = Instant::now();
    B::seed(device, config.seed);
    let mut model: Classifier<B> = config.model.init(device);
    let mut optim = StudentOptimizer::new(&model, config.weight_decay);
    let stored = match &labels {
        Labels::Stored(s) => Some(*s),
        _ => None,
    };
    let eval = StudentEval { batcher: ImageBatcher::plain(ds, norm.clone()), curve_split: curve_subset(ds, CURVE_TEST_IMAGES), ds };
    let mut history = Vec::new();
    let mut last_eval = None;
    let mut trained = 0usize;
    let mut train_seconds = 0.0;
    let mut regen_seconds = 0.0;
    let bar = progress::bar(config.epochs as u64, format!("student {}", set.description));
    for epoch in 0..config.epochs {
        let epoch_start = Instant::now();
        let seed = epoch_seed(stored, config.seed, epoch);
        let mut order: Vec<usize> = (0..set.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
        let lr = config.lr * rded_lr_factor(epoch, config.epochs);
        let mut loss_sum = 0.0;
        let regenerated = match (epoch_images.as_mut(), stored) {
            (Some(f), Some(s)) => {
                let t = Instant::now();
                let images = f(stored_index(s, epoch), seed)?;
                regen_seconds += t.elapsed().as_secs_f64();
                Some(images)
            }
            _ => None,
        };
        let images: &[u8] = regenerated.as_deref().map_or(&set.images, |v| v.as_slice());
        for batch in order.chunks(config.batch_size) {
            let n = batch.len();
            let views = set.views_in(images, batch, seed, &config.augment, norm);
            let x = Tensor::<B, 4>::from_data(TensorData::new(views, [n, set.channels, set.height, set.width]), device);
            let logits = model.forward(x.clone());
            let loss = batch_loss(&labels, set, batch, epoch, x, logits, config.temperature, device);
            let value = finite_loss(&loss, StepAt { epoch: epoch + 1, step: trained }, &bar)?;
            loss_sum += value as f64 * n as f64;
            model = optim.step(lr, model, loss);
            trained += n;
        }
        train_seconds += epoch_start.elapsed().as_secs_f64();
        let test_accuracy = if epoch + 1 == config.epochs {
            let full = eval.full(&model, device)?;
            let acc = full.accuracy;
            last_eval = Some(full);
            Some(acc)
        } else {
            eval.curve_point(epoch, config.eval_every, &model, device)?
        };
        history.push(EpochPoint { epoch: epoch + 1, train_loss: loss_sum / set.len() as f64, test_accuracy });
        bar.set_message(format!(
            "loss {:.4}{}",
            loss_sum / set.len() as f64,
            history.iter().rev().find_map(|p| p.test_accuracy).map(|a| format!(" test {a:.2}%")).unwrap_or_default()
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let eval = last_eval.expect("last epoch evaluates");
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
        train_img_per_s: trained as f64 / (train_seconds - regen_seconds).max(1e-9),
        regen_seconds,
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
    opt_decay: OptimizerAdaptor<AdamW, Classifier<B>, B>,
    opt_plain: OptimizerAdaptor<AdamW, Classifier<B>, B>,
}

impl<B: TrainBackend> StudentOptimizer<B> {
    fn new(model: &Classifier<B>, weight_decay: f64) -> Self {
        let (decay, plain) = decayed_params(model);
        // PyTorch's AdamW epsilon (burn's default is 1e-5). With T = 20 and no T^2 factor the KL
        // gradients are ~1/400 of a cross-entropy's, small enough for 1e-5 to damp Adam's steps.
        let adamw = || AdamWConfig::new().with_epsilon(ADAM_EPSILON);
        let opt_decay = adamw().with_weight_decay(weight_decay as f32).init::<B, Classifier<B>>();
        let opt_plain = adamw().with_weight_decay(0.0).init::<B, Classifier<B>>();
        StudentOptimizer { decay, plain, opt_decay, opt_plain }
    }

    /// Backpropagates `loss` (already checked finite) and updates both parameter groups.
    fn step(&mut self, lr: f64, model: Classifier<B>, loss: Tensor<B, 1>) -> Classifier<B> {
        let mut grads = loss.backward();
        let g_decay = GradientsParams::from_params(&mut grads, &model, &self.decay);
        let g_plain = GradientsParams::from_params(&mut grads, &model, &self.plain);
        let model = self.opt_decay.step(lr, model, g_decay);
        self.opt_plain.step(lr, model, g_plain)
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

//! The student's recipe (RDED's: AdamW, cosine learning rate to half, temperature-softened
//! targets) and one point of its learning curve: what a checkpoint records next to the weights.

use serde::{Deserialize, Serialize};

use crate::models::ClassifierConfig;
use crate::package::AugmentConfig;

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    /// Intermediate epochs: accuracy on the `CURVE_TEST_IMAGES` subset; last epoch: whole split.
    pub test_accuracy: Option<f64>,
}

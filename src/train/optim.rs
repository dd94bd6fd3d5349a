//! Optimiser and learning-rate schedule settings shared by teacher and student training.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Adamw,
    Sgd,
}

#[derive(Config, Debug)]
pub struct OptimizerConfig {
    #[config(default = "OptimizerKind::Adamw")]
    pub kind: OptimizerKind,
    #[config(default = 1e-3)]
    pub lr: f64,
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// SGD momentum (ignored by AdamW).
    #[config(default = 0.9)]
    pub momentum: f64,
}

/// Cosine annealing from `lr` to 0 over `total` steps.
pub fn cosine_lr(lr: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    0.5 * lr * (1.0 + (std::f64::consts::PI * t).cos())
}

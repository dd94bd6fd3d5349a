//! One optimisation step, as every training loop in dace takes it (teacher, student, the prior's
//! VAE and UNet): the loss is read and checked before anything is updated, so a diverging run
//! stops with the place it diverged instead of writing NaN weights.

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;

use crate::error::{DaceError, Result};

/// Where a step is: `epoch` (1-based; a stage number for step-counted loops) and `step` within it.
#[derive(Clone, Copy, Debug)]
pub struct StepAt {
    pub epoch: usize,
    pub step: usize,
}

/// The value of `loss`, or [`DaceError::NonFiniteLoss`] naming `at` (and `bar` abandoned, so
/// the progress line stays on screen next to the error).
pub fn finite_loss<B: Backend>(loss: &Tensor<B, 1>, at: StepAt, bar: &ProgressBar) -> Result<f32> {
    let value: f32 = loss.clone().into_scalar().elem();
    if !value.is_finite() {
        bar.abandon();
        return Err(DaceError::NonFiniteLoss { loss: value, epoch: at.epoch, step: at.step });
    }
    Ok(value)
}

/// Checks the loss, backpropagates it and lets `optim` update `model` at learning rate `lr`.
/// Returns the updated model and the loss value.
pub fn optimizer_step<B, M, O>(model: M, optim: &mut O, loss: Tensor<B, 1>, lr: f64, at: StepAt, bar: &ProgressBar) -> Result<(M, f32)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let value = finite_loss(&loss, at, bar)?;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    Ok((optim.step(lr, model, grads), value))
}

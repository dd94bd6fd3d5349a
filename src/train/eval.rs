//! Test-set evaluation: accuracy overall and per class, plus inference throughput.

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::batch::ImageBatcher;
use crate::data::{DataError, Split};
use crate::kernels::DaceBackend;
use crate::models::Classifier;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
    /// Per-class top-1 accuracy in percent (NaN-free: classes without samples get 0).
    pub per_class_accuracy: Vec<f64>,
    pub mean_loss: f64,
    pub samples: usize,
    pub infer_img_per_s: f64,
}

/// Predicted class for every image of `split`, with the summed cross-entropy.
pub fn predict<B: DaceBackend>(
    model: &Classifier<B>,
    batcher: &ImageBatcher,
    split: &Split,
    batch_size: usize,
    device: &B::Device,
) -> Result<(Vec<usize>, f64), DataError> {
    let all: Vec<usize> = (0..split.len()).collect();
    let mut predictions = Vec::with_capacity(split.len());
    let mut loss_sum = 0.0;
    for chunk in all.chunks(batch_size.max(1)) {
        let images = batcher.images::<B>(split, chunk, None, device)?;
        let labels = ImageBatcher::labels::<B>(split, chunk, device);
        let logits = model.forward(images);
        let nll = burn::tensor::activation::log_softmax(logits.clone(), 1).gather(1, labels.unsqueeze_dim(1)).sum().neg();
        loss_sum += nll.into_scalar().elem::<f64>();
        let pred = logits.argmax(1).into_data();
        predictions.extend(pred.iter::<i64>().map(|p| p as usize));
    }
    Ok((predictions, loss_sum))
}

pub fn evaluate<B: DaceBackend>(
    model: &Classifier<B>,
    batcher: &ImageBatcher,
    split: &Split,
    num_classes: usize,
    batch_size: usize,
    device: &B::Device,
) -> Result<EvalReport, DataError> {
    let start = Instant::now();
    let (predictions, loss_sum) = predict(model, batcher, split, batch_size, device)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut correct = vec![0usize; num_classes];
    let mut total = vec![0usize; num_classes];
    for (&p, &label) in predictions.iter().zip(&split.labels) {
        let label = label as usize;
        total[label] += 1;
        correct[label] += usize::from(p == label);
    }
    let n = split.len().max(1);
    Ok(EvalReport {
        accuracy: 100.0 * correct.iter().sum::<usize>() as f64 / n as f64,
        per_class_accuracy: correct.iter().zip(&total).map(|(&c, &t)| if t == 0 { 0.0 } else { 100.0 * c as f64 / t as f64 }).collect(),
        mean_loss: loss_sum / n as f64,
        samples: split.len(),
        infer_img_per_s: split.len() as f64 / seconds.max(1e-9),
    })
}

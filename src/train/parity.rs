//! Parity of an imported teacher with the framework it came from: a reference file (safetensors)
//! holds an `input` batch, already normalised, `[N, C, H, W]`, and the `logits` `[N, classes]` the
//! source framework computed for it; the check runs the teacher on the same input and reports the
//! largest absolute difference. It is how a user (and the data-scale benchmark) sees that an
//! import computes what torchvision or timm computes, without Python at run time.

use std::path::Path;

use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::DaceBackend;
use crate::models::{Classifier, ClassifierConfig};

/// What [`check_parity`] measured.
#[derive(Serialize, Debug, Clone)]
pub struct ParityReport {
    pub reference: String,
    pub images: usize,
    pub classes: usize,
    /// The largest `|dace - reference|` over every logit; NaN when a logit is not finite.
    pub max_abs_err: f64,
    pub tolerance: f64,
}

impl ParityReport {
    pub fn passes(&self) -> bool {
        // NaN fails: `NaN <= tol` is false.
        self.max_abs_err <= self.tolerance
    }
}

/// A tensor of the reference file as f64 values with its shape (f16, f32 and f64 are read).
fn read_tensor(path: &Path, st: &SafeTensors, name: &str) -> Result<(Vec<f64>, Vec<usize>)> {
    let t = st
        .tensor(name)
        .map_err(|_| DaceError::bad_file(path, format!("no tensor `{name}` (a parity reference holds `input` and `logits`)")))?;
    let data = t.data();
    let values: Vec<f64> = match t.dtype() {
        Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes(c.try_into().expect("2 bytes")).to_f64()).collect(),
        other => return Err(DaceError::bad_file(path, format!("tensor `{name}` is {other:?}, not floating point"))),
    };
    Ok((values, t.shape().to_vec()))
}

/// Runs `model` (built from `config`) on the reference file's input and compares its logits.
pub fn check_parity<B: DaceBackend>(
    model: &Classifier<B>,
    config: &ClassifierConfig,
    reference: &Path,
    tolerance: f64,
    device: &B::Device,
) -> Result<ParityReport> {
    let bytes = fsio::map(reference)?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| DaceError::bad_file(reference, format!("cannot read a safetensors file: {e}")))?;
    let (input, in_shape) = read_tensor(reference, &st, "input")?;
    let (want, out_shape) = read_tensor(reference, &st, "logits")?;
    let bad = |why: String| DaceError::bad_file(reference, why);
    let &[n, c, h, w] = in_shape.as_slice() else {
        return Err(bad(format!("`input` has shape {in_shape:?}, expected [N, C, H, W]")));
    };
    if n == 0 || c != config.in_channels || h == 0 || w == 0 {
        return Err(bad(format!("`input` has shape {in_shape:?}; the teacher takes [N >= 1, {}, H, W]", config.in_channels)));
    }
    if out_shape != [n, config.num_classes] {
        return Err(bad(format!("`logits` has shape {out_shape:?}; the teacher gives [{n}, {}] for this input", config.num_classes)));
    }
    let input: Vec<f32> = input.into_iter().map(|v| v as f32).collect();
    let got: Vec<f32> = model
        .forward(Tensor::from_data(TensorData::new(input, [n, c, h, w]), device))
        .into_data()
        .to_vec()
        .map_err(|e| DaceError::Invalid(format!("reading the teacher's logits: {e:?}")))?;
    let max_abs_err =
        got.iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0f64, |m, d| if d.is_nan() || m.is_nan() { f64::NAN } else { m.max(d) });
    Ok(ParityReport { reference: reference.display().to_string(), images: n, classes: config.num_classes, max_abs_err, tolerance })
}

//! Mean and sample standard deviation over student seeds.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Some(MeanStd { mean, std: var.sqrt(), n })
    }

    /// "mean ± std" with the seed count when it is not the requested one.
    pub fn show(&self, expected_n: usize) -> String {
        let partial = if self.n < expected_n { format!(" ({}/{expected_n} seeds)", self.n) } else { String::new() };
        format!("{:.2} ± {:.2}{partial}", self.mean, self.std)
    }
}

//! Soft-label encodings of a package: teacher logits, one row of `K` classes per (seed, item).
//!
//! | encoding | bytes per row | decoding |
//! |---|---|---|
//! | `f16`    | 2K            | IEEE half per class |
//! | `int8`   | 4 + K         | `lo + q * step`, `lo` and `step` half floats, `q` u8 |
//! | `top-k`  | 2 + 4k        | every class `fill` (half), then k pairs (u16 class, half logit) |
//!
//! `int8` keeps every class at 1/255 of the row's range; `top-k` keeps the k largest logits and
//! replaces the rest with their mean, which is what a temperature-softened KL mostly sees.

use half::f16;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "encoding")]
pub enum LabelEncoding {
    F16,
    Int8,
    TopK { k: usize },
}

impl LabelEncoding {
    /// `f16`, `int8` or `top-K` (e.g. `top-3`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "f16" => Ok(LabelEncoding::F16),
            "int8" => Ok(LabelEncoding::Int8),
            _ => match s.strip_prefix("top-").and_then(|k| k.parse::<usize>().ok()) {
                Some(k) if k > 0 => Ok(LabelEncoding::TopK { k }),
                _ => Err(format!("label encoding `{s}`: expected f16, int8 or top-K (K >= 1)")),
            },
        }
    }

    pub fn row_bytes(self, classes: usize) -> usize {
        match self {
            LabelEncoding::F16 => 2 * classes,
            LabelEncoding::Int8 => 4 + classes,
            LabelEncoding::TopK { k } => 2 + 4 * k.min(classes),
        }
    }

    /// Encodes rows of `classes` logits.
    pub fn encode(self, logits: &[f32], classes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(logits.len() / classes.max(1) * self.row_bytes(classes));
        for row in logits.chunks(classes) {
            match self {
                LabelEncoding::F16 => row.iter().for_each(|&v| out.extend(f16::from_f32(v).to_le_bytes())),
                LabelEncoding::Int8 => {
                    let lo = f16::from_f32(row.iter().copied().fold(f32::INFINITY, f32::min));
                    let hi = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    // The step is rounded to f16 before quantising, so encode and decode agree.
                    let step = f16::from_f32(((hi - lo.to_f32()) / 255.0).max(1e-6));
                    out.extend(lo.to_le_bytes());
                    out.extend(step.to_le_bytes());
                    out.extend(row.iter().map(|&v| ((v - lo.to_f32()) / step.to_f32()).round().clamp(0.0, 255.0) as u8));
                }
                LabelEncoding::TopK { k } => {
                    let k = k.min(classes);
                    let mut order: Vec<usize> = (0..classes).collect();
                    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                    let rest = &order[k..];
                    let fill = if rest.is_empty() { 0.0 } else { rest.iter().map(|&c| row[c]).sum::<f32>() / rest.len() as f32 };
                    out.extend(f16::from_f32(fill).to_le_bytes());
                    for &c in &order[..k] {
                        out.extend((c as u16).to_le_bytes());
                        out.extend(f16::from_f32(row[c]).to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// Decodes `bytes` (a whole number of rows) to logits; errors name the row.
    pub fn decode(self, bytes: &[u8], classes: usize) -> Result<Vec<f32>, String> {
        let rb = self.row_bytes(classes);
        if classes == 0 || !bytes.len().is_multiple_of(rb) {
            return Err(format!("{} bytes is not a whole number of {rb}-byte label rows", bytes.len()));
        }
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut out = Vec::with_capacity(bytes.len() / rb * classes);
        for (r, row) in bytes.chunks(rb).enumerate() {
            let start = out.len();
            match self {
                LabelEncoding::F16 => out.extend(row.chunks(2).map(half)),
                LabelEncoding::Int8 => {
                    let (lo, step) = (half(&row[0..2]), half(&row[2..4]));
                    out.extend(row[4..].iter().map(|&q| lo + q as f32 * step));
                }
                LabelEncoding::TopK { .. } => {
                    out.extend(std::iter::repeat_n(half(&row[0..2]), classes));
                    for pair in row[2..].chunks(4) {
                        let c = u16::from_le_bytes([pair[0], pair[1]]) as usize;
                        if c >= classes {
                            return Err(format!("label row {r}: class {c} of {classes}"));
                        }
                        out[start + c] = half(&pair[2..4]);
                    }
                }
            }
            if out[start..].iter().any(|v| !v.is_finite()) {
                return Err(format!("label row {r} has non-finite logits"));
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for LabelEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelEncoding::F16 => write!(f, "f16"),
            LabelEncoding::Int8 => write!(f, "int8"),
            LabelEncoding::TopK { k } => write!(f, "top-{k}"),
        }
    }
}

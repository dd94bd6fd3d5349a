//! `dace bench data`: how fast the training batches of an image folder are produced, and with how
//! much memory, read from the files batch by batch or held decoded in memory
//! (bench/data_loading.py runs it beside torchvision's ImageFolder + DataLoader).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{self, LoadOptions};
use crate::device::CpuBackend;
use crate::error::Result;
use crate::train::{CropKind, ImageBatcher, Normalization};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataBenchRow {
    /// Whether the train split was read from its files (else decoded into memory at load).
    pub lazy: bool,
    pub images: usize,
    pub size: usize,
    pub batch: usize,
    pub crop: CropKind,
    /// Listing the files and reading their headers (plus decoding them all when held in memory).
    pub load_s: f64,
    /// One epoch of normalised, augmented batches, after loading.
    pub epoch_s: f64,
    pub img_per_s: f64,
    /// The process's peak resident memory (`VmHWM`), MiB.
    pub peak_rss_mb: Option<f64>,
}

/// Peak resident set size of this process in MiB, where the OS reports it (Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// One epoch over the train split of the folder `spec` read at `size` x `size`, in batches.
pub fn bench_epoch(spec: &str, size: usize, batch: usize, crop: CropKind, memory_limit: u64) -> Result<DataBenchRow> {
    let start = Instant::now();
    let ds = data::load_with(spec, &LoadOptions { size: Some([size, size]), memory_limit })?;
    let load_s = start.elapsed().as_secs_f64();
    // ImageNet's statistics: computing the dataset's own would add a pass to the measurement.
    let normalization =
        Normalization { mean: vec![0.485, 0.456, 0.406][..ds.channels].to_vec(), std: vec![0.229, 0.224, 0.225][..ds.channels].to_vec() };
    let batcher = ImageBatcher::plain(&ds, normalization).augmenting(crop, size / 8, true);
    let order: Vec<usize> = (0..ds.train.len()).collect();
    let bar = crate::train::progress::bar(order.len().div_ceil(batch) as u64, "batches");
    let start = Instant::now();
    for (step, indices) in order.chunks(batch).enumerate() {
        let images = batcher.images::<CpuBackend>(&ds.train, indices, Some(step as u64), &Default::default())?;
        std::hint::black_box(images);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let epoch_s = start.elapsed().as_secs_f64();
    Ok(DataBenchRow {
        lazy: ds.train.is_lazy(),
        images: ds.train.len(),
        size,
        batch,
        crop,
        load_s,
        epoch_s,
        img_per_s: ds.train.len() as f64 / epoch_s.max(1e-9),
        peak_rss_mb: peak_rss_mb(),
    })
}

//! `dace expand`: a package's expansions regenerated on a device, with fidelity checks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::common::{at_least_one, command_line, hxw, load_prior, setup_threads, DeviceArgs};
use crate::distill::argmax;
use crate::fsio;
use crate::on_device;
use crate::package::{Package, Resolutions};
use crate::student::labels::teacher_logits;
use crate::student::package::regenerator_on;
use crate::student::TrainingSet;
use crate::train;

#[derive(Args, Debug)]
pub struct ExpandArgs {
    #[arg(long)]
    pub package: PathBuf,
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Regenerate the first N seeds (default: all).
    #[arg(long, value_parser = at_least_one)]
    pub seeds: Option<usize>,
    /// Teacher: checks its argmax on the regenerated (augmented) images against the stored labels.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Another `dace expand` output (e.g. from another device): PSNR and bit-identity against it.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Expansion batch size (default: the package's; bit-identical floats need the same).
    #[arg(long, value_parser = at_least_one)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// What `dace expand` writes next to the images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpandReport {
    pub command: String,
    pub package: String,
    pub device: String,
    /// The student's image size, the patches' and the prior's working size.
    pub resolutions: Resolutions,
    pub seeds: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Teacher argmax on the regenerated, augmented images vs the stored labels' argmax (%).
    pub argmax_agreement: Option<f64>,
    /// Against `--compare`: PSNR (dB) over all images, max abs pixel difference, bit identity.
    pub compare: Option<Comparison>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub other: String,
    pub psnr_db: f64,
    pub max_abs_diff: u8,
    pub bit_identical: bool,
}

pub const IMAGES_FILE: &str = "expansions.bin";

pub const EXPAND_REPORT: &str = "expand.json";

/// PSNR of u8 images (infinite when identical).
pub fn psnr_u8(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// How many items of seed number `s` the teacher (its `logits`) labels with the stored label's
/// argmax.
fn agreeing_labels(pkg: &Package, s: usize, logits: &[f32]) -> usize {
    let k = pkg.manifest.num_classes();
    (0..pkg.num_items()).filter(|&item| argmax(&logits[item * k..(item + 1) * k]) == argmax(pkg.logits(s, item))).count()
}

/// One row of upsampled patches, then one row per seed shown (at most 7), the first patch of
/// each class per column.
fn write_expansion_grid(path: &Path, pkg: &Package, images: &[u8], n_seeds: usize) -> anyhow::Result<()> {
    let m = &pkg.manifest;
    let set = TrainingSet::from_package(m, &pkg.patches);
    let per_class: Vec<usize> = (0..m.num_classes() as u32).filter_map(|c| m.items.iter().position(|&i| i == c)).collect();
    let len = set.image_len();
    let mut cells = Vec::new();
    for &i in &per_class {
        cells.extend_from_slice(&set.images[i * len..(i + 1) * len]);
    }
    for s in 0..n_seeds.min(7) {
        for &i in &per_class {
            let at = (s * set.len() + i) * len;
            cells.extend_from_slice(&images[at..at + len]);
        }
    }
    crate::viz::write_grid(path, &cells, m.channels, m.image_size[0], m.image_size[1], per_class.len(), 28)?;
    Ok(())
}

pub fn run(args: ExpandArgs) -> anyhow::Result<()> {
    setup_threads(&args.device)?;
    let pkg = Package::load(&args.package)?;
    let m = &pkg.manifest;
    let n_seeds = args.seeds.unwrap_or(m.seeds.len()).min(m.seeds.len());
    // Each seed's batches are spread over the devices; the teacher checks on the first.
    let (images, seconds, agreement) = on_device!(args.device.list()?, |B, device, devices| {
        let priors = devices.iter().map(|d| load_prior::<B>(args.prior.as_deref(), &pkg, d)).collect::<crate::Result<Vec<_>>>()?;
        let mut regen = regenerator_on(&pkg, &priors, args.batch, &devices)?;
        let teacher = match &args.teacher {
            Some(dir) => Some(train::load_model::<B>(dir, &device)?.0),
            None => None,
        };
        let set = TrainingSet::from_package(m, &pkg.patches);
        let (mut images, mut agree, mut total) = (Vec::new(), 0usize, 0usize);
        let bar = train::progress::bar(n_seeds as u64, format!("expand {}", m.description()));
        let start = Instant::now();
        let mut label_s = 0.0;
        for (s, &seed) in m.seeds[..n_seeds].iter().enumerate() {
            let imgs = regen.epoch(s, seed)?;
            if let Some(t) = &teacher {
                let t0 = Instant::now();
                let logits = teacher_logits(&set, &imgs, seed, t, &m.normalization, &m.augment, &device)?;
                agree += agreeing_labels(&pkg, s, &logits);
                total += set.len();
                label_s += t0.elapsed().as_secs_f64();
            }
            images.extend_from_slice(&imgs);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64() - label_s;
        Ok::<_, crate::DaceError>((images, seconds, teacher.map(|_| 100.0 * agree as f64 / total.max(1) as f64)))
    })?;
    fsio::write_atomic(&args.out.join(IMAGES_FILE), &images)?;
    write_expansion_grid(&args.out.join("expansions.png"), &pkg, &images, n_seeds)?;
    let len = m.channels * m.image_size[0] * m.image_size[1];
    let compare = match &args.compare {
        Some(other) => Some(compare_with(&images, other)?),
        None => None,
    };
    let report = ExpandReport {
        command: command_line(),
        package: args.package.display().to_string(),
        device: args.device.names(),
        resolutions: m.resolutions(),
        seeds: n_seeds,
        images: images.len() / len,
        seconds,
        images_per_s: (images.len() / len) as f64 / seconds.max(1e-9),
        argmax_agreement: agreement,
        compare,
    };
    fsio::write_json(&args.out.join(EXPAND_REPORT), &report)?;
    println!(
        "regenerated {} images ({} seeds) on {} at {:.1} img/s into {}",
        report.images,
        n_seeds,
        report.device,
        report.images_per_s,
        args.out.display()
    );
    let r = &report.resolutions;
    println!("resolutions: images {}, patches {}, prior {}", hxw(r.image_size), hxw(r.patch_size), hxw(r.prior_size));
    if let Some(a) = report.argmax_agreement {
        println!("teacher argmax on regenerated images = stored label argmax for {a:.2}%");
    }
    if let Some(c) = &report.compare {
        println!("vs {}: PSNR {:.2} dB, max |diff| {}, bit-identical: {}", c.other, c.psnr_db, c.max_abs_diff, c.bit_identical);
    }
    Ok(())
}

fn compare_with(images: &[u8], other: &Path) -> anyhow::Result<Comparison> {
    let path = other.join(IMAGES_FILE);
    let theirs = fsio::read(&path)?;
    if theirs.len() != images.len() {
        bail!("{}: {} bytes, these expansions have {} (different package or seed count)", path.display(), theirs.len(), images.len());
    }
    Ok(Comparison {
        other: other.display().to_string(),
        psnr_db: psnr_u8(images, &theirs),
        max_abs_diff: images.iter().zip(&theirs).map(|(&a, &b)| a.abs_diff(b)).max().unwrap_or(0),
        bit_identical: images == theirs.as_slice(),
    })
}

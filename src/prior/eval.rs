//! `dace prior eval`: the quality bar of a prior (docs/results/prior.md).
//!
//! - VAE reconstruction PSNR over the whole test split (posterior mean, outputs clamped);
//! - class-conditional samples classified by the teacher, per class;
//! - img2img grids from test images reduced to `H/r` patches and upsampled (RDED's plain
//!   upsampling) at each strength, next to the original and the plain upsample.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::bundle::Prior;
use super::pipeline::{self, NoiseId};
use super::scheduler::{img2img_plan, Sampler, ScheduleConfig};
use super::train::{sample_classes, to_u8, vae_test_psnr, write_images};
use crate::data::transform::{resize_bilinear, resize_u8};
use crate::data::{Dataset, Split};
use crate::error::{DaceError, Result};
use crate::kernels::diffusion::DiffusionKernels;
use crate::kernels::DaceBackend;
use crate::models::Classifier;
use crate::train::checkpoint::ModelMeta;
use crate::train::eval::predict;
use crate::train::ImageBatcher;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PriorEvalConfig {
    pub samples_per_class: usize,
    pub sample_steps: usize,
    pub guidance: f32,
    /// Strengths and patch factors of the img2img grids.
    pub rhos: Vec<f64>,
    pub factors: Vec<usize>,
    /// Inference steps of the img2img schedule (diffusers semantics: `rho * steps` run).
    pub img2img_steps: usize,
    pub seeds_per_image: usize,
    pub seed: u64,
}

impl Default for PriorEvalConfig {
    fn default() -> Self {
        PriorEvalConfig {
            samples_per_class: 100,
            sample_steps: 20,
            guidance: 2.0,
            rhos: vec![0.4, 0.8],
            factors: vec![2, 4],
            img2img_steps: 5,
            seeds_per_image: 3,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub accuracy: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PriorEvalReport {
    pub command: String,
    pub prior_fingerprint: String,
    pub dataset: String,
    pub config: PriorEvalConfig,
    pub vae_psnr_db: f64,
    pub test_images: usize,
    /// Percent of class-conditional samples the teacher assigns to their class.
    pub cond_teacher_acc: f64,
    pub cond_teacher_acc_per_class: Vec<ClassAccuracy>,
    pub sample_img_per_s: f64,
    pub grids: Vec<PathBuf>,
}

fn from_f32<B: Backend>(v: Vec<f32>, dims: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v, dims), device)
}

/// Images of `indices` reduced to `H/r` and upsampled back bilinearly, in [-1, 1].
pub fn plain_upsample(ds: &Dataset, split: &Split, indices: &[usize], r: usize) -> Result<Vec<f32>> {
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let mut out = Vec::with_capacity(indices.len() * c * h * w);
    for &i in indices {
        let small = resize_u8(&ds.image(split, i)?, c, h, w, h / r, w / r);
        let small: Vec<f32> = small.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
        let mut up = vec![0f32; c * h * w];
        resize_bilinear(&small, c, h / r, w / r, h, w, &mut up);
        out.extend(up);
    }
    Ok(out)
}

pub fn evaluate_prior<B: DaceBackend + DiffusionKernels>(
    prior: &Prior<B>,
    ds: &Dataset,
    teacher: &Classifier<B>,
    teacher_meta: &ModelMeta,
    cfg: &PriorEvalConfig,
    out: &Path,
    device: &B::Device,
) -> Result<PriorEvalReport> {
    let [c, h, w] = prior.index.image_shape;
    if [ds.channels, ds.height, ds.width] != [c, h, w] || ds.classes != prior.index.classes {
        return Err(DaceError::Invalid(format!(
            "prior was trained on {}x{}x{} `{}` images with classes {:?}; dataset `{}` differs",
            c, h, w, prior.index.dataset, prior.index.classes, ds.name
        )));
    }
    eprintln!("VAE reconstruction PSNR on {} test images", ds.test.len());
    let vae_psnr_db = vae_test_psnr(&prior.vae, ds, ds.test.len(), device)?;

    eprintln!("{} class-conditional samples per class", cfg.samples_per_class);
    let start = Instant::now();
    let samples = class_samples(prior, ds.num_classes(), cfg, device);
    let sample_img_per_s = samples.len() as f64 / start.elapsed().as_secs_f64();
    let (cond_teacher_acc, cond_teacher_acc_per_class) = teacher_accuracy(teacher, teacher_meta, ds, &samples, device)?;
    // A grid of the first 10 samples of each class.
    let show: Vec<u8> = (0..ds.num_classes())
        .flat_map(|k| {
            let first = k * cfg.samples_per_class;
            let pixels = samples.bytes().expect("samples are made in memory");
            pixels[first * c * h * w..(first + cfg.samples_per_class.min(10)) * c * h * w].to_vec()
        })
        .collect();
    let path = out.join("prior_samples.png");
    crate::viz::write_grid(&path, &show, c, h, w, cfg.samples_per_class.min(10), 28)?;
    let mut grids = vec![path];
    grids.extend(img2img_grids(prior, ds, cfg, out, device)?);
    Ok(PriorEvalReport {
        command: "prior eval".into(),
        prior_fingerprint: prior.fingerprint.clone(),
        dataset: ds.name.clone(),
        config: cfg.clone(),
        vae_psnr_db,
        test_images: ds.test.len(),
        cond_teacher_acc,
        cond_teacher_acc_per_class,
        sample_img_per_s,
        grids,
    })
}

/// `samples_per_class` class-conditional samples of every class, in class order.
fn class_samples<B: DaceBackend + DiffusionKernels>(
    prior: &Prior<B>,
    n_classes: usize,
    cfg: &PriorEvalConfig,
    device: &B::Device,
) -> Split {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let per_batch = 100;
    let wanted: Vec<usize> = (0..n_classes).flat_map(|k| std::iter::repeat_n(k, cfg.samples_per_class)).collect();
    let bar = crate::train::progress::bar(wanted.len().div_ceil(per_batch) as u64, "samples");
    for (b, chunk) in wanted.chunks(per_batch).enumerate() {
        let x = sample_classes(
            &prior.vae,
            &prior.unet,
            &prior.classes,
            chunk,
            prior.latent_shape(),
            prior.vae_config.scaling_factor,
            cfg.sample_steps,
            cfg.guidance,
            cfg.seed,
            (b * per_batch) as u64,
            device,
        );
        images.extend(to_u8(x));
        labels.extend(chunk.iter().map(|&k| k as u32));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Split::in_memory(images, labels)
}

/// How often the teacher classifies the samples as the class they were drawn for: overall and
/// per class (%).
fn teacher_accuracy<B: DaceBackend>(
    teacher: &Classifier<B>,
    meta: &ModelMeta,
    ds: &Dataset,
    samples: &Split,
    device: &B::Device,
) -> Result<(f64, Vec<ClassAccuracy>)> {
    let batcher = ImageBatcher::plain(ds, meta.normalization.clone());
    let (pred, _) = predict(teacher, &batcher, samples, 256, device)?;
    let mut per_class = vec![(0usize, 0usize); ds.num_classes()];
    for (p, &l) in pred.iter().zip(&samples.labels) {
        per_class[l as usize].1 += 1;
        if *p == l as usize {
            per_class[l as usize].0 += 1;
        }
    }
    let correct: usize = per_class.iter().map(|p| p.0).sum();
    let overall = 100.0 * correct as f64 / samples.len() as f64;
    let by_class = per_class
        .iter()
        .zip(&ds.classes)
        .map(|(&(ok, n), name)| ClassAccuracy { class: name.clone(), accuracy: 100.0 * ok as f64 / n.max(1) as f64 })
        .collect();
    Ok((overall, by_class))
}

/// img2img from upsampled patches, one grid per patch factor: per class, the first test image
/// of that class; row k holds the original, the plain upsample, then rho x seeds.
fn img2img_grids<B: DaceBackend + DiffusionKernels>(
    prior: &Prior<B>,
    ds: &Dataset,
    cfg: &PriorEvalConfig,
    out: &Path,
    device: &B::Device,
) -> Result<Vec<PathBuf>> {
    let [c, h, w] = prior.index.image_shape;
    let n_classes = ds.num_classes();
    let firsts: Vec<usize> = (0..n_classes).map(|k| ds.test.labels.iter().position(|&l| l as usize == k).unwrap_or(0)).collect();
    let sched = ScheduleConfig::default();
    let mut originals = Vec::with_capacity(firsts.len() * c * h * w);
    for &i in &firsts {
        originals.extend(ds.image(&ds.test, i)?.iter().map(|&p| p as f32 / 127.5 - 1.0));
    }
    let ctx = prior.cond(&(0..n_classes).collect::<Vec<_>>(), device);
    let mut grids = Vec::new();
    for &r in &cfg.factors {
        let up = plain_upsample(ds, &ds.test, &firsts, r)?;
        let mut columns: Vec<Vec<f32>> = vec![originals.clone(), up.clone()];
        for &rho in &cfg.rhos {
            // Unguided, as the expansion runs.
            let steps = img2img_plan(&sched, Sampler::EulerAncestral, cfg.img2img_steps, rho).unwrap_or_default();
            for s in 0..cfg.seeds_per_image {
                let ids: Vec<NoiseId> = (0..n_classes).map(|k| NoiseId { seed: cfg.seed + s as u64, item: k as u64 }).collect();
                let x = from_f32::<B>(up.clone(), [n_classes, c, h, w], device);
                let y = pipeline::img2img(&prior.vae, &prior.unet, x, &ctx, None, &steps, prior.vae_config.scaling_factor, &ids);
                columns.push(y.clamp(-1.0, 1.0).into_data().to_vec::<f32>().expect("f32"));
            }
        }
        let cols = columns.len();
        let mut grid = Vec::with_capacity(cols * n_classes * c * h * w);
        for k in 0..n_classes {
            for col in &columns {
                grid.extend_from_slice(&col[k * c * h * w..(k + 1) * c * h * w]);
            }
        }
        let x = from_f32::<B>(grid, [cols * n_classes, c, h, w], device);
        let path = out.join(format!("prior_img2img_r{r}.png"));
        write_images(&x, c, h, w, cols, &path)?;
        grids.push(path);
    }
    Ok(grids)
}

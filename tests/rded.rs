//! RDED baseline: coreset selection, the seeded augmentation, stored soft labels, student training
//! and the resumable experiment grid, on the embedded Fashion-MNIST subset with a small teacher.

use std::path::Path;

use burn::backend::Autodiff;
use burn::prelude::*;
use dace::coreset::{self, crop, Coreset, CoresetConfig, Layout};
use dace::data::{self, augment as data_augment, Dataset};
use dace::device::CpuBackend;
use dace::experiment::rded::{self, RdedGridConfig};
use dace::experiment::stats::MeanStd;
use dace::models::{self, Arch, Classifier, ClassifierConfig, NormKind};
use dace::package::AugmentConfig;
use dace::student::{self, LabelSource, Labels, StoredLabels, StudentConfig, TrainingSet};
use dace::train::{self, ModelMeta, Normalization};

type B = CpuBackend;
type Train = Autodiff<CpuBackend>;

fn small() -> Dataset {
    data::load_embedded().per_class_subset(40, 20)
}

/// A ConvNet-3 teacher with random weights (selection mechanics do not need a good teacher).
fn teacher(ds: &Dataset) -> (Classifier<B>, ModelMeta) {
    let config = ClassifierConfig::new(Arch::Convnet3, ds.channels, ds.num_classes(), [ds.height, ds.width]);
    let device = Default::default();
    let model = config.init::<B>(&device);
    models::materialize(&model);
    let (mean, std) = data_augment::channel_mean_std(ds).unwrap();
    let meta = ModelMeta::new(config, Normalization { mean, std }, &ds.name, &ds.classes);
    (model, meta)
}

fn ce_of(model: &Classifier<B>, meta: &ModelMeta, img: &[u8], class: usize, ds: &Dataset) -> f32 {
    let mut x = vec![0f32; img.len()];
    data_augment::to_f32_normalized(img, &meta.normalization.mean, &meta.normalization.std, ds.channels, &mut x);
    let device = Default::default();
    let t = Tensor::<B, 4>::from_data(TensorData::new(x, [1, ds.channels, ds.height, ds.width]), &device);
    let logp: Vec<f32> = burn::tensor::activation::log_softmax(model.forward(t), 1).into_data().to_vec().unwrap();
    -logp[class]
}

#[test]
fn crops_stay_inside_and_repeat() {
    for k in 0..300 {
        let a = crop::random_square(7, 3, k, 28, 28);
        assert!(a.side >= 1 && a.top + a.side <= 28 && a.left + a.side <= 28, "{a:?}");
        assert_eq!(a, crop::random_square(7, 3, k, 28, 28));
        // Area fraction within RandomResizedCrop's (0.08, 1), up to rounding of the side.
        let frac = (a.side * a.side) as f64 / 784.0;
        assert!((0.06..=1.0).contains(&frac), "{frac}");
    }
    assert_ne!(
        (0..20).map(|k| crop::random_square(7, 3, k, 28, 28)).collect::<Vec<_>>(),
        (0..20).map(|k| crop::random_square(8, 3, k, 28, 28)).collect::<Vec<_>>()
    );
}

#[test]
fn coreset_keeps_the_lowest_loss_crop_per_image_and_the_best_images_per_class() {
    let ds = small();
    let (model, meta) = teacher(&ds);
    let device = Default::default();
    let config = CoresetConfig { ipc: 2, factor: 2, crops: 4, mipc: 12, seed: 5 };
    let c = coreset::select(&ds, &model, &meta, &config, &device).unwrap();
    let m = &c.meta;
    assert_eq!(m.patch_size, [14, 14]);
    assert_eq!(m.patches.len(), 10 * 8);
    assert_eq!(c.patches.len(), 80 * 14 * 14);
    assert_eq!(m.teacher_evals, 10 * 12 * 4);
    for class in 0..10u32 {
        let idx = c.class_patches(class);
        assert_eq!(idx.len(), 8);
        let ces: Vec<f32> = idx.iter().map(|&i| m.patches[i].ce).collect();
        assert!(ces.windows(2).all(|w| w[0] <= w[1]), "class {class} not sorted: {ces:?}");
        // Distinct source images, all of the right class.
        let mut sources: Vec<usize> = idx.iter().map(|&i| m.patches[i].source).collect();
        sources.sort();
        sources.dedup();
        assert_eq!(sources.len(), 8);
        assert!(sources.iter().all(|&s| ds.train.labels[s] == class));
    }
    // Each stored patch is its recorded crop, and it beats every other crop of its image.
    for i in [0, 17, 79] {
        let p = &m.patches[i];
        let src = ds.image(&ds.train, p.source).unwrap();
        let patch = crop::crop_resize(&src, 1, 28, 28, p.crop, 14, 14);
        assert_eq!(patch, c.patch(i));
        let score = |patch: &[u8]| ce_of(&model, &meta, &dace::data::transform::resize_u8(patch, 1, 14, 14, 28, 28), p.class as usize, &ds);
        assert!((score(&patch) - p.ce).abs() < 1e-4, "{} vs {}", score(&patch), p.ce);
        for k in 0..4 {
            let other = crop::crop_resize(&src, 1, 28, 28, crop::random_square(5, p.source as u64, k, 28, 28), 14, 14);
            assert!(score(&other) >= p.ce - 1e-4, "crop {k} of image {} scores lower than the kept one", p.source);
        }
    }
    // Deterministic for a seed; another seed selects differently.
    let again = coreset::select(&ds, &model, &meta, &config, &device).unwrap();
    assert_eq!(again.patches, c.patches);
    let other = coreset::select(&ds, &model, &meta, &CoresetConfig { seed: 6, ..config.clone() }, &device).unwrap();
    assert_ne!(other.patches, c.patches);

    // Save / load round trip, and a damaged file is refused with its name.
    let dir = tempfile::tempdir().unwrap();
    c.save(dir.path()).unwrap();
    assert!(dir.path().join("patches.png").exists());
    let loaded = Coreset::load(dir.path()).unwrap();
    assert_eq!(loaded.patches, c.patches);
    std::fs::write(dir.path().join("patches.bin"), &c.patches[..100]).unwrap();
    let err = Coreset::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("patches.bin") && err.contains("bytes"), "{err}");

    // A coreset whose metadata claims another budget is refused, naming the class.
    c.save(dir.path()).unwrap();
    let meta_path = dir.path().join("coreset.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["config"]["ipc"] = serde_json::json!(config.ipc + 1);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = Coreset::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("coreset.json") && err.contains("patches, expected"), "{err}");
}

#[test]
fn collages_put_block_k_of_the_ranking_in_cell_k() {
    // One class, ipc 2, r 2: patch i is filled with the value i (ranked order).
    let patches: Vec<u8> = (0..8u8).flat_map(|i| vec![i; 4]).collect();
    let infos = (0..8)
        .map(|i| coreset::PatchInfo { class: 0, source: i, crop: coreset::CropBox { top: 0, left: 0, side: 1 }, ce: i as f32 })
        .collect();
    let c = Coreset {
        meta: coreset::CoresetMeta {
            format: "dace-coreset/1".into(),
            dataset: "toy".into(),
            classes: vec!["a".into()],
            channels: 1,
            image_size: [4, 4],
            patch_size: [2, 2],
            config: CoresetConfig { ipc: 2, factor: 2, crops: 1, mipc: 8, seed: 0 },
            mipc_used: 8,
            patches: infos,
            teacher_evals: 8,
            seconds: 0.0,
            teacher: String::new(),
            shard: None,
        },
        patches,
    };
    let (images, labels) = c.training_images(Layout::Collage).unwrap();
    assert_eq!(labels, vec![0, 0]);
    // Collage j, cell k = ranked patch k * ipc + j.
    let cell = |img: usize, y: usize, x: usize| images[img * 16 + y * 4 + x];
    assert_eq!([cell(0, 0, 0), cell(0, 0, 2), cell(0, 2, 0), cell(0, 2, 2)], [0, 2, 4, 6]);
    assert_eq!([cell(1, 0, 0), cell(1, 0, 2), cell(1, 2, 0), cell(1, 2, 2)], [1, 3, 5, 7]);
    let (images, labels) = c.training_images(Layout::Patches).unwrap();
    assert_eq!((images.len(), labels.len()), (8 * 16, 8));
    assert!(images[3 * 16..4 * 16].iter().all(|&v| v == 3));
}

#[test]
fn bilinear_resize_matches_pytorch() {
    // F.interpolate([[0, 1], [2, 3]], size=4, mode="bilinear", align_corners=False)
    let mut out = vec![0f32; 16];
    dace::data::transform::resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 1, 2, 2, 4, 4, &mut out);
    let expected = [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
    for (a, b) in out.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{out:?}");
    }
}

fn rded_augment() -> AugmentConfig {
    AugmentConfig { crop_scale_min: 0.08, flip: true, cutmix: true, shuffle_factor: 2 }
}

#[test]
fn augmented_views_are_pure_functions_of_the_seed() {
    let ds = small();
    let set = TrainingSet::random_subset(&ds, 3, 1).unwrap();
    assert_eq!(set.len(), 30);
    let (_, meta) = teacher(&ds);
    let norm = &meta.normalization;
    let cfg = rded_augment();
    for item in [0, 7, 29] {
        assert_eq!(set.view(item, 11, &cfg, norm), set.view(item, 11, &cfg, norm));
        assert_ne!(set.view(item, 11, &cfg, norm), set.view(item, 12, &cfg, norm));
    }
    assert_eq!(set.views(&[3, 4], 5, &cfg, norm)[..784], set.view(3, 5, &cfg, norm)[..]);
    // No augmentation: the normalised image itself.
    let plain = set.view(4, 99, &AugmentConfig::none(), norm);
    let mut expected = vec![0f32; 784];
    data_augment::to_f32_normalized(&set.images[4 * 784..5 * 784], &norm.mean, &norm.std, 1, &mut expected);
    assert_eq!(plain, expected);
    // Random subsets: seeded, per class.
    assert_eq!(TrainingSet::random_subset(&ds, 3, 1).unwrap().images, set.images);
    assert_ne!(TrainingSet::random_subset(&ds, 3, 2).unwrap().images, set.images);
}

#[test]
fn stored_labels_are_the_teacher_on_the_regenerated_views() {
    let ds = small();
    let (model, meta) = teacher(&ds);
    let device = Default::default();
    let set = TrainingSet::random_subset(&ds, 2, 0).unwrap();
    let cfg = rded_augment();
    let labels = StoredLabels::compute(&set, &model, &meta.normalization, &cfg, vec![0, 1, 2], &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    labels.save(dir.path()).unwrap();
    let loaded = StoredLabels::load(dir.path()).unwrap();
    loaded.check_fits(&set, &cfg).unwrap();
    assert!(loaded.check_fits(&set, &AugmentConfig::none()).is_err());
    // The student side rebuilds (item 5, seed 2) and the teacher agrees with the stored label.
    let x = Tensor::<B, 4>::from_data(TensorData::new(set.view(5, 2, &cfg, &meta.normalization), [1, 1, 28, 28]), &device);
    let fresh: Vec<f32> = model.forward(x).into_data().to_vec().unwrap();
    for (a, b) in fresh.iter().zip(loaded.get(2, 5)) {
        assert!((a - b).abs() < 1e-4, "{fresh:?} vs {:?}", loaded.get(2, 5));
    }
    std::fs::write(dir.path().join("labels.bin"), [0u8; 10]).unwrap();
    let err = StoredLabels::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("labels.bin"), "{err}");
}

#[test]
fn kl_loss_schedule_and_statistics() {
    let device = Default::default();
    let a = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]], &device);
    let zero: f32 = student::kl_loss(a.clone(), a.clone(), 4.0).into_scalar();
    assert!(zero.abs() < 1e-6);
    // By hand: KL(p || q) for one row, T = 1.
    let s = Tensor::<B, 2>::from_floats([[0.0, 0.0]], &device);
    let t = Tensor::<B, 2>::from_floats([[(3.0f32).ln(), 0.0]], &device);
    let kl: f32 = student::kl_loss(s, t, 1.0).into_scalar();
    let want = 0.75 * (0.75f32 / 0.5).ln() + 0.25 * (0.25f32 / 0.5).ln();
    assert!((kl - want).abs() < 1e-6, "{kl} vs {want}");
    assert_eq!(student::rded_lr_factor(0, 300), 1.0);
    assert!((student::rded_lr_factor(300, 300) - 0.5).abs() < 1e-12);
    assert_eq!(student::rded_batch_size(1, 10, 10), 10);
    assert_eq!(student::rded_batch_size(10, 10, 100), 50);
    assert_eq!(student::rded_batch_size(50, 10, 500), 100);
    assert_eq!(student::rded_batch_size(50, 100, 5000), 200);
    assert_eq!(student::rded_batch_size(10, 10, 30), 30);
    let st = MeanStd::of(&[1.0, 2.0, 3.0]).unwrap();
    assert!((st.mean - 2.0).abs() < 1e-12 && (st.std - 1.0).abs() < 1e-12 && st.n == 3);
}

#[test]
fn students_train_with_every_label_source() {
    let ds = small();
    let (model, meta) = teacher(&ds);
    let device = Default::default();
    let set = TrainingSet::random_subset(&ds, 3, 0).unwrap();
    let cfg = rded_augment();
    let config = |augment: AugmentConfig| StudentConfig {
        model: ClassifierConfig::new(Arch::Convnet3, 1, 10, [28, 28]).with_norm(NormKind::Instance),
        epochs: 3,
        batch_size: 10,
        lr: 1e-3,
        weight_decay: 0.01,
        temperature: 4.0,
        augment,
        seed: 0,
        eval_every: 1,
    };
    let stored = StoredLabels::compute(&set, &model, &meta.normalization, &cfg, vec![0, 1, 2], &device).unwrap();
    for labels in [Labels::Hard, Labels::Online(&model), Labels::Stored(&stored)] {
        let source = labels.source();
        let augment = if source == LabelSource::Hard { AugmentConfig { cutmix: false, ..cfg.clone() } } else { cfg.clone() };
        let r = student::train_student::<Train>(&config(augment), &set, labels, &meta.normalization, &ds, &device).unwrap();
        assert_eq!(r.labels, source);
        assert_eq!(r.history.len(), 3);
        assert!(r.history.iter().all(|p| p.train_loss.is_finite() && p.test_accuracy.is_some()));
        assert!((0.0..=100.0).contains(&r.final_accuracy));
        assert_eq!(r.final_accuracy, r.history[2].test_accuracy.unwrap());
    }
    // Stored labels made for another augmentation are refused.
    let err = match student::train_student::<Train>(
        &config(AugmentConfig::none()),
        &set,
        Labels::Stored(&stored),
        &meta.normalization,
        &ds,
        &device,
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("mismatched labels accepted"),
    };
    assert!(err.contains("stored labels"), "{err}");
}

fn save_teacher(ds: &Dataset, dir: &Path) {
    let (model, meta) = teacher(ds);
    train::save_model(dir, &model, &meta).unwrap();
}

#[test]
fn the_grid_writes_its_tables_and_resumes() {
    let ds = small();
    let tdir = tempfile::tempdir().unwrap();
    save_teacher(&ds, tdir.path());
    let out = tempfile::tempdir().unwrap();
    let config = RdedGridConfig {
        ipcs: vec![1],
        factors: vec![1, 2],
        epochs: vec![2],
        student_seeds: 2,
        crops: 2,
        mipc: 8,
        coreset_seed: 0,
        layout: Layout::Collage,
        labels: LabelSource::Stored,
        temperature: 20.0,
        crop_scale_min: None,
        flip: true,
        baselines: true,
        arch: Arch::Convnet3,
        norm: NormKind::Instance,
    };
    let device = Default::default();
    let report = rded::run_grid::<Train>(&ds, tdir.path(), &config, "test".into(), out.path(), &device).unwrap();
    assert!(report.finished);
    assert_eq!(report.cells.len(), 4);
    for c in &report.cells {
        assert_eq!(c.final_accuracy.len(), 2, "{}", c.name);
        assert_eq!(c.final_stats.unwrap().n, 2);
    }
    for f in ["results.json", "results.md", "accuracy_vs_r.png", "curves_ipc1.png", "coresets/ipc1-r2/collage.png"] {
        assert!(out.path().join(f).exists(), "{f} missing");
    }
    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(md.contains("RDED r=2") && md.contains("random real, hard labels") && md.contains("±"), "{md}");
    // A rerun trains nothing: every run's report is reused as is.
    let run = out.path().join("runs/rded-ipc1-r2-seed1/report.json");
    let before = std::fs::metadata(&run).unwrap().modified().unwrap();
    let again = rded::run_grid::<Train>(&ds, tdir.path(), &config, "test".into(), out.path(), &device).unwrap();
    assert_eq!(std::fs::metadata(&run).unwrap().modified().unwrap(), before);
    let acc = |r: &rded::GridReport| r.cells.iter().map(|c| c.final_accuracy.clone()).collect::<Vec<_>>();
    assert_eq!(acc(&again), acc(&report));
    // Another temperature or coreset seed: nothing cached is reused for the cells it changes.
    let coreset_file = out.path().join("coresets/ipc1-r2/coreset.json");
    let coreset_before = std::fs::read_to_string(&coreset_file).unwrap();
    let changed = RdedGridConfig { temperature: 4.0, coreset_seed: 1, ..config.clone() };
    rded::run_grid::<Train>(&ds, tdir.path(), &changed, "test".into(), out.path(), &device).unwrap();
    assert_ne!(std::fs::metadata(&run).unwrap().modified().unwrap(), before, "a run of another temperature was reused");
    assert_ne!(std::fs::read_to_string(&coreset_file).unwrap(), coreset_before, "a coreset of another seed was reused");
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("labels/rded-ipc1-r2/labels.json")).unwrap()).unwrap();
    assert!(!labels["teacher"].as_str().unwrap().is_empty());
}

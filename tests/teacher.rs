//! A short teacher training run on the embedded subset: the loss falls, checkpoints resume,
//! evaluation reproduces the report, and bad inputs give clear errors.

use std::path::Path;

use burn::backend::Autodiff;
use dace::data::{self, Dataset};
use dace::device::CpuBackend;
use dace::models::{Arch, ClassifierConfig};
use dace::train::optim::{OptimizerConfig, OptimizerKind};
use dace::train::{self, ImageBatcher, TeacherConfig};

type Train = Autodiff<CpuBackend>;

fn small_dataset() -> Dataset {
    data::load_embedded().per_class_subset(30, 30)
}

fn teacher_config(ds: &Dataset, epochs: usize) -> TeacherConfig {
    let model = ClassifierConfig::new(Arch::Convnet3, ds.channels, ds.num_classes(), [ds.height, ds.width]);
    TeacherConfig::new(model, OptimizerConfig::new()).with_epochs(epochs).with_batch_size(32)
}

#[test]
fn training_lowers_the_loss_and_resumes_from_checkpoints() {
    let ds = small_dataset();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();

    let first = train::train_teacher::<Train>(teacher_config(&ds, 1), &ds, dir.path(), false, &device).unwrap();
    assert_eq!(first.history.len(), 1);
    for file in ["model.json", "model.bin", "optim.bin", "train_state.json", "report.json"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }

    // Resume with a longer schedule: the first epoch is not repeated.
    // A different seed: a retrained first epoch would show a different loss.
    let longer = teacher_config(&ds, 4).with_seed(7);
    let report = train::train_teacher::<Train>(longer, &ds, dir.path(), true, &device).unwrap();
    let losses: Vec<f64> = report.history.iter().map(|e| e.train_loss).collect();
    assert_eq!(losses.len(), 4);
    // (JSON keeps f64 to within an ulp, not bit-exactly.)
    assert!((losses[0] - first.history[0].train_loss).abs() < 1e-12, "epoch 1 was retrained");
    assert!(losses[3] < losses[0] * 0.8, "loss did not fall: {losses:?}");
    let accuracy = report.test_accuracy().unwrap();
    assert!(accuracy > 40.0, "test accuracy {accuracy}% after 4 epochs on 300 images");

    // Evaluating the saved model reproduces the report's final accuracy.
    let (model, meta) = train::load_model::<CpuBackend>(dir.path(), &device).unwrap();
    let batcher = ImageBatcher::plain(&ds, meta.normalization);
    let eval = train::evaluate(&model, &batcher, &ds.test, ds.num_classes(), 64, &device).unwrap();
    assert!((eval.accuracy - accuracy).abs() < 1e-9, "{} vs {}", eval.accuracy, accuracy);
}

#[test]
fn diverging_training_stops_with_a_clear_error() {
    let ds = small_dataset().per_class_subset(4, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut config = teacher_config(&ds, 3);
    config.optimizer = OptimizerConfig::new().with_kind(OptimizerKind::Sgd).with_lr(1e12);
    let err = train::train_teacher::<Train>(config, &ds, dir.path(), false, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("non-finite loss"), "{err}");
}

#[test]
fn corrupt_checkpoints_are_reported_with_their_path() {
    let ds = small_dataset().per_class_subset(2, 2);
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    train::train_teacher::<Train>(teacher_config(&ds, 1), &ds, dir.path(), false, &device).unwrap();

    std::fs::write(dir.path().join("model.bin"), b"not a model").unwrap();
    let err = train::load_model::<CpuBackend>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("model.bin"), "{err}");

    std::fs::write(dir.path().join("model.json"), b"{ broken").unwrap();
    let err = train::load_model::<CpuBackend>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("model.json") && err.contains("invalid JSON"), "{err}");

    let err = train::load_model::<CpuBackend>(Path::new("/nonexistent/teacher"), &device).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/teacher/model.json"), "{err}");
}

#[test]
fn a_model_for_other_images_is_refused() {
    let ds = small_dataset().per_class_subset(2, 2);
    let mut config = teacher_config(&ds, 1);
    config.model.image_size = [32, 32];
    let dir = tempfile::tempdir().unwrap();
    let err = train::train_teacher::<Train>(config, &ds, dir.path(), false, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("model expects 1x32x32 images"), "{err}");
}

#[test]
fn weights_for_another_shape_are_refused_on_load() {
    let ds = small_dataset().per_class_subset(2, 2);
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    train::train_teacher::<Train>(teacher_config(&ds, 1), &ds, dir.path(), false, &device).unwrap();
    // Same architecture, other input size: the weights decode but the linear head does not fit.
    let mut meta = train::checkpoint::load_meta(dir.path()).unwrap();
    meta.config.image_size = [32, 32];
    std::fs::write(dir.path().join("model.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = train::load_model::<CpuBackend>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("model.bin") && err.contains("parameter shapes differ"), "{err}");
}

/// Zero counts that would panic deep inside training (a division by a batch of 0, an empty epoch
/// loop, a checkpoint every 0 steps) are refused by the CLI with the flag named.
#[test]
fn zero_counts_are_refused_with_the_flag_named() {
    let cases: [(&[&str], &str); 6] = [
        (&["teacher", "train", "--data", "embedded", "--out", "unused", "--batch", "0"], "--batch"),
        (&["teacher", "train", "--data", "embedded", "--out", "unused", "--epochs", "0"], "--epochs"),
        (&["student", "--package", "unused", "--data", "embedded", "--out", "unused", "--batch", "0"], "--batch"),
        (&["student", "--package", "unused", "--data", "embedded", "--out", "unused", "--epochs", "0"], "--epochs"),
        (&["prior", "train", "--data", "embedded", "--out", "unused", "--checkpoint-every", "0"], "--checkpoint-every"),
        (&["distill", "--data", "embedded", "--teacher", "t", "--out", "unused", "--seeds", "0"], "--seeds"),
    ];
    for (args, flag) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(&format!("'{flag}")) && stderr.contains("must be at least 1"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!std::path::Path::new("unused").exists());
}

/// Found by tests/fuzz_readers.rs: a checkpoint whose model.json names a model that cannot be
/// built ("convnet3" edited to "convnet5" for 28 px images) is refused, naming the file, instead
/// of panicking while the model is built.
#[test]
fn a_checkpoint_of_an_impossible_model_is_refused() {
    let ds = small_dataset();
    let dir = tempfile::tempdir().unwrap();
    let config = ClassifierConfig::new(Arch::Convnet3, ds.channels, ds.num_classes(), [ds.height, ds.width]);
    let model = config.init::<CpuBackend>(&Default::default());
    let (mean, std) = data::augment::channel_mean_std(&ds).unwrap();
    let meta = train::ModelMeta::new(config, train::Normalization { mean, std }, &ds.name, &ds.classes);
    train::save_model(dir.path(), &model, &meta).unwrap();
    let path = dir.path().join("model.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("convnet3", "convnet5");
    std::fs::write(&path, text).unwrap();
    let err = match train::load_model::<CpuBackend>(dir.path(), &Default::default()) {
        Ok(_) => panic!("a convnet5 checkpoint for 28 px images loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("model.json") && err.contains("convnet5 needs images of at least 32x32"), "{err}");
    // Buildable, but with another number of layers than the weights (burn asserts on that).
    let text = std::fs::read_to_string(&path).unwrap().replace("convnet5", "convnet4");
    std::fs::write(&path, text).unwrap();
    let err = match train::load_model::<CpuBackend>(dir.path(), &Default::default()) {
        Ok(_) => panic!("convnet3 weights loaded as a convnet4"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("model.bin") && err.contains("another number of layers"), "{err}");
}

/// The library refuses zero counts itself (the CLI's parser is not its only guard): a caller
/// building configs in code gets an error naming the setting, not a panic or an endless loop.
#[test]
fn zero_counts_are_refused_by_the_library() {
    use dace::package::AugmentConfig;
    use dace::prior::train::{train_prior, PriorTrainConfig};
    use dace::student::{self, Labels, StudentConfig, TrainingSet};
    let ds = small_dataset();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let message = |r: Result<String, dace::DaceError>| r.expect_err("a zero count was accepted").to_string();

    for config in [teacher_config(&ds, 1).with_batch_size(0), teacher_config(&ds, 0)] {
        let why = message(train::train_teacher::<Train>(config, &ds, dir.path(), false, &device).map(|_| String::new()));
        assert!(why.contains("batch size") && why.contains("must be at least 1"), "{why}");
    }

    let set = TrainingSet::random_subset(&ds, 1, 0).unwrap();
    let model = ClassifierConfig::new(Arch::Convnet3, ds.channels, ds.num_classes(), [ds.height, ds.width]);
    let augment = AugmentConfig { crop_scale_min: 1.0, flip: false, cutmix: false, shuffle_factor: 1 };
    let (mean, std) = data::augment::channel_mean_std(&ds).unwrap();
    let norm = train::Normalization { mean, std };
    for (epochs, batch) in [(1, 0), (0, 10)] {
        let config = StudentConfig::rded(model.clone(), epochs, batch, 20.0, augment.clone(), 0);
        let r = student::train_student::<Train>(&config, &set, Labels::Hard, &norm, &ds, &device);
        let why = message(r.map(|_| String::new()));
        assert!(why.contains("student: batch size") && why.contains("must be at least 1"), "{why}");
    }

    for config in [
        PriorTrainConfig { checkpoint_every: 0, ..PriorTrainConfig::default() },
        PriorTrainConfig { batch_size: 0, ..PriorTrainConfig::default() },
    ] {
        let why = message(train_prior::<Train>(config, &ds, &dir.path().join("prior"), false, &device).map(|_| String::new()));
        assert!(why.contains("checkpoint_every") && why.contains("must be at least 1"), "{why}");
    }
    assert!(!dir.path().join("prior").exists(), "a refused prior run wrote files");
}

/// Two classes of 8x8 RGB images that differ by class (bright vs dark) and by position.
fn pattern_folder(root: &Path) {
    for class in 0..2u32 {
        for i in 0..12u32 {
            let split = if i < 10 { "train" } else { "test" };
            let path = root.join(format!("{split}/c{class}/{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let pixel =
                |x: u32, y: u32| image::Rgb([(class * 120 + x * 9 + i) as u8, (class * 100 + y * 11) as u8, ((x ^ y) * 13 + i) as u8]);
            image::RgbImage::from_fn(8, 8, pixel).save(path).unwrap();
        }
    }
}

#[test]
fn a_folder_read_from_files_gives_the_training_batches_of_one_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    pattern_folder(tmp.path());
    let spec = tmp.path().to_str().unwrap();
    let memory = data::load(spec).unwrap();
    let lazy = data::load_with(spec, &data::LoadOptions { size: None, memory_limit: 0 }).unwrap();
    assert!(lazy.train.is_lazy() && !memory.train.is_lazy());
    let device = Default::default();
    // The training batches (padded crop + flip, seeded) are the same bytes from either storage.
    let (mean, std) = data::augment::channel_mean_std(&memory).unwrap();
    let batcher = |ds: &Dataset| {
        ImageBatcher::plain(ds, train::Normalization { mean: mean.clone(), std: std.clone() }).augmenting(train::CropKind::Padded, 1, true)
    };
    let batch = |ds: &Dataset| batcher(ds).images::<CpuBackend>(&ds.train, &[3, 0, 17, 9], Some(5), &device).unwrap().into_data();
    assert_eq!(batch(&memory), batch(&lazy));

    // A teacher trains on the files, with the padded crop and with ImageNet's random resized
    // crop cut from the files at full resolution.
    for crop in [train::CropKind::Padded, train::CropKind::Resized] {
        let dir = tempfile::tempdir().unwrap();
        let config = teacher_config(&lazy, 2).with_batch_size(8).with_crop(crop);
        let report = train::train_teacher::<Train>(config, &lazy, dir.path(), false, &device).unwrap();
        assert!(report.history.iter().all(|e| e.train_loss.is_finite()), "{crop:?}: {:?}", report.history);
        assert_eq!(report.final_eval.unwrap().samples, 4);
    }
}

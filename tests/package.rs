//! Distilled packages: label encodings, the round trip, every corruption case, regeneration
//! determinism, and a tiny distill -> package -> regenerate -> student run with a tiny prior on
//! the embedded Fashion-MNIST subset; a prior working at another size than the student's; on
//! wgpu (lavapipe in CI), the same expansions as the CPU.

mod common;

use common::nan_max;

use std::path::Path;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::prelude::{Tensor, TensorData};
use burn::tensor::FloatDType;
use dace::coreset::{self, Coreset, CoresetConfig};
use dace::data::transform::resize_antialiased;
use dace::data::{self, Dataset};
use dace::distill::{self, argmax};
use dace::expand::{quantize, upsample_patches, Expander};
use dace::models::{Arch, Classifier, NormKind};
use dace::package::{
    AugmentConfig, ExpandConfig, LabelEncoding, Manifest, Mode, Package, PackageSettings, PriorRef, Resolutions, SchedulerKind, UNetDType,
    Variant,
};
use dace::prior::bundle::Prior;
use dace::prior::pipeline::{self, NoiseId};
use dace::student::package::{regenerator, regenerator_on, student_config, train_on_package, train_on_package_checkpointed};
use dace::student::TrainingSet;
use dace::train::ModelMeta;

use common::{random_teacher as teacher, tiny_prior, B};

fn small() -> Dataset {
    data::load_embedded().per_class_subset(20, 10)
}

fn augment() -> AugmentConfig {
    AugmentConfig { crop_scale_min: 0.5, flip: true, cutmix: true, shuffle_factor: 1 }
}

/// The manifest of a distillation of `coreset` (expansion batch 16), the prior working at the
/// student's size.
fn manifest_of(
    coreset: &Coreset,
    meta: &ModelMeta,
    teacher_dir: &Path,
    prior: Option<&Prior<B>>,
    variant: Variant,
    seeds: Vec<u64>,
    labels: LabelEncoding,
) -> dace::Result<Manifest> {
    manifest_at(coreset, meta, teacher_dir, prior, variant, seeds, labels, None)
}

/// [`manifest_of`] with the prior working at `prior_size`.
#[allow(clippy::too_many_arguments)]
fn manifest_at(
    coreset: &Coreset,
    meta: &ModelMeta,
    teacher_dir: &Path,
    prior: Option<&Prior<B>>,
    variant: Variant,
    seeds: Vec<u64>,
    labels: LabelEncoding,
    prior_size: Option<[usize; 2]>,
) -> dace::Result<Manifest> {
    let settings = PackageSettings {
        expansion: ExpandConfig::variant(variant, 5, SchedulerKind::EulerA, [0.5, 1.0]),
        augment: augment(),
        seeds,
        labels,
        batch: 16,
        prior_size,
    };
    let teacher = distill::teacher_ref(teacher_dir, meta)?;
    Manifest::new(&coreset.meta, settings, teacher, meta.normalization.clone(), prior.map(PriorRef::of))
}

struct Made {
    pkg: Package,
    /// The distillation's expansions per seed.
    images: Vec<Arc<Vec<u8>>>,
}

#[allow(clippy::too_many_arguments)]
fn distill_into(
    ds: &Dataset,
    teacher: &Classifier<B>,
    meta: &ModelMeta,
    teacher_dir: &Path,
    prior: Option<&Prior<B>>,
    variant: Variant,
    seeds: usize,
    labels: LabelEncoding,
    out: &Path,
) -> Made {
    let device = Default::default();
    let cc = CoresetConfig { ipc: 1, factor: 2, crops: 2, mipc: 8, seed: 0 };
    let coreset: Coreset = coreset::select(ds, teacher, meta, &cc, &device).unwrap();
    let manifest = manifest_of(&coreset, meta, teacher_dir, prior, variant, (0..seeds as u64).map(|s| 100 + s).collect(), labels).unwrap();
    let mut images = Vec::new();
    let mut keep = |_: usize, imgs: &[u8]| images.push(Arc::new(imgs.to_vec()));
    let (pkg, report, _) = distill::distill(&coreset, prior, teacher, manifest, ds.train.len(), out, &mut keep, &device).unwrap();
    assert_eq!(report.expansions, 40 * seeds);
    assert_eq!(report.size.patches_bytes, 40 * 14 * 14);
    assert_eq!(report.size.ipc_budget_bytes, 10 * 28 * 28);
    Made { pkg, images }
}

#[test]
fn label_encodings_round_trip_within_their_precision() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7).collect();
    for (enc, tol) in [(LabelEncoding::F16, 1e-2), (LabelEncoding::Int8, 0.03)] {
        let bytes = enc.encode(&logits, 10);
        assert_eq!(bytes.len(), 5 * enc.row_bytes(10));
        let back = enc.decode(&bytes, 10).unwrap();
        assert_eq!(logits.len(), back.len());
        let err = nan_max(logits.iter().zip(&back).map(|(a, b)| (a - b).abs()));
        assert!(err <= tol, "{enc}: max error {err}");
    }
    // top-k keeps the k largest exactly (to f16) and fills the rest with their mean.
    let enc = LabelEncoding::TopK { k: 3 };
    let back = enc.decode(&enc.encode(&logits, 10), 10).unwrap();
    for (row, dec) in logits.chunks(10).zip(back.chunks(10)) {
        let mut order: Vec<usize> = (0..10).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for &c in &order[..3] {
            assert!((row[c] - dec[c]).abs() < 1e-2);
        }
        let mean = order[3..].iter().map(|&c| row[c]).sum::<f32>() / 7.0;
        for &c in &order[3..] {
            assert!((dec[c] - mean).abs() < 1e-2);
        }
        assert_eq!(argmax(row), argmax(dec));
    }
    assert_eq!(LabelEncoding::parse("top-4"), Ok(LabelEncoding::TopK { k: 4 }));
    assert!(LabelEncoding::parse("top-0").is_err() && LabelEncoding::parse("f32").is_err());
    // A class index outside the class list is refused.
    let mut bytes = enc.encode(&logits[..10], 10);
    bytes[2] = 200;
    assert!(enc.decode(&bytes, 10).unwrap_err().contains("class 200"));
}

#[test]
fn package_round_trip_and_every_corruption_is_refused() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let (teacher, meta) = teacher(&ds, &dir.path().join("teacher"));
    let out = dir.path().join("pkg");
    let made = distill_into(&ds, &teacher, &meta, &dir.path().join("teacher"), None, Variant::Rded, 3, LabelEncoding::F16, &out);
    let loaded = Package::load(&out).unwrap();
    assert_eq!(loaded.manifest, made.pkg.manifest);
    assert_eq!(loaded.patches, made.pkg.patches);
    assert_eq!(loaded.logits, made.pkg.logits, "f16 labels decode to what the writer kept");
    assert!(loaded.manifest.prior.is_none(), "the rded variant needs no prior");
    // Rewriting over an existing package leaves no temporary directories behind.
    let mut again = loaded.clone();
    again.save(&out, ds.train.len()).unwrap();
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    let corrupt = |name: &str, edit: &dyn Fn(&Path), expect: &[&str]| {
        let copy = dir.path().join(name);
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).unwrap();
        for f in ["manifest.json", "patches.bin", "labels.bin"] {
            std::fs::copy(out.join(f), copy.join(f)).unwrap();
        }
        edit(&copy);
        let err = Package::load(&copy).err().unwrap_or_else(|| panic!("{name}: corrupted package loaded")).to_string();
        for e in expect {
            assert!(err.contains(e), "{name}: `{err}` lacks `{e}`");
        }
    };
    let edit_manifest = |p: &Path, from: &str, to: &str| {
        let text = std::fs::read_to_string(p.join("manifest.json")).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(p.join("manifest.json"), text.replacen(from, to, 1)).unwrap();
    };
    corrupt(
        "truncated",
        &|p| {
            let b = std::fs::read(p.join("labels.bin")).unwrap();
            std::fs::write(p.join("labels.bin"), &b[..b.len() - 7]).unwrap();
        },
        &["labels.bin", "truncated"],
    );
    corrupt(
        "flipped",
        &|p| {
            let mut b = std::fs::read(p.join("patches.bin")).unwrap();
            b[100] ^= 0x10;
            std::fs::write(p.join("patches.bin"), b).unwrap();
        },
        &["patches.bin", "sha256", "corrupted"],
    );
    corrupt("no-manifest", &|p| std::fs::remove_file(p.join("manifest.json")).unwrap(), &["manifest.json", "not a dace package"]);
    corrupt("bad-json", &|p| std::fs::write(p.join("manifest.json"), "{\"format\": ").unwrap(), &["manifest.json", "invalid JSON"]);
    corrupt("version", &|p| edit_manifest(p, "dace-package/1", "dace-package/9"), &["manifest.json", "dace-package/9"]);
    corrupt("rng", &|p| edit_manifest(p, "\"rng_scheme\": 1", "\"rng_scheme\": 2"), &["manifest.json", "`rng_scheme` is 2"]);
    corrupt("missing-labels", &|p| std::fs::remove_file(p.join("labels.bin")).unwrap(), &["labels.bin"]);
    // A manifest edited to claim other labels no longer matches the label file's length.
    corrupt("encoding", &|p| edit_manifest(p, "\"encoding\": \"f16\"", "\"encoding\": \"int8\""), &["labels.bin", "rows of int8"]);
    // Smaller label encodings: same items, fewer bytes, argmax kept.
    for enc in [LabelEncoding::Int8, LabelEncoding::TopK { k: 2 }] {
        let mut p = loaded.clone();
        p.manifest.labels = enc;
        let path = dir.path().join(format!("pkg-{enc}"));
        let size = p.save(&path, ds.train.len()).unwrap();
        assert!(size.labels_bytes < made.pkg.manifest.files["labels.bin"].bytes);
        let q = Package::load(&path).unwrap();
        // The argmax survives wherever the top two logits are further apart than the encoding's
        // error (int8: one step of the row's range / 255; top-k keeps the top logits as f16).
        let mut checked = 0;
        for row in 0..q.logits.len() / 10 {
            let orig = &loaded.logits[row * 10..row * 10 + 10];
            let mut sorted = orig.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let step = (sorted[0] - sorted[9]) / 255.0;
            if sorted[0] - sorted[1] > 2.0 * step + 1e-2 {
                checked += 1;
                assert_eq!(argmax(&q.logits[row * 10..row * 10 + 10]), argmax(orig), "{enc} row {row}");
            }
        }
        assert!(checked > 0, "{enc}: no row with a clear argmax");
    }
}

#[test]
fn distill_regenerate_and_train_end_to_end_with_a_tiny_prior() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let prior = tiny_prior(&ds, &dir.path().join("prior"), 2);
    let out = dir.path().join("pkg");
    let made = distill_into(&ds, &teacher, &meta, &teacher_dir, Some(&prior), Variant::SrAugMixup, 2, LabelEncoding::F16, &out);
    let pkg = Package::load(&out).unwrap();
    assert_eq!(pkg.manifest.prior.as_ref().unwrap().fingerprint, prior.fingerprint);

    // Regeneration from the package: bit-identical to the distillation, twice.
    let mut regen = regenerator(&pkg, Some(&prior), None, &device).unwrap();
    for (s, &seed) in pkg.manifest.seeds.iter().enumerate() {
        let a = regen.expander().expand_all(seed).unwrap();
        assert_eq!(a, *made.images[s], "seed {seed}: regenerated != distilled");
        assert_eq!(a, regen.expander().expand_all(seed).unwrap(), "seed {seed}: not deterministic");
    }
    // Issue 20: each seed's batches spread over two devices (16 of 40 items a batch: 32 items
    // on the first, 8 on the second) are the bytes one device makes.
    let priors: Vec<Option<Prior<B>>> = (0..2).map(|_| Some(Prior::<B>::load(&dir.path().join("prior"), &device).unwrap())).collect();
    let mut spread = regenerator_on(&pkg, &priors, Some(16), &[device, device]).unwrap();
    let mut one = regenerator(&pkg, priors[0].as_ref(), Some(16), &device).unwrap();
    assert_eq!((spread.devices(), one.devices()), (2, 1));
    for (s, &seed) in pkg.manifest.seeds.iter().enumerate() {
        assert_eq!(*spread.epoch(s, seed).unwrap(), *one.epoch(s, seed).unwrap(), "seed {seed}: two devices differ from one");
    }
    assert!(regenerator_on(&pkg, &priors, None, &[device]).is_err(), "two priors for one device");
    // Seeds matter, and so does mixup: the images differ from plain img2img and between seeds.
    assert_ne!(made.images[0], made.images[1]);
    let cm = &pkg.manifest;
    let plain = Expander::new(
        Some(&prior),
        ExpandConfig::variant(Variant::SrAug, 5, SchedulerKind::EulerA, [0.5, 1.0]),
        &pkg.patches,
        cm.channels,
        cm.resolutions(),
        cm.items.clone(),
        16,
        &device,
    )
    .unwrap();
    assert_ne!(plain.expand_all(cm.seeds[0]).unwrap(), *made.images[0]);

    // The UNet in f16: an expander refuses a prior loaded in another type; with the prior cast,
    // regeneration is deterministic and close to, not equal to, the f32 images. Manifests of f32
    // packages do not mention the type (they predate it); f16 ones record it.
    let half_config = ExpandConfig { unet_dtype: UNetDType::F16, ..cm.expansion.clone() };
    let half_expander = |p| expander_for(p, half_config.clone(), &pkg);
    let err = half_expander(&prior).err().unwrap().to_string();
    assert!(err.contains("F32") && err.contains("f16"), "{err}");
    let half_prior = Prior::<B>::load(&dir.path().join("prior"), &device).unwrap().with_unet_dtype(FloatDType::F16).unwrap();
    assert_eq!(half_prior.fingerprint, prior.fingerprint);
    let half = half_expander(&half_prior).unwrap();
    let h = half.expand_all(cm.seeds[0]).unwrap();
    assert_eq!(h, half.expand_all(cm.seeds[0]).unwrap(), "f16 regeneration is deterministic");
    assert_ne!(h, *made.images[0], "the f16 pass really ran in f16");
    let mse = h.iter().zip(made.images[0].iter()).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>() / h.len() as f64;
    let psnr = 10.0 * (255.0f64 * 255.0 / mse).log10();
    println!("f16 vs f32 expansions: PSNR {psnr:.1} dB");
    assert!(psnr > 30.0, "f16 expansions drift from f32 ones: PSNR {psnr:.1} dB");
    assert!(serde_json::to_value(&cm.expansion).unwrap().get("unet_dtype").is_none());
    assert_eq!(serde_json::to_value(&half_config).unwrap()["unet_dtype"], "f16");
    // A mixup partner is another patch of the same class; gamma lies in the range.
    let mixer = regen.expander();
    for item in 0..pkg.num_items() {
        let (partner, g) = mixer.mixup_choice(item, 7).unwrap();
        assert!(partner != item && cm.items[partner] == cm.items[item] && (0.5..=1.0).contains(&g));
    }

    // Wrong or missing prior: refused before anything is regenerated.
    let mut other = pkg.clone();
    other.manifest.prior.as_mut().unwrap().fingerprint = "0".repeat(64);
    let err = regenerator(&other, Some(&prior), None, &device).err().unwrap().to_string();
    assert!(err.contains("was made with prior 000000000000") && err.contains("would not match"), "{err}");
    let err = regenerator::<B>(&pkg, None, None, &device).err().unwrap().to_string();
    assert!(err.contains("--prior"), "{err}");

    // A student trains from the package alone (regenerated images, stored labels).
    let config = student_config(&pkg, Arch::Convnet3, NormKind::Instance, 3, Some(20), 20.0, 0);
    let report = train_on_package::<Autodiff<B>>(&pkg, &mut regen, &config, &ds, &device).unwrap();
    assert_eq!(report.history.len(), 3);
    assert!(report.final_accuracy.is_finite() && report.history.iter().all(|p| p.train_loss.is_finite()));
    assert!(regen.images >= 40, "the student regenerated its epochs' images");
    // Evaluation data of another dataset is refused.
    let mut mnist_like = ds.clone();
    mnist_like.name = "mnist".into();
    let err = train_on_package::<Autodiff<B>>(&pkg, &mut regen, &config, &mnist_like, &device).unwrap_err().to_string();
    assert!(err.contains("fashion") && err.contains("mnist"), "{err}");
}

/// `dace web data` stages a package for the browser demo, and refuses a patch or a seed the
/// package does not hold before writing anything.
#[test]
fn web_data_stages_a_package_and_refuses_items_it_does_not_hold() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let (teacher, meta) = teacher(&ds, &dir.path().join("teacher"));
    let pkg = dir.path().join("pkg");
    distill_into(&ds, &teacher, &meta, &dir.path().join("teacher"), None, Variant::Rded, 2, LabelEncoding::F16, &pkg);
    let out = dir.path().join("web");
    let web_data = |extra: &[&str]| {
        let mut args = vec!["web", "data", "--package", pkg.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(&args).output().unwrap()
    };
    let bad_item = web_data(&["--item", "40"]);
    let stderr = String::from_utf8_lossy(&bad_item.stderr);
    assert!(!bad_item.status.success() && stderr.contains("--item 40") && stderr.contains("holds 40 patches"), "{stderr}");
    let bad_seed = web_data(&["--seed-index", "2"]);
    let stderr = String::from_utf8_lossy(&bad_seed.stderr);
    assert!(!bad_seed.status.success() && stderr.contains("--seed-index 2") && stderr.contains("holds 2 seeds"), "{stderr}");
    assert!(!out.exists(), "a refused call wrote {}", out.display());

    let ok = web_data(&["--item", "39", "--seed-index", "1"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["files"], serde_json::json!(["package/labels.bin", "package/manifest.json", "package/patches.bin"]));
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("expected.json")).unwrap()).unwrap();
    assert_eq!((expected["item"].as_u64(), expected["pixels"].as_array().unwrap().len()), (Some(39), 28 * 28));
}

/// An expander for `pkg`'s patches with another expansion config.
fn expander_for<'a>(prior: &'a Prior<B>, config: ExpandConfig, pkg: &Package) -> dace::Result<Expander<'a, B>> {
    let cm = &pkg.manifest;
    Expander::new(Some(prior), config, &pkg.patches, cm.channels, cm.resolutions(), cm.items.clone(), 16, &Default::default())
}

#[test]
fn expansion_settings_are_checked() {
    let bad = |c: ExpandConfig| c.plan().err().map(|e| e.to_string()).unwrap_or_default();
    let base = ExpandConfig::variant(Variant::SrAug, 5, SchedulerKind::EulerA, [0.5, 1.0]);
    assert_eq!(base.plan().unwrap().len(), 4, "rho 0.8 of 5 steps runs 4");
    assert_eq!(ExpandConfig { rho: 0.4, ..base.clone() }.plan().unwrap().len(), 2);
    assert!(bad(ExpandConfig { rho: 0.1, ..base.clone() }).contains("runs no step"));
    assert!(bad(ExpandConfig { rho: 1.5, ..base.clone() }).contains("rho"));
    assert!(bad(ExpandConfig { mixup: Some([0.9, 0.2]), ..base.clone() }).contains("gamma range"));
    assert!(bad(ExpandConfig { steps: 0, ..base.clone() }).contains("steps"));
    assert_eq!(ExpandConfig::variant(Variant::CondOnly, 5, SchedulerKind::Ddim, [0.5, 1.0]).plan().unwrap().len(), 5);
}

/// The same package regenerated on wgpu (dace's WGSL kernels; lavapipe in CI) matches the CPU:
/// no pixel more than 1/255 apart, PSNR >= 60 dB, and the teacher's argmax unchanged.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_regenerates_the_cpu_expansions() {
    // Without a Vulkan driver, one line naming the package instead of a panic in cubecl's thread.
    dace::device::check_wgpu().unwrap_or_else(|e| panic!("{e}"));
    use dace::device::WgpuBackend;
    use dace::student::labels::teacher_logits;
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let prior_dir = dir.path().join("prior");
    let prior = tiny_prior(&ds, &prior_dir, 2);
    let out = dir.path().join("pkg");
    let made = distill_into(&ds, &teacher, &meta, &teacher_dir, Some(&prior), Variant::SrAugMixup, 1, LabelEncoding::F16, &out);
    let pkg = Package::load(&out).unwrap();
    let wdev = Default::default();
    let wprior = Prior::<WgpuBackend>::load(&prior_dir, &wdev).unwrap();
    let wregen = regenerator(&pkg, Some(&wprior), None, &wdev).unwrap();
    let seed = pkg.manifest.seeds[0];
    let gpu = wregen.expander().expand_all(seed).unwrap();
    let cpu = &made.images[0];
    let mse = cpu.iter().zip(&gpu).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>() / cpu.len() as f64;
    let psnr = if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64.powi(2) / mse).log10() };
    let largest = cpu.iter().zip(&gpu).map(|(&a, &b)| a.abs_diff(b)).max().unwrap_or(0);
    println!("wgpu vs cpu: PSNR {psnr:.1} dB, largest pixel difference {largest}");
    assert_eq!(cpu.len(), gpu.len());
    assert!(largest <= 1 && psnr >= 60.0, "wgpu vs cpu: PSNR {psnr:.1} dB, largest pixel difference {largest}/255");
    let set = TrainingSet::from_package(&pkg.manifest, &pkg.patches);
    let m = &pkg.manifest;
    let logits = teacher_logits(&set, &gpu, seed, &teacher, &m.normalization, &m.augment, &Default::default()).unwrap();
    // A random-weight teacher has near-ties; a +-1 pixel difference may flip only those.
    let mut clear = 0;
    for item in 0..set.len() {
        let stored = pkg.logits(0, item);
        let mut sorted = stored.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 0.05 {
            clear += 1;
            assert_eq!(argmax(&logits[item * 10..item * 10 + 10]), argmax(stored), "item {item}");
        }
    }
    assert!(clear >= set.len() / 2, "only {clear} items with a clear argmax");
}

/// A distillation killed mid-run resumes from its checkpoint (`DACE_CHECKPOINT_SECONDS=0`: one
/// after every seed) and gives the same package as an uninterrupted run; the checkpoint is gone
/// afterwards.
#[test]
fn interrupted_distillation_resumes_to_the_same_package() {
    // SAFETY (edition 2021: set_var is safe): only distill reads this variable.
    std::env::set_var("DACE_CHECKPOINT_SECONDS", "0");
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let whole = distill_into(&ds, &teacher, &meta, &teacher_dir, None, Variant::Rded, 3, LabelEncoding::F16, &dir.path().join("a"));

    let cc = CoresetConfig { ipc: 1, factor: 2, crops: 2, mipc: 8, seed: 0 };
    let coreset: Coreset = coreset::select(&ds, &teacher, &meta, &cc, &device).unwrap();
    let manifest = || {
        manifest_of(&coreset, &meta, &teacher_dir, None, Variant::Rded, (0..3u64).map(|s| 100 + s).collect(), LabelEncoding::F16).unwrap()
    };
    let out = dir.path().join("b");
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut die = |s: usize, _: &[u8]| assert!(s != 1, "killed at seed 1");
        distill::distill(&coreset, None, &teacher, manifest(), ds.train.len(), &out, &mut die, &device)
    }));
    assert!(killed.is_err());
    assert!(!out.exists());
    assert!(dir.path().join(".b.partial.json").exists() && dir.path().join(".b.partial.bin").exists());

    let mut computed = Vec::new();
    let mut seen = |s: usize, _: &[u8]| computed.push(s);
    let (pkg, _, _) = distill::distill(&coreset, None, &teacher, manifest(), ds.train.len(), &out, &mut seen, &device).unwrap();
    assert_eq!(computed, [1, 2], "seed 0 must come from the checkpoint");
    assert_eq!(pkg.logits, whole.pkg.logits);
    assert_eq!(std::fs::read(out.join("labels.bin")).unwrap(), std::fs::read(dir.path().join("a/labels.bin")).unwrap());
    assert!(!dir.path().join(".b.partial.json").exists() && !dir.path().join(".b.partial.bin").exists());
}

/// Issue 26: a manifest that contradicts itself is refused on load (and when built or written),
/// with the disagreeing fields named. Each case edits one field of a real package's manifest;
/// the data files stay valid, so only the manifest's own consistency can catch it.
#[test]
fn contradictory_manifests_are_refused() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let out = dir.path().join("pkg");
    let made = distill_into(&ds, &teacher, &meta, &teacher_dir, None, Variant::Rded, 2, LabelEncoding::F16, &out);
    let good = made.pkg.manifest.clone();
    assert_eq!(good.validate(), Ok(()));
    // An img2img manifest of the same package, as if made with a prior.
    let img2img = || {
        let mut m = good.clone();
        m.expansion = ExpandConfig::variant(Variant::SrAugMixup, 5, SchedulerKind::EulerA, [0.5, 1.0]);
        m.prior = Some(PriorRef { fingerprint: "ab".repeat(32), dataset: ds.name.clone(), vae_factor: None });
        m
    };
    assert_eq!(img2img().validate(), Ok(()));
    let generate = || Manifest { expansion: ExpandConfig::variant(Variant::CondOnly, 5, SchedulerKind::EulerA, [0.5, 1.0]), ..img2img() };

    let check = |name: &str, base: Manifest, edit: &dyn Fn(&mut Manifest), expect: &[&str]| {
        let mut m = base;
        edit(&mut m);
        let why = m.validate().expect_err(name);
        for e in expect {
            assert!(why.contains(e), "{name}: `{why}` lacks `{e}`");
        }
        // Through the loader: the error names the manifest file (NaN, which JSON cannot hold,
        // is written as null and refused as invalid JSON).
        let copy = dir.path().join(format!("case-{}", name.replace(' ', "-")));
        std::fs::create_dir_all(&copy).unwrap();
        for f in ["patches.bin", "labels.bin"] {
            std::fs::copy(out.join(f), copy.join(f)).unwrap();
        }
        let json = serde_json::to_vec_pretty(&m).unwrap();
        std::fs::write(copy.join("manifest.json"), &json).unwrap();
        let err = Package::load(&copy).err().unwrap_or_else(|| panic!("{name}: loaded")).to_string();
        let expected = if serde_json::from_slice::<Manifest>(&json).is_ok() { why.as_str() } else { "invalid JSON" };
        assert!(err.contains("manifest.json") && err.contains(expected), "{name}: {err}");
        // And the writer refuses to produce it.
        let mut pkg = Package { manifest: m, ..made.pkg.clone() };
        let err = pkg.save(&dir.path().join("never"), ds.train.len()).err().unwrap_or_else(|| panic!("{name}: written")).to_string();
        assert!(err.contains("contradictory manifest"), "{name}: {err}");
    };
    check("img2img without prior", img2img(), &|m| m.prior = None, &["`expansion.mode`", "img2img", "`prior` is null"]);
    check("generate without prior", generate(), &|m| m.prior = None, &["generate", "`prior` is null"]);
    check("empty fingerprint", img2img(), &|m| m.prior.as_mut().unwrap().fingerprint = String::new(), &["`prior.fingerprint` is empty"]);
    check("upsample with prior", good.clone(), &|m| m.prior = img2img().prior, &["\"upsample\"", "`prior` names one"]);
    check("ipc 0", good.clone(), &|m| m.ipc = 0, &["`ipc` (0)"]);
    check("ipc 2", good.clone(), &|m| m.ipc = 2, &["`items` lists 40 patches", "`ipc` 2"]);
    check("factor 1", good.clone(), &|m| m.factor = 1, &["`patch_size`", "`factor` 1"]);
    check("items out of order", good.clone(), &|m| m.items.swap(0, 39), &["`items[0]` is class 9", "must be class 0"]);
    check(
        "items short",
        good.clone(),
        &|m| {
            m.items.pop();
        },
        &["`items` lists 39 patches"],
    );
    check("class out of range", good.clone(), &|m| m.items[3] = 10, &["`items[3]` is class 10"]);
    check("batch 0", good.clone(), &|m| m.batch = 0, &["`batch` is 0"]);
    check("rho 0 on img2img", img2img(), &|m| m.expansion.rho = 0.0, &["`expansion.rho` is 0"]);
    check("rho NaN", img2img(), &|m| m.expansion.rho = f64::NAN, &["`expansion.rho` is NaN"]);
    check("rho above 1", img2img(), &|m| m.expansion.rho = 1.5, &["`expansion.rho` is 1.5"]);
    check("steps 0", img2img(), &|m| m.expansion.steps = 0, &["`expansion.steps` is 0"]);
    check("steps 0 upsample", good.clone(), &|m| m.expansion.steps = 0, &["`expansion.steps` is 0"]);
    check("mixup reversed", img2img(), &|m| m.expansion.mixup = Some([0.9, 0.2]), &["`expansion.mixup` is [0.9, 0.2]"]);
    check("mixup above 1", img2img(), &|m| m.expansion.mixup = Some([0.5, 1.5]), &["`expansion.mixup`"]);
    check("guidance NaN", img2img(), &|m| m.expansion.guidance = f32::NAN, &["`expansion`", "guidance"]);
    check("crop scale 0", good.clone(), &|m| m.augment.crop_scale_min = 0.0, &["`augment.crop_scale_min` is 0"]);
    check("crop scale above 1", good.clone(), &|m| m.augment.crop_scale_min = 1.5, &["`augment.crop_scale_min` is 1.5"]);
    check("shuffle 0", good.clone(), &|m| m.augment.shuffle_factor = 0, &["`augment.shuffle_factor` is 0"]);
    check("top-k above classes", good.clone(), &|m| m.labels = LabelEncoding::TopK { k: 11 }, &["top-11", "1..=10"]);
    check("duplicate seed", good.clone(), &|m| m.seeds[1] = m.seeds[0], &["`seeds[1]` (100) repeats"]);
    check("no seeds", good.clone(), &|m| m.seeds.clear(), &["`seeds` is empty"]);
    check("std 0", good.clone(), &|m| m.normalization.std[0] = 0.0, &["`normalization`"]);
    check("no classes", good.clone(), &|m| m.classes.clear(), &["`classes` is empty"]);
    // The prior's working size (issue 19): 32x32 for these 28x28 images and 14x14 patches.
    let at32 = || {
        let mut m = img2img();
        m.prior_size = Some([32, 32]);
        m.prior.as_mut().unwrap().vae_factor = Some(8);
        m
    };
    assert_eq!(at32().validate(), Ok(()));
    assert_eq!(at32().resolutions(), Resolutions { image_size: [28, 28], patch_size: [14, 14], prior_size: [32, 32] });
    check("prior size 0", at32(), &|m| m.prior_size = Some([0, 32]), &["`prior_size` [0, 32]", "1..=4096"]);
    check("prior size absurd", at32(), &|m| m.prior_size = Some([8192, 8192]), &["`prior_size` [8192, 8192]", "1..=4096"]);
    check(
        "prior size off the vae",
        at32(),
        &|m| m.prior_size = Some([36, 36]),
        &["`prior_size` [36, 36]", "multiple of `prior.vae_factor` 8"],
    );
    check("prior size below patch", at32(), &|m| m.prior_size = Some([8, 8]), &["`prior_size` [8, 8]", "smaller than `patch_size`"]);
    check("prior size without factor", at32(), &|m| m.prior.as_mut().unwrap().vae_factor = None, &["`prior.vae_factor` is missing"]);
    check("vae factor 0", at32(), &|m| m.prior.as_mut().unwrap().vae_factor = Some(0), &["`prior.vae_factor` is 0"]);
    check("upsample with prior size", good.clone(), &|m| m.prior_size = Some([32, 32]), &["`prior_size` is [32, 32]", "\"upsample\""]);
    // Stated at the student's size, it is the size a manifest without it has.
    let explicit = Manifest { prior_size: Some([28, 28]), ..good.clone() };
    assert_eq!((explicit.validate(), explicit.resolutions()), (Ok(()), good.resolutions()));
    assert_eq!(good.prior_size, None, "a prior at the student's size is not recorded");
    assert!(!dir.path().join("never").exists());
    // The informative `dataset` field may say anything.
    let mut m = good.clone();
    m.dataset = "x".into();
    assert_eq!(m.validate(), Ok(()));

    // Manifest::new refuses contradictory settings before any work is done.
    let cc = CoresetConfig { ipc: 1, factor: 2, crops: 2, mipc: 8, seed: 0 };
    let coreset = coreset::select(&ds, &teacher, &meta, &cc, &Default::default()).unwrap();
    let err = manifest_of(&coreset, &meta, &teacher_dir, None, Variant::Rded, vec![1, 2, 1], LabelEncoding::F16).unwrap_err().to_string();
    assert!(err.contains("`seeds[2]` (1) repeats"), "{err}");
    let err = manifest_of(&coreset, &meta, &teacher_dir, None, Variant::SrAug, vec![1], LabelEncoding::F16).unwrap_err().to_string();
    assert!(err.contains("needs a prior"), "{err}");
    let ok = manifest_of(&coreset, &meta, &teacher_dir, None, Variant::Rded, vec![1], LabelEncoding::F16).unwrap();
    assert_eq!(ok.expansion.mode, Mode::Upsample);
    let err = manifest_at(&coreset, &meta, &teacher_dir, None, Variant::Rded, vec![1], LabelEncoding::F16, Some([32, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`prior_size`") && err.contains("upsample"), "{err}");
}

/// The expansion as it was before the prior had a size of its own, written out (img2img without
/// mixup or guidance, in the manifest's batches): patches upsampled to the image size, encoded,
/// noised, denoised, decoded, quantised; no resize.
fn img2img_at_the_image_size(prior: &Prior<B>, m: &Manifest, patches: &[u8], seed: u64) -> Vec<u8> {
    let device = Default::default();
    let steps = m.expansion.plan().unwrap();
    let [h, w] = m.image_size;
    let upsampled = upsample_patches(patches, [m.channels, m.patch_size[0], m.patch_size[1]], [h, w]);
    let len = m.image_len();
    let items: Vec<usize> = (0..m.items.len()).collect();
    let mut out = Vec::new();
    for chunk in items.chunks(m.batch) {
        let x: Vec<f32> = chunk.iter().flat_map(|&i| upsampled[i * len..(i + 1) * len].iter().copied()).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [chunk.len(), m.channels, h, w]), &device);
        let ids: Vec<NoiseId> = chunk.iter().map(|&i| NoiseId { seed, item: i as u64 }).collect();
        let classes: Vec<usize> = chunk.iter().map(|&i| m.items[i] as usize).collect();
        let cond = prior.cond(&classes, &device);
        let y = pipeline::img2img(&prior.vae, &prior.unet, x, &cond, None, &steps, prior.vae_config.scaling_factor, &ids);
        out.extend(y.into_data().to_vec::<f32>().unwrap().iter().map(|&v| quantize(v)));
    }
    out
}

/// Issue 19, the three resolutions. A prior working at the student's 28x28 (the default) leaves
/// the manifest as it always was (no `prior_size`) and expands exactly as before, with no resize.
/// Working at 32x32, patches are upsampled to 32x32 and each decoded image is resized to 28x28 by
/// the host function every device uses; the package records both and regenerates bit-identically.
#[test]
fn a_prior_works_at_its_own_size_and_images_come_back_at_the_students() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let prior = tiny_prior(&ds, &dir.path().join("prior"), 2);
    assert_eq!((prior.image_size(), prior.vae_config.downscale()), ([28, 28], 2));
    let cc = CoresetConfig { ipc: 1, factor: 2, crops: 2, mipc: 8, seed: 0 };
    let coreset = coreset::select(&ds, &teacher, &meta, &cc, &device).unwrap();
    let make =
        |variant, size| manifest_at(&coreset, &meta, &teacher_dir, Some(&prior), variant, vec![5, 6], LabelEncoding::F16, size).unwrap();

    let same = make(Variant::SrAug, Some([28, 28]));
    assert_eq!(same, make(Variant::SrAug, None));
    let json = serde_json::to_value(&same).unwrap();
    assert!(json.get("prior_size").is_none() && json["prior"].get("vae_factor").is_none(), "{json}");
    assert_eq!(same.resolutions(), Resolutions { image_size: [28, 28], patch_size: [14, 14], prior_size: [28, 28] });
    let at28 = Expander::for_manifest(Some(&prior), &same, &coreset.patches, same.batch, &device).unwrap().expand_all(5).unwrap();
    assert_eq!(at28, img2img_at_the_image_size(&prior, &same, &coreset.patches, 5), "the default path changed");

    let at32 = make(Variant::SrAug, Some([32, 32]));
    let json = serde_json::to_value(&at32).unwrap();
    assert_eq!((&json["prior_size"], &json["prior"]["vae_factor"]), (&serde_json::json!([32, 32]), &serde_json::json!(2)));
    let out = dir.path().join("pkg32");
    let mut made = Vec::new();
    let mut keep = |_: usize, imgs: &[u8]| made.push(imgs.to_vec());
    let (pkg, report, _) = distill::distill(&coreset, Some(&prior), &teacher, at32, ds.train.len(), &out, &mut keep, &device).unwrap();
    assert_eq!(report.resolutions, Resolutions { image_size: [28, 28], patch_size: [14, 14], prior_size: [32, 32] });
    assert_eq!(made[0].len(), 40 * 28 * 28);
    assert_ne!(made[0], at28, "another working size makes other images");
    let loaded = Package::load(&out).unwrap();
    assert_eq!(loaded.manifest, pkg.manifest);
    let regen = regenerator(&loaded, Some(&prior), None, &device).unwrap();
    for (s, &seed) in loaded.manifest.seeds.iter().enumerate() {
        assert_eq!(regen.expander().expand_all(seed).unwrap(), made[s], "seed {seed}: regenerated != distilled");
    }
    // An image is the prior's 32x32 decode, read back, resized by `resize_antialiased`, quantised.
    let e = regen.expander();
    let decoded: Vec<f32> = e.expand_tensor(&[0, 1], 5).into_data().to_vec().unwrap();
    assert_eq!(decoded.len(), 2 * 32 * 32);
    let resized = e.to_image_size(decoded.clone());
    assert_eq!(resized[..28 * 28], resize_antialiased(&decoded[..32 * 32], 1, 32, 32, 28, 28)[..]);
    assert_eq!(e.expand(&[0, 1], 5).unwrap(), resized.iter().map(|&v| quantize(v)).collect::<Vec<u8>>());

    // Generation from noise starts from latents of the working size.
    let gen = make(Variant::CondOnly, Some([32, 32]));
    let gen = Expander::for_manifest(Some(&prior), &gen, &coreset.patches, 16, &device).unwrap();
    assert_eq!(gen.expand(&[0], 5).unwrap().len(), 28 * 28);
    // Sizes an expander cannot work at are refused: off the VAE's factor, or for plain upsampling.
    let expander_at = |config: ExpandConfig, prior_size| {
        let sizes = Resolutions { prior_size, ..pkg.manifest.resolutions() };
        Expander::new(Some(&prior), config, &pkg.patches, 1, sizes, pkg.manifest.items.clone(), 16, &device).err().unwrap().to_string()
    };
    let err = expander_at(pkg.manifest.expansion.clone(), [31, 31]);
    assert!(err.contains("31x31") && err.contains("downsampling factor 2"), "{err}");
    let err = expander_at(ExpandConfig::variant(Variant::Rded, 5, SchedulerKind::EulerA, [0.5, 1.0]), [32, 32]);
    assert!(err.contains("plain upsampling") && err.contains("[32, 32]"), "{err}");
}

/// `dace distill --prior-size` is refused with the flag named before any work: a side of 0, an
/// absurd side, a malformed size, a size off the prior's VAE factor, any size but the data's for
/// the prior-less `rded` variant.
#[test]
fn prior_size_flag_is_checked() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    teacher(&ds, &teacher_dir);
    let prior_dir = dir.path().join("prior");
    tiny_prior(&ds, &prior_dir, 1);
    let out = dir.path().join("pkg");
    let run = |extra: &[&str]| {
        let (t, p, o) = (teacher_dir.to_str().unwrap(), prior_dir.to_str().unwrap(), out.to_str().unwrap());
        let mut args = vec!["distill", "--data", "embedded", "--teacher", t, "--prior", p, "--out", o, "--seeds", "1", "--mipc", "4"];
        args.extend_from_slice(extra);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(&args).output().unwrap();
        assert!(!output.status.success(), "{extra:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--prior-size", "0"], &["'--prior-size", "side 0 is outside 1..=4096"]),
        (&["--prior-size", "5000"], &["'--prior-size", "side 5000 is outside"]),
        (&["--prior-size", "32x0"], &["'--prior-size", "side 0"]),
        (&["--prior-size", "big"], &["'--prior-size", "not a whole number"]),
        (&["--prior-size", "31"], &["--prior-size 31x31", "not a multiple of the prior's VAE downsampling factor 2"]),
        (&["--prior-size", "32", "--variant", "rded"], &["--prior-size 32x32", "`rded` variant uses no prior"]),
    ];
    for (args, expect) in cases {
        let stderr = run(args);
        assert!(expect.iter().all(|e| stderr.contains(e)) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!out.exists());
}

// --- shards (issue 20) ---------------------------------------------------------------------------

fn bytes_of(dir: &Path) -> Vec<Vec<u8>> {
    ["manifest.json", "patches.bin", "labels.bin"].iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

/// Issue 20: a distillation split by class into shards (uneven blocks, and classes by name),
/// each written, read back and merged, is byte for byte the package of a single process: with a
/// prior, latent mixup (partners inside a class) and CutMix labels (partners in any shard).
/// Merge refuses overlapping, missing, corrupted and foreign shards by name.
#[test]
fn shards_merge_into_the_single_process_package_byte_for_byte() {
    use dace::package::shard::{self, parse_part, Shard, ShardSelect};
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let prior = tiny_prior(&ds, &dir.path().join("prior"), 2);
    let cc = CoresetConfig { ipc: 1, factor: 2, crops: 2, mipc: 8, seed: 0 };
    let coreset = coreset::select(&ds, &teacher, &meta, &cc, &device).unwrap();
    let manifest =
        |seeds: Vec<u64>| manifest_of(&coreset, &meta, &teacher_dir, Some(&prior), Variant::SrAugMixup, seeds, LabelEncoding::F16).unwrap();
    let single = dir.path().join("single");
    distill::distill(&coreset, Some(&prior), &teacher, manifest(vec![7, 8]), ds.train.len(), &single, &mut |_, _| {}, &device).unwrap();

    let shard_of = |select: &ShardSelect, name: &str, seeds: Vec<u64>| {
        let classes = select.classes(&ds.classes).unwrap();
        let out = dir.path().join(name);
        let (_, report) = distill::distill_shard(&coreset, Some(&prior), &teacher, manifest(seeds), classes, &out, &device).unwrap();
        assert!(report.partner_expansions > 0, "CutMix partners outside the shard are expanded");
        (out.clone(), Shard::load(&out).unwrap())
    };
    let parts: Vec<(std::path::PathBuf, Shard)> =
        (0..3).map(|i| shard_of(&ShardSelect::Part { index: i, count: 3 }, &format!("part{i}"), vec![7, 8])).collect();
    assert_eq!(parts.iter().map(|(_, s)| s.classes.len()).collect::<Vec<_>>(), [3, 3, 4]);
    let merged = dir.path().join("merged");
    // Any order of the shards.
    let reversed: Vec<_> = parts.iter().rev().cloned().collect();
    shard::merge(&reversed).unwrap().save(&merged, 0).unwrap();
    assert!(bytes_of(&merged) == bytes_of(&single), "merged shards differ from the single-process package");

    // Shards chosen by class name: the first class alone, the others together.
    let names: Vec<String> = ds.classes.clone();
    let one = shard_of(&ShardSelect::Named(vec![names[0].clone()]), "named0", vec![7, 8]);
    let rest = shard_of(&ShardSelect::Named(names[1..].to_vec()), "named1", vec![7, 8]);
    let merged2 = dir.path().join("merged2");
    shard::merge(&[one.clone(), rest]).unwrap().save(&merged2, 0).unwrap();
    assert!(bytes_of(&merged2) == bytes_of(&single));

    // Refusals name the shard (or both).
    let err = |shards: &[(std::path::PathBuf, Shard)]| shard::merge(shards).expect_err("merge must refuse").to_string();
    let e = err(&[parts[0].clone(), one.clone(), parts[1].clone(), parts[2].clone()]);
    assert!(e.contains("part0") && e.contains("named0") && e.contains("both hold class"), "{e}");
    let e = err(&parts[..2]);
    assert!(e.contains("no shard holds 4 of the 10 classes"), "{e}");
    let other_seeds = shard_of(&ShardSelect::Part { index: 2, count: 3 }, "seeds", vec![7, 9]);
    let e = err(&[parts[0].clone(), parts[1].clone(), other_seeds]);
    assert!(e.contains("seeds") && e.contains("`seeds` differs") && e.contains("part0"), "{e}");
    let logits = parts[1].0.join("logits.bin");
    let mut bytes = std::fs::read(&logits).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&logits, bytes).unwrap();
    let e = Shard::load(&parts[1].0).unwrap_err().to_string();
    assert!(e.contains("part1/logits.bin") && e.contains("sha256"), "{e}");
    let e = Shard::load(&single).unwrap_err().to_string();
    assert!(e.contains("not a dace package shard") && e.contains("a merged package"), "{e}");

    // Selections that cannot be shards.
    for (text, want) in [("3/3", "0 to n - 1"), ("0/0", "0 to n - 1"), ("a/2", "not a whole number"), ("1", "not i/n")] {
        let e = parse_part(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
    let e = ShardSelect::Part { index: 0, count: 11 }.classes(&ds.classes).unwrap_err().to_string();
    assert!(e.contains("11 shards of 10 classes"), "{e}");
    let e = ShardSelect::Named(vec!["no such".into()]).classes(&ds.classes).unwrap_err().to_string();
    assert!(e.contains("`no such` is not one of the 10 classes"), "{e}");
    let e = ShardSelect::Named(vec!["1".into(), names[1].clone()]).classes(&ds.classes).unwrap_err().to_string();
    assert!(e.contains("listed twice"), "{e}");
}

/// `dace distill --shard i/n` and `dace package merge` on the command line: two shards merge into
/// the single run's package files; bad selections are refused naming the flag.
#[test]
fn cli_shards_and_merge() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    teacher(&ds, &teacher_dir);
    let run = |extra: &[&str]| {
        let t = teacher_dir.to_str().unwrap();
        let mut args = vec!["distill", "--data", "embedded", "--teacher", t, "--variant", "rded", "--seeds", "2", "--mipc", "4"];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(&args).output().unwrap()
    };
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    for (name, extra) in [
        ("single", vec![]),
        ("s0", vec!["--shard", "0/2"]),
        ("s1", vec!["--classes", "5,6,7,8,9"]),
        ("devices", vec!["--device", "cpu,cpu"]),
    ] {
        let mut args = vec!["--out".to_string(), path(name)];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let merge = std::process::Command::new(env!("CARGO_BIN_EXE_dace"))
        .args(["package", "merge", &path("s1"), &path("s0"), "--out", &path("merged")])
        .output()
        .unwrap();
    assert!(merge.status.success(), "{}", String::from_utf8_lossy(&merge.stderr));
    assert!(bytes_of(&dir.path().join("merged")) == bytes_of(&dir.path().join("single")));
    // Two devices in one process: a shard each, side by side, merged into the same bytes; the
    // shards were working state and are gone.
    let devices = dir.path().join("devices");
    assert!(bytes_of(&devices) == bytes_of(&dir.path().join("single")), "--device cpu,cpu differs from one device");
    assert!(!dir.path().join(".devices.devices").exists(), "the devices' shards are left behind");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(devices.join("distill_report.json")).unwrap()).unwrap();
    assert_eq!(report["devices"].as_array().map(Vec::len), Some(2), "{report}");
    // `dace expand` spreads each seed over the devices: the same images.
    for (name, device) in [("expand1", "cpu"), ("expand2", "cpu,cpu")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dace"))
            .args(["expand", "--package", &path("single"), "--device", device, "--out", &path(name)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let images = |name: &str| std::fs::read(dir.path().join(name).join("expansions.bin")).unwrap();
    assert!(images("expand1") == images("expand2"), "dace expand --device cpu,cpu differs from --device cpu");
    for (extra, want) in [
        (vec!["--device", "cpu,cpu", "--shard", "0/2"], "leave out --shard and --classes"),
        (vec!["--device", "cuda:x"], "`x` is not a device index"),
        (vec!["--device", "gpu"], "`gpu` is not a device"),
        (vec!["--device", "cpu:1"], "the CPU has no index"),
        (vec!["--device", "cpu,wgpu"], "share a backend"),
        (vec!["--device", "cuda,cuda:0"], "cuda:0 is named twice"),
        (vec!["--shard", "2/2"], "'--shard <i/n>'"),
        (vec!["--shard", "0/2", "--classes", "0"], "cannot be used with"),
        (vec!["--classes", "0,nosuch"], "`nosuch` is not one of the 10 classes"),
    ] {
        let mut args = vec!["--out", "/nonexistent/never"];
        args.extend(extra.iter());
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(want) && !stderr.contains("panicked"), "{extra:?}: {stderr}");
    }
    // The other commands run on one device and say so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dace"))
        .args([
            "coreset",
            "--data",
            "embedded",
            "--teacher",
            teacher_dir.to_str().unwrap(),
            "--ipc",
            "1",
            "--device",
            "cpu,cpu",
            "--out",
            "/nonexistent/never",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--device cpu,cpu: this command runs on one device"), "{stderr}");
}

/// Issue 20: `dace coreset --shard i/n` / `--classes` and `dace coreset merge`: the merged
/// coreset's patches and patch list are the single run's, byte for byte (its timing aside).
/// Merge refuses overlapping, missing and foreign shards by name; a shard is not a coreset.
#[test]
fn coreset_shards_merge_into_the_single_run() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    teacher(&ds, &teacher_dir);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let dace = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(args).output().unwrap();
    let t = teacher_dir.to_str().unwrap();
    for (name, extra) in [
        ("single", vec![]),
        ("s0", vec!["--shard", "0/3"]),
        ("s1", vec!["--classes", "3,4,5"]),
        ("s2", vec!["--shard", "2/3"]),
        ("other-seed", vec!["--shard", "2/3", "--seed", "9"]),
    ] {
        let out_dir = path(name);
        let mut args =
            vec!["coreset", "--data", "embedded", "--teacher", t, "--ipc", "1", "--factor", "2", "--mipc", "6", "--out", &out_dir];
        args.extend(extra.iter());
        let out = dace(&args);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = dace(&["coreset", "merge", &path("s2"), &path("s0"), &path("s1"), "--out", &path("merged")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (single, merged) = (Coreset::load(&dir.path().join("single")).unwrap(), Coreset::load(&dir.path().join("merged")).unwrap());
    assert!(merged.patches == single.patches, "merged patches differ from the single run");
    let json = |c: &Coreset| serde_json::to_string(&(&c.meta.patches, c.meta.mipc_used, c.meta.teacher_evals, &c.meta.teacher)).unwrap();
    assert_eq!(json(&merged), json(&single));
    assert!(merged.meta.shard.is_none() && !single.meta.teacher.is_empty());

    // A shard is not a coreset: distill and the student refuse it, naming it.
    let out =
        dace(&["distill", "--data", "embedded", "--teacher", t, "--coreset", &path("s0"), "--variant", "rded", "--out", &path("never")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("coreset shard") && stderr.contains("s0"), "{stderr}");
    for (shards, want) in [
        (vec!["s0", "s1"], "no shard holds class"),
        (vec!["s0", "s1", "s2", "s0"], "shares class"),
        (vec!["s0", "s1", "other-seed"], "differs from"),
        (vec!["s0", "s1", "s2", "single"], "is a whole coreset"),
        (vec!["s0", "nonexistent"], "nonexistent"),
    ] {
        let mut args = vec!["coreset".to_string(), "merge".to_string()];
        args.extend(shards.iter().map(|s| path(s)));
        args.extend(["--out".to_string(), path("bad")]);
        let out = dace(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(want) && !stderr.contains("panicked"), "{shards:?}: {stderr}");
    }
    // Bad selections are refused naming the flag; a bare `dace coreset` asks for its flags.
    for (extra, want) in [(vec!["--shard", "3/3"], "'--shard <i/n>'"), (vec!["--classes", "0,nosuch"], "`nosuch` is not one of")] {
        let mut args = vec!["coreset", "--data", "embedded", "--teacher", t, "--ipc", "1", "--out", "/nonexistent/never"];
        args.extend(extra.iter());
        let out = dace(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(want), "{extra:?}: {stderr}");
    }
    let out = dace(&["coreset"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--data"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 20: the regeneration cache keeps seeds while they fit its budget and never more; a seed
/// outside it is regenerated (bit-identical) each time it comes round.
#[test]
fn the_regeneration_cache_stays_within_its_budget() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let made = distill_into(&ds, &teacher, &meta, &teacher_dir, None, Variant::Rded, 3, LabelEncoding::F16, &dir.path().join("pkg"));
    let seed_bytes = made.images[0].len();
    let seeds = made.pkg.manifest.seeds.clone();
    let device = Default::default();
    let mut regen = regenerator::<B>(&made.pkg, None, None, &device).unwrap().with_cache_bytes(seed_bytes + seed_bytes / 2);
    for round in 0..2 {
        for (s, &seed) in seeds.iter().enumerate() {
            assert_eq!(*regen.epoch(s, seed).unwrap(), *made.images[s], "round {round}, seed {seed}");
            assert!(regen.cached_bytes() <= seed_bytes + seed_bytes / 2);
        }
    }
    // Seed 0 was kept (1 hit in round 2); seeds 1 and 2 did not fit and were made twice.
    assert_eq!((regen.hits, regen.images, regen.cached_bytes()), (1, 5 * 40, seed_bytes));
    let mut none = regenerator::<B>(&made.pkg, None, None, &device).unwrap().with_cache_bytes(0);
    none.epoch(0, seeds[0]).unwrap();
    none.epoch(0, seeds[0]).unwrap();
    assert_eq!((none.hits, none.cached_bytes()), (0, 0));
}

/// Issue 20: what a package student learns does not depend on how its images reached it: made
/// between epochs or one epoch ahead on another thread, cached or regenerated. The per-epoch
/// losses and the test accuracy agree bit for bit.
#[test]
fn prefetch_and_cache_do_not_change_what_a_student_learns() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let made = distill_into(&ds, &teacher, &meta, &teacher_dir, None, Variant::Rded, 3, LabelEncoding::F16, &dir.path().join("pkg"));
    let config = student_config(&made.pkg, Arch::Convnet3, NormKind::Instance, 6, Some(20), 20.0, 0);
    let device = Default::default();
    let train = |prefetch: bool, cache: usize| {
        let mut regen = regenerator::<B>(&made.pkg, None, None, &device).unwrap().with_cache_bytes(cache);
        let report = train_on_package_checkpointed::<Autodiff<B>>(&made.pkg, &mut regen, &config, &ds, None, prefetch, &device).unwrap();
        let losses: Vec<u64> = report.history.iter().map(|p| p.train_loss.to_bits()).collect();
        (losses, report.final_accuracy.to_bits(), report.per_class_accuracy.iter().map(|a| a.to_bits()).collect::<Vec<_>>(), regen.hits)
    };
    let inline = train(false, 0);
    let prefetched = train(true, 0);
    let cached = train(true, usize::MAX);
    assert_eq!((&inline.0, inline.1, &inline.2), (&prefetched.0, prefetched.1, &prefetched.2), "prefetching changed the training");
    assert_eq!((&inline.0, inline.1, &inline.2), (&cached.0, cached.1, &cached.2), "the cache changed the training");
    assert_eq!((inline.3, cached.3), (0, 3), "6 epochs over 3 seeds: the second round comes from the cache");
}

/// Issue 20: a package student killed mid-run (SIGKILL, as a preempted job) resumes from its
/// per-epoch checkpoint with `--resume` and ends where an uninterrupted run ends, epoch for epoch.
/// Without `--resume` an existing checkpoint is refused, and so is a damaged or foreign one.
#[test]
fn a_killed_student_resumes_to_the_uninterrupted_result() {
    let ds = small();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    let (teacher, meta) = teacher(&ds, &teacher_dir);
    let pkg = dir.path().join("pkg");
    distill_into(&ds, &teacher, &meta, &teacher_dir, None, Variant::Rded, 3, LabelEncoding::F16, &pkg);
    let epochs = 40;
    let student_for = |epochs: usize, out: &Path, extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dace"));
        c.args(["student", "--package"])
            .arg(&pkg)
            .args(["--data", "embedded", "--epochs", &epochs.to_string(), "--batch", "20", "--out"])
            .arg(out)
            .args(extra);
        c
    };
    let student = |out: &Path, extra: &[&str]| student_for(epochs, out, extra);
    let report = |out: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap() };
    let whole = dir.path().join("whole");
    let out = student(&whole, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let killed = dir.path().join("killed");
    let mut child = student(&killed, &[]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let state = killed.join("checkpoint/state.json");
    let done = || -> u64 {
        let v: serde_json::Value = std::fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        v["progress"]["epochs_done"].as_u64().unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while done() < 3 {
        assert!(start.elapsed().as_secs() < 300 && child.try_wait().unwrap().is_none(), "the student ended before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = done();
    assert!((3..epochs as u64).contains(&at_kill) && !killed.join("report.json").exists(), "killed after {at_kill} epochs");

    let out = student(&killed, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--resume") && stderr.contains("checkpoint"), "{stderr}");
    let out = student(&killed, &["--resume"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("after epoch {at_kill}")));
    let (a, b) = (report(&whole), report(&killed));
    assert_eq!(a["report"]["history"], b["report"]["history"], "the resumed run's epochs differ from the uninterrupted run's");
    assert_eq!(a["report"]["final_accuracy"], b["report"]["final_accuracy"]);
    assert_eq!(a["report"]["per_class_accuracy"], b["report"]["per_class_accuracy"]);

    // Another epoch count is another run: its checkpoint is refused, naming the file.
    let other = student_for(epochs + 1, &killed, &["--resume"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && stderr.contains("state.json") && stderr.contains("other student settings"), "{stderr}");
    // A damaged state file is an error naming it, not a panic.
    std::fs::write(&state, b"{ not json").unwrap();
    let out = student(&killed, &["--resume"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("state.json") && !stderr.contains("panicked"), "{stderr}");
}

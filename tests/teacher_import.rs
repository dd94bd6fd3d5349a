//! `dace teacher import` (fixtures: tests/fixtures/make_teacher_import_fixture.py): full-size
//! torchvision ResNet-18 and ResNet-50 (torchvision's own tensor names and shapes, weights from a
//! hash both sides compute) and narrow torchvision/timm nets saved as safetensors and .pth give
//! the logits torchvision computes within 1e-4; the CLI writes a teacher that loads like a
//! trained one; bad files are refused naming the file and the tensor, never with a panic.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::{nan_max, B};
use dace::models::{Arch, Classifier, ClassifierConfig, ResNetShape};
use dace::train::import::{load_resnet, ImportArch, StateDict};
use dace::train::{self, SourceLibrary};
use safetensors::{Dtype, SafeTensors};

const IMAGE: usize = 64;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/teacher_import")
}

/// A tensor of expected.safetensors as f64 values.
fn expected(name: &str) -> Vec<f64> {
    let bytes = std::fs::read(fixtures().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    match t.dtype() {
        Dtype::F64 => t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("{name} is {other:?}"),
    }
}

/// torchvision's input: 2 images of 3x64x64 (already normalised).
fn input() -> Tensor<B, 4> {
    let values: Vec<f32> = expected("input").into_iter().map(|v| v as f32).collect();
    Tensor::from_data(TensorData::new(values, [2, 3, IMAGE, IMAGE]), &Default::default())
}

fn assert_logits(model: &Classifier<B>, logits: &str) {
    let got: Vec<f32> = model.forward(input()).into_data().to_vec().unwrap();
    let want = expected(logits);
    assert_eq!(got.len(), want.len(), "{logits}");
    // NaN-safe: a NaN logit makes `worst` NaN, which fails the comparison.
    let worst = nan_max(got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs() as f32));
    assert!(worst <= 1e-4, "{logits}: max |dace - torchvision| = {worst}\n dace {got:?}\n torchvision {want:?}");
}

fn load(path: &Path, arch: ImportArch) -> dace::Result<(Classifier<B>, ClassifierConfig)> {
    load_resnet::<B>(&StateDict::read(path)?, arch, IMAGE, &Default::default())
}

fn import_error(path: &Path, arch: ImportArch) -> String {
    match load(path, arch) {
        Ok(_) => panic!("{} imported", path.display()),
        Err(e) => e.to_string(),
    }
}

// --- full size -----------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct FullSize {
    nets: BTreeMap<String, Net>,
}

#[derive(serde::Deserialize)]
struct Net {
    /// (torchvision key, shape, offset, scale), in state-dict order.
    tensors: Vec<(String, Vec<usize>, f64, f64)>,
}

fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Tensor `k`'s weights by the fixture script's rule: exact f32 arithmetic, no fused multiply-add.
fn hashed(k: usize, n: usize, offset: f32, scale: f32) -> Vec<f32> {
    let seed = (k as u32 + 1).wrapping_mul(0x9e37_79b9);
    let unit = 1.0 / 16_777_216.0; // 2^-24
    (0..n as u32).map(|i| offset + ((lowbias32(i.wrapping_add(seed)) >> 8) as f32 * unit - 0.5) * scale).collect()
}

/// The full-size net `name` of full_size.json written as a safetensors file under torchvision's names.
fn write_full_size(name: &str, path: &Path) {
    let spec: FullSize = serde_json::from_slice(&std::fs::read(fixtures().join("full_size.json")).unwrap()).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = spec.nets[name]
        .tensors
        .iter()
        .enumerate()
        .map(|(k, (key, shape, offset, scale))| {
            let values = hashed(k, shape.iter().product(), *offset as f32, *scale as f32);
            (key.clone(), shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(k, shape, bytes)| (k.as_str(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap()));
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn full_size_resnet18_and_resnet50_match_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    for (name, arch, dace_arch) in
        [("resnet18", ImportArch::Resnet18, Arch::Resnet18Imagenet), ("resnet50", ImportArch::Resnet50, Arch::Resnet50Imagenet)]
    {
        let path = dir.path().join(format!("{name}.safetensors"));
        write_full_size(name, &path);
        for arch in [ImportArch::Auto, arch] {
            let (model, config) = load(&path, arch).unwrap();
            assert_eq!((config.arch, config.resnet, config.num_classes), (dace_arch, None, 10), "{name}: a standard net");
            assert_logits(&model, &format!("logits.full_{name}"));
        }
    }
}

// --- narrow nets saved by torchvision and timm ----------------------------------------------------

#[derive(serde::Deserialize)]
struct Cases {
    files: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    file: String,
    source: String,
    arch: String,
    dtype: String,
    wrapped: bool,
    logits: String,
    classes: usize,
    stem_width: usize,
    width: usize,
}

fn cases() -> Vec<Case> {
    serde_json::from_slice::<Cases>(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap().files
}

#[test]
fn torchvision_and_timm_files_match_torchvision_from_safetensors_and_pth() {
    let cases = cases();
    // Every reader path stays covered if the fixtures are regenerated.
    let has = |f: &dyn Fn(&Case) -> bool| cases.iter().any(f);
    assert!(has(&|c| c.file.ends_with(".pth")) && has(&|c| c.file.ends_with(".safetensors")));
    assert!(has(&|c| c.source == "timm") && has(&|c| c.source == "torchvision") && has(&|c| c.wrapped));
    assert!(
        has(&|c| c.dtype == "float16" && c.file.ends_with(".pth")) && has(&|c| c.dtype == "float16" && c.file.ends_with(".safetensors"))
    );
    for case in &cases {
        let (model, config) = load(&fixtures().join(&case.file), ImportArch::Auto).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let (arch, blocks) = match case.arch.as_str() {
            "resnet18" => (Arch::Resnet18Imagenet, [2, 2, 2, 2]),
            _ => (Arch::Resnet50Imagenet, [3, 4, 6, 3]),
        };
        let shape = ResNetShape { blocks, stem_width: case.stem_width, width: case.width };
        assert_eq!((config.arch, config.resnet, config.num_classes), (arch, Some(shape), case.classes), "{}", case.file);
        assert_logits(&model, &case.logits);
    }
}

// --- the command line ----------------------------------------------------------------------------

fn dace(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dace {args:?}: {stderr}");
    stderr
}

#[test]
fn the_cli_writes_a_teacher_that_loads_like_a_trained_one() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("kind {i}, a name with a comma")).collect();
    let names_file = dir.path().join("names.txt");
    std::fs::write(&names_file, names.join("\n")).unwrap();
    let weights = fixtures().join("torchvision_resnet50_wrapped.pth");
    let out = dir.path().join("teacher");
    let (w, o, n) = (weights.to_str().unwrap(), out.to_str().unwrap(), names_file.to_str().unwrap());
    dace(&["teacher", "import", "--weights", w, "--out", o, "--classes", n, "--dataset", "toy", "--size", "64"]);

    let (model, meta) = train::load_model::<B>(&out, &Default::default()).unwrap();
    assert_eq!(meta.classes, names);
    assert_eq!((meta.dataset.as_str(), meta.config.image_size), ("toy", [64, 64]));
    assert_eq!(meta.normalization.mean, vec![0.485, 0.456, 0.406]);
    assert_eq!(meta.normalization.std, vec![0.229, 0.224, 0.225]);
    let source = meta.source.expect("an imported model records its source");
    let sha = format!("{:x}", sha2::Sha256::digest(std::fs::read(&weights).unwrap()));
    assert_eq!((source.format, source.file.as_str(), source.sha256), (SourceLibrary::Torchvision, "torchvision_resnet50_wrapped.pth", sha));
    assert_logits(&model, "logits.torchvision_resnet50_wrapped");

    // timm's names, default class names and normalisation given on the command line.
    let weights = fixtures().join("timm_resnet18.safetensors");
    let out = dir.path().join("timm");
    let (w, o) = (weights.to_str().unwrap(), out.to_str().unwrap());
    dace(&["teacher", "import", "--weights", w, "--out", o, "--from", "timm", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]);
    let (model, meta) = train::load_model::<B>(&out, &Default::default()).unwrap();
    assert_eq!(meta.classes, (0..10).map(|i| format!("class{i}")).collect::<Vec<_>>());
    assert_eq!((meta.normalization.mean, meta.normalization.std), (vec![0.5; 3], vec![0.25; 3]));
    assert_eq!((meta.source.unwrap().format, meta.config.image_size), (SourceLibrary::Timm, [224, 224]));
    assert_logits(&model, "logits.timm_resnet18");
}

/// A parity reference (`input`, `logits`) written from torchvision's tensors in expected.safetensors,
/// with `edit` applied to the logits (as f64 values) and the shape given.
fn parity_reference(path: &Path, logits: &str, shape: &[usize], edit: impl FnOnce(&mut Vec<f64>)) {
    let mut values = expected(logits);
    edit(&mut values);
    let input: Vec<u8> = expected("input").iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
    let logits: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = [
        ("input", safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 3, IMAGE, IMAGE], &input).unwrap()),
        ("logits", safetensors::tensor::TensorView::new(Dtype::F64, shape.to_vec(), &logits).unwrap()),
    ];
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// `dace teacher import --parity`: the import is run on torchvision's input and its logits are
/// compared with torchvision's; parity.json records the error; an error above the tolerance, a
/// NaN, or a reference of the wrong shape fails the import naming the reference file.
#[test]
fn the_cli_checks_parity_against_a_reference_and_fails_above_the_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixtures().join("torchvision_resnet18.safetensors");
    let import = |name: &str, reference: &Path| {
        let out = dir.path().join(name);
        let args = ["teacher", "import", "--weights", weights.to_str().unwrap(), "--out", out.to_str().unwrap(), "--size", "64"];
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(args).arg("--parity").arg(reference).output().unwrap();
        (run.status.success(), String::from_utf8_lossy(&run.stderr).into_owned(), out.join("parity.json"))
    };
    let logits = "logits.torchvision_resnet18";
    let good = dir.path().join("good.safetensors");
    parity_reference(&good, logits, &[2, 10], |_| {});
    let (ok, stderr, report) = import("good", &good);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let err = report["max_abs_err"].as_f64().unwrap();
    assert!(err <= 1e-4 && (report["images"].as_u64(), report["classes"].as_u64()) == (Some(2), Some(10)), "{report}");

    let off = dir.path().join("off.safetensors");
    parity_reference(&off, logits, &[2, 10], |v| v[7] += 0.01);
    let (ok, stderr, report) = import("off", &off);
    assert!(!ok && stderr.contains("off.safetensors") && stderr.contains("above --parity-tolerance"), "{stderr}");
    assert!(report.exists(), "the measured error is kept for the user to read");

    let nan = dir.path().join("nan.safetensors");
    parity_reference(&nan, logits, &[2, 10], |v| v[0] = f64::NAN);
    let (ok, stderr, _) = import("nan", &nan);
    assert!(!ok && stderr.contains("nan.safetensors"), "a NaN must not pass: {stderr}");

    let shape = dir.path().join("shape.safetensors");
    parity_reference(&shape, logits, &[4, 5], |_| {});
    let (ok, stderr, _) = import("shape", &shape);
    assert!(!ok && stderr.contains("shape.safetensors") && stderr.contains("`logits` has shape [4, 5]"), "{stderr}");

    let (ok, stderr, _) = import("weights", &weights);
    assert!(!ok && stderr.contains("no tensor `input`") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_cli_refuses_a_class_list_of_another_length() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixtures().join("torchvision_resnet18.safetensors");
    let out = dir.path().join("teacher");
    let args = ["teacher", "import", "--weights", weights.to_str().unwrap(), "--out", out.to_str().unwrap(), "--classes", "a,b,c"];
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_dace")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("3 class names") && stderr.contains("10 classes"), "{stderr}");
    assert!(!stderr.contains("panicked") && !out.exists(), "{stderr}");
}

/// model.json files written before imports existed (no `resnet` in the config, no `source`) load.
#[test]
fn model_json_without_the_new_fields_still_loads() {
    let ds = dace::data::load_embedded().per_class_subset(2, 2);
    let dir = tempfile::tempdir().unwrap();
    common::random_teacher(&ds, dir.path());
    let path = dir.path().join("model.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(json.get("source").is_none(), "a trained teacher has no source");
    json["config"].as_object_mut().unwrap().remove("resnet").expect("the config names its ResNet shape");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let (_, meta) = train::load_model::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!((meta.config.resnet, meta.source), (None, None));
}

// --- bad files -----------------------------------------------------------------------------------

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// The narrow torchvision ResNet-18's tensors, edited, written as a safetensors file `name`.
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut Tensors)) -> PathBuf {
    let bytes = std::fs::read(fixtures().join("torchvision_resnet18.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st.tensors().into_iter().map(|(k, t)| (k, (t.dtype(), t.shape().to_vec(), t.data().to_vec()))).collect();
    edit(&mut tensors);
    let path = dir.join(name);
    let views = tensors
        .iter()
        .map(|(k, (dtype, shape, data))| (k.as_str(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap()));
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn f32_tensor(shape: &[usize]) -> (Dtype, Vec<usize>, Vec<u8>) {
    (Dtype::F32, shape.to_vec(), vec![0; 4 * shape.iter().product::<usize>()])
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(PathBuf, &[&str]); 5] = [
        (
            edited(d, "missing.safetensors", |t| {
                t.remove("layer2.1.bn2.running_var");
            }),
            &["missing tensors", "layer2.1.bn2.running_var"],
        ),
        (
            edited(d, "unexpected.safetensors", |t| {
                t.insert("head.extra.weight".into(), f32_tensor(&[2]));
            }),
            &["no place for", "head.extra.weight"],
        ),
        (
            edited(d, "shape.safetensors", |t| {
                t.insert("layer1.0.conv2.weight".into(), f32_tensor(&[8, 8, 1, 1]));
            }),
            &["`layer1.0.conv2.weight` has shape [8, 8, 1, 1]", "needs [8, 8, 3, 3]"],
        ),
        (
            edited(d, "ints.safetensors", |t| {
                t.insert("layer1.0.bn1.running_mean".into(), (Dtype::I64, vec![8], vec![0; 64]));
            }),
            &["`layer1.0.bn1.running_mean` is I64, not floating point"],
        ),
        (
            edited(d, "vgg.safetensors", |t| *t = [("features.0.weight".to_string(), f32_tensor(&[4, 3, 3, 3]))].into()),
            &["no tensor `conv1.weight`", "not a torchvision or timm ResNet"],
        ),
    ];
    for (path, needles) in cases {
        let err = import_error(&path, ImportArch::Auto);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && needles.iter().all(|n| err.contains(n)), "{name}: {err}");
    }
}

#[test]
fn a_net_other_than_the_one_asked_for_is_refused() {
    let narrow18 = fixtures().join("torchvision_resnet18.safetensors");
    let err = import_error(&narrow18, ImportArch::Resnet50);
    assert!(err.contains("torchvision_resnet18.safetensors") && err.contains("not a ResNet-50") && err.contains("Basic blocks"), "{err}");
    // Same blocks as a ResNet-18, 8 times narrower: the shapes say so.
    let err = import_error(&narrow18, ImportArch::Resnet18);
    assert!(err.contains("`conv1.weight` has shape [8, 3, 7, 7], ResNet-18 needs [64, 3, 7, 7]"), "{err}");
}

#[test]
fn garbage_truncated_and_absent_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let pth = std::fs::read(fixtures().join("torchvision_resnet18.pth")).unwrap();
    let st = std::fs::read(fixtures().join("torchvision_resnet18.safetensors")).unwrap();
    let files: [(&str, &[u8]); 7] = [
        ("garbage.pth", b"not a model"),
        ("garbage.safetensors", b"not a model"),
        ("garbage.bin", b"not a model"),
        ("empty.pth", b""),
        ("half.pth", &pth[..pth.len() / 2]),
        ("tail.pth", &pth[pth.len() / 2..]),
        ("half.safetensors", &st[..st.len() / 2]),
    ];
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = import_error(&path, ImportArch::Auto);
        assert!(err.contains(name), "{name}: {err}");
    }
    let absent = dir.path().join("absent.pth");
    assert!(import_error(&absent, ImportArch::Auto).contains("absent.pth"));
}

//! The readers of untrusted files, fuzzed: the package (`Package::load`), the prior directory
//! (`Prior::load`) and the classifier checkpoint (`train::load_model`). Real files are made
//! once, then each case mutates one of them (bit flips, overwritten, inserted or deleted bytes,
//! truncation, an emptied file, a digit changed in a JSON number) and loads the whole thing.
//! Every case must end in `Ok` or in a `DaceError` that names a file of the reader, never in a
//! panic. Cases are a pure function of their number, so a failure reruns alone.
//!
//!     cargo test --release --test fuzz_readers                       # 3 x 1,000 cases
//!     DACE_FUZZ_CASES_PACKAGE=1000000 DACE_FUZZ_CASES_CHECKPOINT=100000 DACE_FUZZ_CASES_PRIOR=20000 \
//!     DACE_FUZZ_REPORT=docs/results/fuzz/run.json cargo test --release --test fuzz_readers -- --nocapture

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dace::coreset::{self, CoresetConfig};
use dace::data::{self, Dataset};
use dace::distill;
use dace::package::{AugmentConfig, ExpandConfig, LabelEncoding, Manifest, Package, PackageSettings, PriorRef, SchedulerKind, Variant};
use dace::prior::bundle::Prior;
use dace::train::{self};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::{random_teacher as teacher, tiny_prior, B};

/// Cases for `reader`: 1,000 in the suite; `DACE_FUZZ_CASES_<READER>` (e.g. `_PACKAGE`) or
/// `DACE_FUZZ_CASES` for a recorded run (a prior directory takes ~25 ms to load, a package 0.1 ms).
fn cases(reader: &str) -> u64 {
    let var = |name: String| std::env::var(name).ok().and_then(|v| v.parse().ok());
    var(format!("DACE_FUZZ_CASES_{}", reader.to_uppercase())).or_else(|| var("DACE_FUZZ_CASES".into())).unwrap_or(1000)
}

/// One mutation of `bytes`, chosen and placed by `rng`; the name says what was done.
fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, &'static str) {
    let mut b = bytes.to_vec();
    let at = |rng: &mut ChaCha8Rng, len: usize| if len == 0 { 0 } else { rng.random_range(0..len) };
    let kind = match rng.random_range(0..8) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = at(rng, b.len());
                if let Some(v) = b.get_mut(i) {
                    *v ^= 1 << rng.random_range(0..8);
                }
            }
            "bit flips"
        }
        1 => {
            for _ in 0..rng.random_range(1..=4) {
                let i = at(rng, b.len());
                if let Some(v) = b.get_mut(i) {
                    *v = rng.random();
                }
            }
            "bytes overwritten"
        }
        2 => {
            let i = at(rng, b.len() + 1);
            let extra: Vec<u8> = (0..rng.random_range(1..=16)).map(|_| rng.random()).collect();
            b.splice(i..i, extra);
            "bytes inserted"
        }
        3 => {
            let i = at(rng, b.len());
            let n = rng.random_range(1..=64).min(b.len() - i.min(b.len()));
            b.drain(i..i + n);
            "bytes deleted"
        }
        4 => {
            b.truncate(at(rng, b.len()));
            "truncated"
        }
        5 => {
            b.clear();
            "emptied"
        }
        6 => {
            // A digit of a JSON number changed or lengthened: configs with other sizes.
            let digits: Vec<usize> = b.iter().enumerate().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
            if let Some(&i) = digits.get(at(rng, digits.len())) {
                if rng.random_bool(0.5) {
                    b[i] = b'0' + rng.random_range(0..10);
                } else {
                    b.insert(i, b'0' + rng.random_range(1..10));
                }
            }
            "digit changed"
        }
        _ => {
            let i = at(rng, b.len());
            let j = (i + rng.random_range(1..=32)).min(b.len());
            let copy = b[i..j].to_vec();
            b.splice(j..j, copy);
            "range duplicated"
        }
    };
    (b, kind)
}

#[derive(serde::Serialize)]
struct ReaderStats {
    reader: String,
    cases: u64,
    accepted: u64,
    rejected: u64,
    seconds: f64,
}

/// Fuzzes `load(dir)` over the files `names` (relative to `dir`): every case mutates one file,
/// loads, and restores it. Returns how many cases loaded and how many were refused.
fn fuzz(reader: &str, dir: &Path, names: &[&str], seed: u64, load: &dyn Fn(&Path) -> dace::Result<()>) -> ReaderStats {
    let originals: Vec<(PathBuf, Vec<u8>)> = names.iter().map(|n| (dir.join(n), std::fs::read(dir.join(n)).unwrap())).collect();
    assert!(load(dir).is_ok(), "{reader}: the unmutated files do not load");
    let start = Instant::now();
    let (mut accepted, mut rejected) = (0, 0);
    let n = cases(reader);
    for case in 0..n {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (path, original) = &originals[rng.random_range(0..originals.len())];
        let (bytes, kind) = mutate(original, &mut rng);
        std::fs::write(path, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| load(dir)));
        std::fs::write(path, original).unwrap();
        let what = format!("{reader} case {case}: {kind} in {}", path.display());
        match outcome {
            Err(_) => panic!("{what}: the reader panicked"),
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(
                    names.iter().any(|n| msg.contains(Path::new(n).file_name().unwrap().to_str().unwrap())),
                    "{what}: `{msg}` names no file"
                );
                rejected += 1;
            }
        }
    }
    let stats = ReaderStats { reader: reader.into(), cases: n, accepted, rejected, seconds: start.elapsed().as_secs_f64() };
    println!("{reader}: {n} cases, {accepted} loaded, {rejected} refused with the file named, no panic ({:.1} s)", stats.seconds);
    stats
}

fn small() -> Dataset {
    data::load_embedded().per_class_subset(8, 2)
}

#[test]
fn readers_survive_mutated_files() {
    let ds = small();
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let teacher_dir = tmp.path().join("teacher");
    let (model, meta) = teacher(&ds, &teacher_dir);
    let prior_dir = tmp.path().join("prior");
    let prior = tiny_prior(&ds, &prior_dir, 1);
    let cc = CoresetConfig { ipc: 1, factor: 2, crops: 1, mipc: 4, seed: 0 };
    let coreset = coreset::select(&ds, &model, &meta, &cc, &device).unwrap();
    let settings = PackageSettings {
        expansion: ExpandConfig::variant(Variant::SrAugMixup, 2, SchedulerKind::EulerA, [0.5, 1.0]),
        augment: AugmentConfig { crop_scale_min: 0.5, flip: true, cutmix: true, shuffle_factor: 1 },
        seeds: vec![0, 1],
        labels: LabelEncoding::Int8,
        batch: 8,
        prior_size: None,
    };
    let manifest = Manifest::new(
        &coreset.meta,
        settings,
        distill::teacher_ref(&teacher_dir, &meta).unwrap(),
        meta.normalization.clone(),
        Some(PriorRef::of(&prior)),
    )
    .unwrap();
    let pkg_dir = tmp.path().join("pkg");
    distill::distill(&coreset, Some(&prior), &model, manifest, ds.train.len(), &pkg_dir, &mut |_, _| {}, &device).unwrap();

    let stats = [
        fuzz("package", &pkg_dir, &["manifest.json", "patches.bin", "labels.bin"], 1, &|d| Package::load(d).map(|_| ())),
        fuzz("checkpoint", &teacher_dir, &["model.json", "model.bin"], 2, &|d| train::load_model::<B>(d, &Default::default()).map(|_| ())),
        fuzz(
            "prior",
            &prior_dir,
            &[
                "model_index.json",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "class_embedder/config.json",
                "class_embedder/diffusion_pytorch_model.safetensors",
            ],
            3,
            &|d| Prior::<B>::load(d, &Default::default()).map(|_| ()),
        ),
    ];
    for s in &stats {
        assert!(s.rejected > 0, "{}: no mutation was refused", s.reader);
    }
    if let Ok(path) = std::env::var("DACE_FUZZ_REPORT") {
        let report = serde_json::json!({
            "command": format!(
                "DACE_FUZZ_CASES_PACKAGE={} DACE_FUZZ_CASES_CHECKPOINT={} DACE_FUZZ_CASES_PRIOR={} DACE_FUZZ_REPORT={path} cargo test --release --test fuzz_readers -- --nocapture",
                cases("package"), cases("checkpoint"), cases("prior")
            ),
            "readers": stats,
            "total_cases": stats.iter().map(|s| s.cases).sum::<u64>(),
            "panics": 0,
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    }
}

//! Issue 9, SD-Turbo / SDXL-Turbo import, against the reference implementations (transformers,
//! diffusers) on tiny random-weight models: CLIP text encoders (`CLIPTextModel` with GELU and
//! legacy pooling, `CLIPTextModelWithProjection` with quick GELU and EOS pooling; fixtures from
//! tests/fixtures/make_clip_parity.py), the CLIP BPE tokenizer (make_clip_tokenizer.py), and
//! `dace prior import` of whole SD-Turbo- and SDXL-Turbo-layout pipelines
//! (make_import_fixture.py), including the colour ImageFolder path through an imported prior.
//! Issue 25: checkpoints as current diffusers / transformers save them, with `tokenizer.json`
//! tokenizers and sharded weights (make_clip_tokenizer.py, make_sharded_import_fixture.py).

mod common;

use common::nan_max;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use dace::device::CpuBackend;
use dace::prior::clip::{self, ClipActivation, ClipTextConfig};

type B = CpuBackend;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip").join(name)
}

fn read(dir: &Path, key: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(dir.join("outputs.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (v, t.shape().to_vec())
}

fn ids(dir: &Path) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(dir.join("outputs.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("input_ids").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I32);
    let ints: Vec<u32> = t.data().chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32).collect();
    ints.chunks(t.shape()[1]).map(|c| c.to_vec()).collect()
}

fn max_err<const D: usize>(ours: Tensor<B, D>, dir: &Path, key: &str) -> f32 {
    let (theirs, shape) = read(dir, key);
    assert_eq!(ours.dims().to_vec(), shape, "{key}: shape");
    let ours: Vec<f32> = ours.into_data().to_vec().unwrap();
    assert_eq!(ours.len(), theirs.len());
    nan_max(ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()))
}

#[test]
fn clip_text_encoders_match_transformers() {
    let device = Default::default();
    for (name, act, projection) in [("plain", ClipActivation::Gelu, None), ("proj", ClipActivation::QuickGelu, Some(24))] {
        let dir = fixture(name);
        let config = ClipTextConfig::load(&dir.join("config.json")).unwrap();
        assert_eq!((config.hidden_act, config.projection_dim, config.num_hidden_layers), (act, projection, 3));
        let mut model = config.init::<B>(&device);
        clip::load_weights(&mut model, &dir.join("model.safetensors")).unwrap();
        let out = model.forward(&ids(&dir), &device).unwrap();
        let mut errs = vec![
            ("embeddings", max_err(out.hidden_states[0].clone(), &dir, "embeddings")),
            ("penultimate", max_err(out.hidden_states[out.hidden_states.len() - 2].clone(), &dir, "penultimate")),
            ("last_hidden_state", max_err(out.last_hidden_state.clone(), &dir, "last_hidden_state")),
        ];
        match out.text_embeds {
            Some(e) => errs.push(("text_embeds", max_err(e, &dir, "text_embeds"))),
            None => errs.push(("pooler_output", max_err(out.pooler_output, &dir, "pooler_output"))),
        }
        println!("{name}: {errs:?}");
        for (what, e) in errs {
            assert!(e <= 1e-4, "{name} {what}: max abs error {e}");
        }
    }
}

#[test]
fn clip_configs_and_inputs_are_checked() {
    let device = Default::default();
    let dir = fixture("proj");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["hidden_act"] = "relu".into();
    let err = ClipTextConfig::from_json(v.clone(), Path::new("cfg.json")).unwrap_err().to_string();
    assert!(err.contains("hidden_act") && err.contains("cfg.json"), "{err}");
    v["hidden_act"] = "gelu".into();
    v["rope_theta"] = 10000.0.into();
    let err = ClipTextConfig::from_json(v, Path::new("cfg.json")).unwrap_err().to_string();
    assert!(err.contains("rope_theta"), "{err}");
    // Weights of a model with a projection do not load into one without.
    let mut plain = ClipTextConfig { projection_dim: None, ..ClipTextConfig::load(&dir.join("config.json")).unwrap() }.init::<B>(&device);
    let err = clip::load_weights(&mut plain, &dir.join("model.safetensors")).unwrap_err().to_string();
    assert!(err.contains("text_projection"), "{err}");
    let model = ClipTextConfig::load(&dir.join("config.json")).unwrap().init::<B>(&device);
    assert!(model.forward(&[vec![1; 17]], &device).unwrap_err().to_string().contains("at most 16"));
    assert!(model.forward(&[vec![120; 4]], &device).unwrap_err().to_string().contains("token id 120"));
}

/// dace's CLIP BPE against transformers' CLIPTokenizer on the same vocab.json + merges.txt
/// (tests/fixtures/make_clip_tokenizer.py): whitespace runs, case, accents, emoji, apostrophes,
/// digits, literal special tokens, the empty prompt and truncation to 77; two pad tokens. Each
/// tokenizer is read in both forms: vocab.json + merges.txt, and the tokenizer.json +
/// tokenizer_config.json that transformers 5 saves instead (`clip/json/`); the ids are the same.
#[test]
fn clip_tokenizer_matches_transformers() {
    use dace::prior::tokenizer::ClipTokenizer;
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("tokenizer_expected.json")).unwrap()).unwrap();
    let mut fingerprints = Vec::new();
    for name in ["tokenizer", "tokenizer_2"] {
        let json_dir = fixture("json").join(name);
        assert!(json_dir.join("tokenizer.json").exists() && !json_dir.join("vocab.json").exists());
        let forms = [ClipTokenizer::from_dir(&fixture(name)).unwrap(), ClipTokenizer::from_dir(&json_dir).unwrap()];
        let cases = expected["cases"][name].as_array().unwrap();
        assert!(cases.len() >= 10);
        for (form, tok) in ["vocab.json + merges.txt", "tokenizer.json"].iter().zip(&forms) {
            for case in cases {
                let prompt = case["prompt"].as_str().unwrap();
                let want: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
                assert_eq!(tok.encode(prompt).unwrap(), want, "{name} from {form}: {prompt:?}");
            }
            // A literal pad token: "!" is a special token where it pads (SDXL's tokenizer_2), as in transformers.
            let bang = tok.encode("wow! them!!").unwrap();
            let want = if name == "tokenizer_2" { [0, 0, 0] } else { [256, 0, 256] };
            assert_eq!([bang[4], bang[7], bang[8]], want, "{name} from {form}: {bang:?}");
        }
        assert_eq!((forms[0].pad_id, forms[0].eos_id, &forms[0].special), (forms[1].pad_id, forms[1].eos_id, &forms[1].special));
        fingerprints.extend(forms.iter().map(|t| t.fingerprint.clone()));
    }
    // Same vocabulary, different pad token: different tokenizers (and each form hashes its own files).
    let distinct: std::collections::HashSet<&String> = fingerprints.iter().collect();
    assert_eq!(distinct.len(), 4);
}

/// Where a directory has both forms, tokenizer.json is the one read (as transformers does).
#[test]
fn tokenizer_json_is_preferred_over_vocab_and_merges() {
    use dace::prior::tokenizer::ClipTokenizer;
    let dir = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("json/tokenizer_2").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("vocab.json"), "not JSON").unwrap();
    std::fs::write(dir.path().join("merges.txt"), "a b c\n").unwrap();
    let both = ClipTokenizer::from_dir(dir.path()).unwrap();
    let json = ClipTokenizer::from_dir(&fixture("json/tokenizer_2")).unwrap();
    assert_eq!(both.fingerprint, json.fingerprint);
    assert_eq!(both.encode("a photo of a sneaker").unwrap(), json.encode("a photo of a sneaker").unwrap());
}

#[test]
fn broken_tokenizer_files_are_named() {
    use dace::prior::tokenizer::ClipTokenizer;
    let dir = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt", "special_tokens_map.json"] {
        std::fs::copy(fixture("tokenizer").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("merges.txt") && err.contains("line 2"), "{err}");

    std::fs::copy(fixture("tokenizer").join("merges.txt"), dir.path().join("merges.txt")).unwrap();
    std::fs::write(dir.path().join("special_tokens_map.json"), r#"{"pad_token": "<|nonexistent|>"}"#).unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("vocab.json") && err.contains("<|nonexistent|>"), "{err}");

    std::fs::remove_file(dir.path().join("vocab.json")).unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("vocab.json") && err.contains("tokenizer.json"), "{err}");

    // tokenizer.json: truncated, another model type, an added token whose id the file contradicts.
    let good = std::fs::read(fixture("json/tokenizer").join("tokenizer.json")).unwrap();
    let json_path = dir.path().join("tokenizer.json");
    std::fs::write(&json_path, &good[..good.len() / 2]).unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("not a BPE tokenizer.json"), "{err}");
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["model"]["type"] = "Unigram".into();
    std::fs::write(&json_path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("Unigram"), "{err}");
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["model"]["type"] = "BPE".into();
    v["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({
        "id": 900, "content": "<cat-toy>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false
    }));
    std::fs::write(&json_path, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::write(dir.path().join("special_tokens_map.json"), "{}").unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("<cat-toy>") && err.contains("900"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// `dace prior import` against diffusers: tiny SD-Turbo- and SDXL-Turbo-layout pipelines saved by
// diffusers, their `encode_prompt` outputs and an img2img run with dace's portable noise
// (tests/fixtures/make_import_fixture.py).
// ---------------------------------------------------------------------------------------------

mod import {
    use std::path::{Path, PathBuf};

    use burn::prelude::*;
    use dace::device::CpuBackend;
    use dace::prior::bundle::{PipelineKind, Prior};
    use dace::prior::import::{import, ImportOptions};
    use dace::prior::pipeline::{self, NoiseId};
    use dace::prior::scheduler::{img2img_plan, Sampler, ScheduleConfig};
    use dace::prior::weights::{self, ShardIndex};

    type B = CpuBackend;
    const TOL: f32 = 1e-4;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import")
    }

    fn sharded() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import_sharded")
    }

    /// Tensor `name` of an expected-values file.
    fn expected<const D: usize>(file: &Path, name: &str) -> Tensor<B, D> {
        let bytes = std::fs::read(file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has no {name}"));
        let v: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let shape: [usize; D] = t.shape().try_into().expect("rank");
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn err<const D: usize>(what: &str, got: Tensor<B, D>, want: Tensor<B, D>) -> f32 {
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let e = super::nan_max((got - want).abs().into_data().to_vec::<f32>().unwrap());
        println!("{what}: max abs err {e:.3e}");
        assert!(e.is_finite());
        e
    }

    fn options() -> ImportOptions {
        ImportOptions {
            dataset: "fixture".into(),
            classes: vec!["T-shirt/top".into(), "Trouser".into(), "Ankle boot".into()],
            prompt: "A photo of {class}".into(),
            resolution: 32,
        }
    }

    /// Imports fixture `name`, then checks it against diffusers (see `check_import`).
    fn check_pipeline(name: &str, kind: PipelineKind) -> Vec<(String, f32)> {
        let tmp = tempfile::tempdir().unwrap();
        check_import(&fixtures().join(name), &fixtures().join("expected.safetensors"), name, kind, &tmp.path().join("prior"))
    }

    /// sha256 of a prior as docs/FORMAT.md defines it: per component `config.json`, then
    /// `diffusion_pytorch_model.safetensors` or the index and its shards in name order, each file
    /// as `"<component>/<file>:<byte length>\n"` and its bytes.
    fn documented_fingerprint(dir: &Path) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for c in ["vae", "unet", "class_embedder"] {
            let mut files = vec![weights::CONFIG_FILE.to_string()];
            let index = dir.join(c).join(weights::WEIGHTS_INDEX_FILE);
            if index.exists() {
                let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
                let shards: std::collections::BTreeSet<String> =
                    v["weight_map"].as_object().unwrap().values().map(|s| s.as_str().unwrap().to_string()).collect();
                files.push(weights::WEIGHTS_INDEX_FILE.to_string());
                files.extend(shards);
            } else {
                files.push(weights::WEIGHTS_FILE.to_string());
            }
            for f in files {
                let bytes = std::fs::read(dir.join(c).join(&f)).unwrap();
                h.update(format!("{c}/{f}:{}\n", bytes.len()).as_bytes());
                h.update(&bytes);
            }
        }
        format!("{:x}", h.finalize())
    }

    /// Imports `source` into `out`, then checks the stored prompt embeddings and an img2img run
    /// against diffusers (`{name}.*` in `expected_file`), and the prior's fingerprint against its
    /// definition.
    fn check_import(source: &Path, expected_file: &Path, name: &str, kind: PipelineKind, out: &Path) -> Vec<(String, f32)> {
        let out = out.to_path_buf();
        let device = Default::default();
        let report = import::<B>(source, &options(), &out, &device).unwrap();
        assert_eq!(report.record.kind, kind);
        assert_eq!(report.record.prompts[2], "A photo of Ankle boot");
        assert_eq!(report.tokens, 77);
        let prior = Prior::<B>::load(&out, &device).unwrap();
        assert_eq!(prior.fingerprint, report.fingerprint);
        assert_eq!(prior.fingerprint, documented_fingerprint(&out));
        assert_eq!(prior.index.image_shape, [3, 32, 32]);
        assert!(prior.index.imported.is_some());

        let mut errs = vec![];
        let mut check = |what: &str, e: f32| {
            errs.push((format!("{name} {what}"), e));
            assert!(e <= TOL, "{name} {what}: {e}");
        };
        check(
            "prompt_embeds",
            err("context", prior.classes.context(&[0, 1, 2], &device), expected(expected_file, &format!("{name}.prompt_embeds"))),
        );
        let null = prior.classes.null_class();
        check(
            "negative_prompt_embeds",
            err(
                "null context",
                prior.classes.context(&[null], &device),
                expected(expected_file, &format!("{name}.negative_prompt_embeds")),
            ),
        );
        if kind == PipelineKind::StableDiffusionXl {
            let pooled = prior.classes.pooled(&[0, 1, 2], &device).expect("SDXL stores pooled embeddings");
            check("pooled_prompt_embeds", err("pooled", pooled, expected(expected_file, &format!("{name}.pooled_prompt_embeds"))));
            let null_pooled = prior.classes.pooled(&[null], &device).unwrap();
            check(
                "negative_pooled_prompt_embeds",
                err("null pooled", null_pooled, expected(expected_file, &format!("{name}.negative_pooled_prompt_embeds"))),
            );
            let cond = prior.cond(&[0, 2], &device);
            assert_eq!(cond.text_time.unwrap().time_ids, [32.0, 32.0, 0.0, 0.0, 32.0, 32.0].repeat(2));
        } else {
            assert!(prior.classes.pooled(&[0], &device).is_none());
        }

        let steps = img2img_plan(&ScheduleConfig::default(), Sampler::EulerAncestral, 4, 0.5).unwrap();
        let ids: Vec<NoiseId> = (0..2).map(|item| NoiseId { seed: 5, item }).collect();
        let out = pipeline::img2img(
            &prior.vae,
            &prior.unet,
            expected(expected_file, &format!("{name}.image")),
            &prior.cond(&[0, 2], &device),
            None,
            &steps,
            prior.vae_config.scaling_factor,
            &ids,
        );
        check("img2img", err("img2img", out, expected(expected_file, &format!("{name}.img2img"))));
        errs
    }

    #[test]
    fn sd_turbo_layout_import_matches_diffusers() {
        let errs = check_pipeline("sd", PipelineKind::StableDiffusion);
        println!("{errs:?}");
    }

    #[test]
    fn sdxl_turbo_layout_import_matches_diffusers() {
        let errs = check_pipeline("sdxl", PipelineKind::StableDiffusionXl);
        println!("{errs:?}");
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    /// Importing a copy of `source` changed by `breaks` fails with every needle in the message,
    /// and leaves nothing behind: no --out, no temporary files.
    fn assert_import_refused(source: &Path, what: &str, breaks: Box<dyn Fn(&Path) + '_>, needles: &[&str]) {
        let device = Default::default();
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("ckpt");
        copy_dir(source, &ckpt);
        breaks(&ckpt);
        let out = tmp.path().join("prior");
        let e = import::<B>(&ckpt, &options(), &out, &device).err().unwrap_or_else(|| panic!("{what}: imported"));
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "{what}: {msg:?} lacks {n:?}");
        }
        assert!(!out.exists(), "{what}: a failed import left {}", out.display());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{what}: temporary files left: {leftovers:?}");
    }

    /// Each unsupported or broken checkpoint fails with the file and the problem named, and a failed
    /// import leaves nothing at --out.
    #[test]
    fn unsupported_checkpoints_are_refused_with_the_reason() {
        type Case<'a> = (&'a str, Box<dyn Fn(&Path)>, &'a [&'a str]);
        let cases: Vec<Case> = vec![
            ("no index", Box::new(|d: &Path| std::fs::remove_file(d.join("model_index.json")).unwrap()), &["not a diffusers checkpoint"]),
            (
                "other pipeline",
                Box::new(|d: &Path| edit_json(&d.join("model_index.json"), |v| v["_class_name"] = "KandinskyPipeline".into())),
                &["KandinskyPipeline", "not supported"],
            ),
            (
                "v-prediction",
                Box::new(|d: &Path| {
                    edit_json(&d.join("scheduler/scheduler_config.json"), |v| v["prediction_type"] = "v_prediction".into())
                }),
                &["scheduler_config.json", "prediction_type"],
            ),
            (
                "pickle weights",
                Box::new(|d: &Path| {
                    std::fs::rename(d.join("unet/diffusion_pytorch_model.safetensors"), d.join("unet/diffusion_pytorch_model.bin")).unwrap()
                }),
                &["unet", "pickle"],
            ),
            (
                "SDXL UNet in an SD pipeline",
                Box::new(|d: &Path| {
                    edit_json(&d.join("unet/config.json"), |v| {
                        v["addition_embed_type"] = "text_time".into();
                        v["addition_time_embed_dim"] = 8.into();
                        v["projection_class_embeddings_input_dim"] = 68.into();
                    })
                }),
                &["unet/config.json", "text_time"],
            ),
            (
                "wrong text width",
                Box::new(|d: &Path| edit_json(&d.join("unet/config.json"), |v| v["cross_attention_dim"] = 24.into())),
                &["cross_attention_dim"],
            ),
            (
                "truncated weights",
                Box::new(|d: &Path| {
                    let p = d.join("text_encoder/model.safetensors");
                    let bytes = std::fs::read(&p).unwrap();
                    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
                }),
                &["text_encoder/model.safetensors"],
            ),
        ];
        for (what, breaks, needles) in cases {
            assert_import_refused(&fixtures().join("sd"), what, breaks, needles);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Issue 25: a pipeline as diffusers 0.42 / transformers 5 `save_pretrained` write it, every
    // component sharded and the tokenizer as tokenizer.json (make_sharded_import_fixture.py).
    // -----------------------------------------------------------------------------------------

    const UNET_INDEX: &str = "unet/diffusion_pytorch_model.safetensors.index.json";

    fn index_of(path: &Path) -> ShardIndex {
        ShardIndex::parse(path, &std::fs::read(path).unwrap()).unwrap()
    }

    /// The sharded checkpoint imports, matches diffusers, and becomes a prior that keeps the index
    /// and the shards (linked, recorded, listed for the browser, fingerprinted as documented).
    #[test]
    fn sharded_checkpoint_as_diffusers_saves_it_imports_and_matches() {
        let src = sharded().join("sd");
        assert!(src.join("tokenizer/tokenizer.json").exists() && !src.join("tokenizer/vocab.json").exists());
        for (component, index) in
            [("unet", weights::WEIGHTS_INDEX_FILE), ("vae", weights::WEIGHTS_INDEX_FILE), ("text_encoder", "model.safetensors.index.json")]
        {
            assert!(index_of(&src.join(component).join(index)).shards().len() >= 2, "{component} is not sharded");
        }
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("prior");
        let errs = check_import(&src, &sharded().join("expected.safetensors"), "sd", PipelineKind::StableDiffusion, &out);
        println!("{errs:?}");

        let device = Default::default();
        let shards = index_of(&out.join(UNET_INDEX)).shards();
        assert!(!out.join("unet").join(weights::WEIGHTS_FILE).exists());
        let files = dace::prior::bundle::prior_files(&out).unwrap();
        for f in [UNET_INDEX.to_string(), format!("unet/{}", shards[0]), format!("unet/{}", shards[shards.len() - 1])] {
            assert!(files.contains(&f), "{f} not in {files:?}");
        }
        let prior = Prior::<B>::load(&out, &device).unwrap();
        let record = prior.index.imported.clone().unwrap();
        for f in [UNET_INDEX, "text_encoder/model.safetensors.index.json", "text_encoder/model-00002-of-00002.safetensors"] {
            assert!(record.weights.iter().any(|w| w == f), "{f} not recorded in {:?}", record.weights);
        }
        // The browser's path (files handed over by name) reads the same prior.
        let read = |rel: &str| std::fs::read(out.join(rel)).map_err(|e| dace::DaceError::io(rel, e));
        let fetched = Prior::<B>::from_files(Path::new("prior"), &read, &device).unwrap();
        assert_eq!(fetched.fingerprint, prior.fingerprint);
        // Another shard under the same name is another prior.
        let last = out.join("unet").join(&shards[shards.len() - 1]);
        let mut bytes = std::fs::read(&last).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::remove_file(&last).unwrap(); // a hard link to the fixture: never write through it
        std::fs::write(&last, &bytes).unwrap();
        assert_ne!(Prior::<B>::load(&out, &device).unwrap().fingerprint, prior.fingerprint);
        // A shard lost from the prior is named.
        std::fs::remove_file(out.join("unet").join(&shards[1])).unwrap();
        let err = Prior::<B>::load(&out, &device).err().expect("refused").to_string();
        assert!(err.contains(&shards[1]), "{err}");
    }

    /// SDXL's two tokenizers as transformers 5 saves them (tokenizer.json, no vocab.json): the
    /// same class table, bit for bit, as from vocab.json + merges.txt, so the same prior.
    #[test]
    fn sdxl_with_tokenizer_json_imports_the_same_table() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("ckpt");
        copy_dir(&fixtures().join("sdxl"), &ckpt);
        for name in ["tokenizer", "tokenizer_2"] {
            std::fs::remove_dir_all(ckpt.join(name)).unwrap();
            copy_dir(&super::fixture("json").join(name), &ckpt.join(name));
        }
        let device = Default::default();
        let from_json = import::<B>(&ckpt, &options(), &tmp.path().join("json"), &device).unwrap();
        let from_vocab = import::<B>(&fixtures().join("sdxl"), &options(), &tmp.path().join("vocab"), &device).unwrap();
        let (a, b) =
            (Prior::<B>::load(&tmp.path().join("json"), &device).unwrap(), Prior::<B>::load(&tmp.path().join("vocab"), &device).unwrap());
        let rows = [0, 1, 2, a.classes.null_class()];
        assert_eq!(a.classes.context(&rows, &device).into_data(), b.classes.context(&rows, &device).into_data());
        assert_eq!(a.classes.pooled(&rows, &device).unwrap().into_data(), b.classes.pooled(&rows, &device).unwrap().into_data());
        assert_eq!(a.fingerprint, b.fingerprint);
        // The record still tells the two sources apart.
        assert_ne!(from_json.record.tokenizers, from_vocab.record.tokenizers);
    }

    /// Every way a sharded checkpoint can be broken fails the import with the file named, and
    /// leaves nothing at --out.
    #[test]
    fn broken_shards_are_refused_by_name() {
        let unet_shard = |k: usize| format!("unet/diffusion_pytorch_model-0000{k}-of-00005.safetensors");
        let truncate = |p: PathBuf| {
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
        };
        // Moves tensor `conv_in.bias` of the UNet's index to another shard, or out of the map.
        let remap_conv_in = |d: &Path, to: Option<&str>| {
            edit_json(&d.join(UNET_INDEX), |v| {
                let map = v["weight_map"].as_object_mut().unwrap();
                match to {
                    Some(shard) => map.insert("conv_in.bias".into(), shard.into()),
                    None => map.remove("conv_in.bias"),
                };
            })
        };
        let u1 = unet_shard(1);
        let u2 = unet_shard(2);
        let u3 = unet_shard(3);
        type Case<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("missing UNet shard", Box::new(|d: &Path| std::fs::remove_file(d.join(&u2)).unwrap()), vec![u2.as_str(), "missing"]),
            ("truncated UNet shard", Box::new(|d: &Path| truncate(d.join(&u3))), vec![u3.as_str()]),
            (
                "missing text encoder shard",
                Box::new(|d: &Path| std::fs::remove_file(d.join("text_encoder/model-00002-of-00002.safetensors")).unwrap()),
                vec!["text_encoder/model-00002-of-00002.safetensors"],
            ),
            (
                "truncated text encoder shard",
                Box::new(|d: &Path| truncate(d.join("text_encoder/model-00001-of-00002.safetensors"))),
                vec!["text_encoder/model-00001-of-00002.safetensors"],
            ),
            (
                "index names a tensor its shard lacks",
                Box::new(|d: &Path| {
                    edit_json(&d.join(UNET_INDEX), |v| {
                        v["weight_map"]["conv_in.extra"] = "diffusion_pytorch_model-00001-of-00005.safetensors".into()
                    })
                }),
                vec![u1.as_str(), "conv_in.extra"],
            ),
            (
                "index puts a tensor in the wrong shard",
                Box::new(|d: &Path| remap_conv_in(d, Some("diffusion_pytorch_model-00005-of-00005.safetensors"))),
                vec![UNET_INDEX, "conv_in.bias"],
            ),
            ("a tensor the index does not map", Box::new(|d: &Path| remap_conv_in(d, None)), vec!["conv_in.bias", "does not map"]),
            (
                "index with another total_size",
                Box::new(|d: &Path| {
                    edit_json(&d.join(UNET_INDEX), |v| {
                        let total = v["metadata"]["total_size"].as_u64().unwrap();
                        v["metadata"]["total_size"] = (total + 4).into();
                    })
                }),
                vec![UNET_INDEX, "total_size"],
            ),
            (
                "shard outside the component",
                Box::new(|d: &Path| remap_conv_in(d, Some("../vae/diffusion_pytorch_model-00001-of-00002.safetensors"))),
                vec![UNET_INDEX, "beside the index"],
            ),
        ];
        for (what, breaks, needles) in cases {
            assert_import_refused(&sharded().join("sd"), what, breaks, &needles);
        }
    }

    /// A colour ImageFolder of 3 classes at 32 px: each class a hue, with noise and a shape.
    fn colour_folder(root: &Path) {
        let mut state = 12345u32;
        let mut rand = move || {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (state >> 24) as u8
        };
        for (split, per_class) in [("train", 8), ("test", 4)] {
            for (k, class) in ["T-shirt/top", "Trouser", "Ankle boot"].iter().enumerate() {
                let dir = root.join(split).join(class.replace('/', "-"));
                std::fs::create_dir_all(&dir).unwrap();
                for i in 0..per_class {
                    let img = image::RgbImage::from_fn(32, 32, |x, y| {
                        let inside = (x as i32 - 16).abs() + (y as i32 - 16).abs() < 8 + 2 * k as i32;
                        let mut px = [rand() / 4, rand() / 4, rand() / 4];
                        if inside {
                            px[k] = 200 + rand() / 8;
                        }
                        image::Rgb(px)
                    });
                    img.save(dir.join(format!("{i}.png"))).unwrap();
                }
            }
        }
    }

    /// The colour path end to end on the CPU with tiny shapes: an ImageFolder of RGB images, a
    /// ResNet-18 teacher, a coreset at r = 2, the imported SDXL-layout prior expanding the
    /// patches (77-token contexts and the text_time embedding), a package, bit-identical
    /// regeneration and a ResNet-18 student.
    #[test]
    fn colour_image_folder_distills_with_an_imported_sdxl_prior() {
        use burn::backend::Autodiff;
        use dace::coreset::{self, CoresetConfig};
        use dace::data::{self, augment as data_augment};
        use dace::distill;
        use dace::models::{self, Arch, ClassifierConfig, NormKind};
        use dace::package::{
            AugmentConfig, ExpandConfig, LabelEncoding, Manifest, Package, PackageSettings, PriorRef, SchedulerKind, Variant,
        };
        use dace::student::package::{regenerator, student_config, train_on_package};
        use dace::train::{self, ModelMeta, Normalization};

        let tmp = tempfile::tempdir().unwrap();
        let device = Default::default();
        colour_folder(&tmp.path().join("data"));
        let ds = data::load(tmp.path().join("data").to_str().unwrap()).unwrap();
        assert_eq!((ds.channels, ds.height, ds.width, ds.num_classes(), ds.train.len()), (3, 32, 32, 3, 24));

        let config = ClassifierConfig::new(Arch::Resnet18, 3, 3, [32, 32]);
        <B as burn::tensor::backend::Backend>::seed(&device, 0);
        let teacher = config.init::<B>(&device);
        models::materialize(&teacher);
        let (mean, std) = data_augment::channel_mean_std(&ds).unwrap();
        let meta = ModelMeta::new(config, Normalization { mean, std }, &ds.name, &ds.classes);
        let teacher_dir = tmp.path().join("teacher");
        train::save_model(&teacher_dir, &teacher, &meta).unwrap();

        let opts = ImportOptions { dataset: ds.name.clone(), classes: ds.classes.clone(), ..options() };
        import::<B>(&fixtures().join("sdxl"), &opts, &tmp.path().join("prior"), &device).unwrap();
        let prior = Prior::<B>::load(&tmp.path().join("prior"), &device).unwrap();

        let cc = CoresetConfig { ipc: 1, factor: 2, crops: 2, mipc: 4, seed: 0 };
        let coreset = coreset::select(&ds, &teacher, &meta, &cc, &device).unwrap();
        let settings = PackageSettings {
            expansion: ExpandConfig::variant(Variant::SrAugMixup, 4, SchedulerKind::EulerA, [0.5, 1.0]),
            augment: AugmentConfig { crop_scale_min: 0.5, flip: true, cutmix: true, shuffle_factor: 1 },
            seeds: vec![3, 4],
            labels: LabelEncoding::F16,
            batch: 8,
            prior_size: None,
        };
        let teacher_ref = distill::teacher_ref(&teacher_dir, &meta).unwrap();
        let manifest = Manifest::new(&coreset.meta, settings, teacher_ref, meta.normalization.clone(), Some(PriorRef::of(&prior))).unwrap();
        let out = tmp.path().join("pkg");
        let mut images = Vec::new();
        let mut keep = |_: usize, imgs: &[u8]| images.push(imgs.to_vec());
        let (_, report, _) =
            distill::distill(&coreset, Some(&prior), &teacher, manifest, ds.train.len(), &out, &mut keep, &device).unwrap();
        assert_eq!(report.expansions, 3 * 4 * 2);
        let pkg = Package::load(&out).unwrap();
        assert_eq!(pkg.manifest.patch_size, [16, 16]);

        // The expansions are the prior's work (not the upsampled patches), and regenerate exactly.
        let mut regen = regenerator(&pkg, Some(&prior), None, &device).unwrap();
        let again = regen.expander().expand_all(pkg.manifest.seeds[0]).unwrap();
        assert_eq!(again, images[0]);
        assert_ne!(images[0], images[1]);

        let config = student_config(&pkg, Arch::Resnet18, NormKind::Batch, 1, Some(12), 20.0, 0);
        let report = train_on_package::<Autodiff<B>>(&pkg, &mut regen, &config, &ds, &device).unwrap();
        assert!(report.final_accuracy.is_finite() && report.history[0].train_loss.is_finite());
    }

    /// Bad import options and a class table that does not fit the UNet are refused by name.
    #[test]
    fn bad_options_and_mismatched_tables_are_refused() {
        let device = Default::default();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("prior");
        let sdxl = fixtures().join("sdxl");
        let err = |opts: ImportOptions| import::<B>(&sdxl, &opts, &out, &device).expect_err("refused").to_string();
        let cases = [
            (ImportOptions { prompt: "a photo".into(), ..options() }, "has no `{class}`"),
            (ImportOptions { resolution: 31, ..options() }, "not a multiple of the VAE's downscale"),
            (ImportOptions { classes: vec![], ..options() }, "at least one class"),
        ];
        for (opts, needle) in cases {
            let e = err(opts);
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
        assert!(!out.exists());

        import::<B>(&sdxl, &options(), &out, &device).unwrap();
        let ce = out.join("class_embedder/config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ce).unwrap()).unwrap();
        v["pooled_dim"] = 19.into();
        std::fs::write(&ce, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = Prior::<B>::load(&out, &device).err().expect("refused").to_string();
        assert!(e.contains("class_embedder/config.json") && e.contains("do not fit the UNet's added embedding"), "{e}");
    }
}

/// `dace web serve` answers files under its folder and nothing outside it.
#[test]
fn web_serve_stays_inside_its_folder() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "hello").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let port = 19000 + (std::process::id() % 1000) as u16;
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_dace"))
        .args(["web", "serve", "--dir", site.to_str().unwrap(), "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| -> String {
        for _ in 0..100 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("server did not start");
    };
    let ok = get("/");
    let escape = get("/../secret.txt");
    let absolute = get("//etc/passwd");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"), "{ok}");
    assert!(escape.starts_with("HTTP/1.1 404") && !escape.contains("secret"), "{escape}");
    assert!(absolute.starts_with("HTTP/1.1 404"), "{absolute}");
}

/// A module's weights serialise to the same bytes every time, and load back: burn-store writes
/// the safetensors metadata from a hash map, whose order changed from one save to the next (and
/// with it an imported prior's fingerprint).
#[test]
fn saved_weights_are_the_same_bytes_every_time() {
    use burn::nn::LinearConfig;
    use dace::prior::weights;
    let device = Default::default();
    let layer = LinearConfig::new(3, 2).init::<B>(&device);
    let first = weights::to_bytes(&layer).unwrap();
    for _ in 0..20 {
        assert!(weights::to_bytes(&layer).unwrap() == first, "two saves of one module differ");
    }
    let header_len = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + header_len) % 8, 0, "tensor data not 8-byte aligned");
    let mut loaded = LinearConfig::new(3, 2).init::<B>(&device);
    weights::load_bytes(&mut loaded, first, Path::new("layer.safetensors")).unwrap();
    assert_eq!(loaded.weight.val().into_data(), layer.weight.val().into_data());
}

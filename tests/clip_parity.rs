//! CLIP text encoders against transformers itself: tiny random-weight `CLIPTextModel` (GELU,
//! legacy pooling) and `CLIPTextModelWithProjection` (quick GELU, EOS pooling), fixtures from
//! tests/fixtures/make_clip_parity.py (transformers 5.24.0), loaded with their key names unchanged.

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
    ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
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

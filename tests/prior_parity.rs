//! The burn VAE and UNet against diffusers itself: tiny random-weight models and their outputs,
//! made by tests/fixtures/make_parity.py (diffusers 0.42.1, torch 2.15, fp32, CPU) and committed.
//! Bound: max abs error <= 1e-4 on every output.

mod common;

use common::nan_max;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::FloatDType;
use dace::device::CpuBackend;
use dace::prior::pipeline::{self, NoiseId};
use dace::prior::scheduler::{img2img_plan, Sampler, ScheduleConfig, Spacing};
use dace::prior::{weights, AutoencoderKL, TextTime, UNet2DConditionModel, UNetConfig, VaeConfig};
use dace::rng::Stream;

type B = CpuBackend;

const TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

struct Cases(Vec<u8>);

impl Cases {
    fn load() -> Self {
        Cases(std::fs::read(dir().join("cases.safetensors")).unwrap())
    }

    fn get<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let st = safetensors::SafeTensors::deserialize(&self.0).unwrap();
        let view = st.tensor(name).unwrap_or_else(|_| panic!("fixture has no tensor {name}"));
        let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let shape: [usize; D] = view.shape().try_into().expect("rank");
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }
}

fn vae() -> (AutoencoderKL<B>, VaeConfig) {
    let cfg = VaeConfig::load(&dir().join("vae").join(weights::CONFIG_FILE)).unwrap();
    let mut vae = cfg.init::<B>(&Default::default());
    weights::load(&mut vae, &dir().join("vae").join(weights::WEIGHTS_FILE)).unwrap();
    (vae, cfg)
}

fn unet(name: &str) -> UNet2DConditionModel<B> {
    let cfg = UNetConfig::load(&dir().join(name).join(weights::CONFIG_FILE)).unwrap();
    let mut unet = cfg.init::<B>(&Default::default());
    weights::load(&mut unet, &dir().join(name).join(weights::WEIGHTS_FILE)).unwrap();
    unet
}

/// Max abs difference, after checking shapes; prints it so the reached precision is on record.
fn max_err<const D: usize>(what: &str, got: Tensor<B, D>, want: Tensor<B, D>) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let err = nan_max((got - want).abs().into_data().to_vec::<f32>().unwrap());
    println!("{what}: max abs err {err:.3e}");
    assert!(err.is_finite(), "{what}: non-finite output");
    err
}

fn timesteps(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn vae_encode_matches_diffusers() {
    let c = Cases::load();
    let (vae, _) = vae();
    let dist = vae.encode(c.get("vae_image"));
    assert!(max_err("vae mean", dist.mean, c.get("vae_mean")) <= TOL);
    assert!(max_err("vae logvar", dist.logvar, c.get("vae_logvar")) <= TOL);
}

#[test]
fn vae_decode_matches_diffusers() {
    let c = Cases::load();
    let (vae, _) = vae();
    assert!(max_err("vae decode", vae.decode(c.get("vae_latent")), c.get("vae_decoded")) <= TOL);
}

#[test]
fn unet_linear_projection_matches_diffusers() {
    let c = Cases::load();
    let t = timesteps(c.get("unet_timesteps"));
    let eps = unet("unet").forward(c.get("unet_sample"), &t, &c.get("unet_context"));
    assert!(max_err("unet eps (linear proj)", eps, c.get("unet_eps")) <= TOL);
}

#[test]
fn unet_conv_projection_matches_diffusers() {
    let c = Cases::load();
    let t = timesteps(c.get("unet_timesteps"));
    let eps = unet("unet_conv").forward(c.get("unet_sample"), &t, &c.get("unet_context"));
    assert!(max_err("unet eps (conv proj)", eps, c.get("unet_conv_eps")) <= TOL);
}

#[test]
fn img2img_euler_ancestral_matches_diffusers_with_portable_noise() {
    let c = Cases::load();
    let (vae, vcfg) = vae();
    let unet = unet("unet");
    let ids: Vec<NoiseId> = (0..2).map(|item| NoiseId { seed: 7, item }).collect();
    let device = Default::default();

    // The noise diffusers was fed is dace's own stream, regenerated here.
    let dims = [2, 4, 16, 16];
    for (stream, name) in
        [(Stream::VaeSample, "img2img_noise_vae"), (Stream::AddNoise, "img2img_noise_add"), (Stream::Ancestral(2), "img2img_noise_step2")]
    {
        let n = pipeline::normals::<B, 4>(&ids, stream, dims, &device);
        assert!(max_err(name, n, c.get(name)) <= 1e-5);
    }

    let cfg = ScheduleConfig::default();
    assert_eq!(cfg.spacing, Spacing::Trailing);
    let steps = img2img_plan(&cfg, Sampler::EulerAncestral, 4, 0.5).expect("strength 0.5 of 4 steps runs 2");
    assert_eq!(steps.iter().map(|s| s.timestep).collect::<Vec<_>>(), vec![499, 249]);

    let context = pipeline::Cond::from(c.get::<3>("img2img_context"));
    let z0 = pipeline::encode_latents(&vae, c.get("vae_image"), vcfg.scaling_factor, &ids);
    assert!(max_err("img2img init latents", z0.clone(), c.get("img2img_init_latents")) <= TOL);
    let z = pipeline::denoise(&unet, z0, &context, None, &steps, &ids);
    assert!(max_err("img2img final latents", z, c.get("img2img_latents")) <= TOL);

    let out = pipeline::img2img(&vae, &unet, c.get("vae_image"), &context, None, &steps, vcfg.scaling_factor, &ids);
    assert!(max_err("img2img decoded", out, c.get("img2img_out")) <= TOL);
}

fn tensor_names(bytes: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = safetensors::SafeTensors::deserialize(bytes).unwrap().names().into_iter().map(String::from).collect();
    names.sort();
    names
}

#[test]
fn saved_weights_keep_diffusers_names_and_values() {
    let c = Cases::load();
    let (vae, cfg) = vae();
    let bytes = weights::to_bytes(&vae).unwrap();
    let original = std::fs::read(dir().join("vae").join(weights::WEIGHTS_FILE)).unwrap();
    assert_eq!(tensor_names(&bytes), tensor_names(&original));

    let mut reloaded = cfg.init::<B>(&Default::default());
    weights::load_bytes(&mut reloaded, bytes, Path::new("memory")).unwrap();
    let a = vae.decode(c.get("vae_latent"));
    let b = reloaded.decode(c.get("vae_latent"));
    assert_eq!(a.into_data(), b.into_data());

    let unet = unet("unet");
    let bytes = weights::to_bytes(&unet).unwrap();
    let original = std::fs::read(dir().join("unet").join(weights::WEIGHTS_FILE)).unwrap();
    assert_eq!(tensor_names(&bytes), tensor_names(&original), "ff.net.* and norm names survive a round trip");
}

#[test]
fn weights_of_another_variant_are_refused_with_the_file_named() {
    let cfg = UNetConfig::load(&dir().join("unet_conv").join(weights::CONFIG_FILE)).unwrap();
    let mut model = cfg.init::<B>(&Default::default());
    let path = dir().join("unet").join(weights::WEIGHTS_FILE);
    let err = weights::load(&mut model, &path).unwrap_err().to_string();
    assert!(err.contains("unet/diffusion_pytorch_model.safetensors"), "{err}");
    assert!(err.contains("do not fit") || err.contains("missing") || err.contains("no place"), "{err}");

    let err = weights::load_bytes(&mut model, b"not a safetensors file".to_vec(), Path::new("junk.safetensors")).unwrap_err();
    assert!(err.to_string().contains("junk.safetensors"), "{err}");
}

/// SDXL's layout: plain first level, per-level transformer depth, and the `text_time` added
/// embedding (tests/fixtures/make_sdxl_parity.py).
#[test]
fn sdxl_text_time_unet_matches_diffusers() {
    let sdxl = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl");
    let cfg = UNetConfig::load(&sdxl.join("unet").join(weights::CONFIG_FILE)).unwrap();
    let spec = cfg.text_time().expect("fixture is a text_time UNet");
    assert_eq!((spec.time_embed_dim, spec.pooled_dim()), (8, 24));
    let mut unet = cfg.init::<B>(&Default::default());
    weights::load(&mut unet, &sdxl.join("unet").join(weights::WEIGHTS_FILE)).unwrap();

    let c = Cases(std::fs::read(sdxl.join("cases.safetensors")).unwrap());
    let t = timesteps(c.get("timesteps"));
    let time_ids = c.get::<2>("time_ids").into_data().to_vec::<f32>().unwrap();
    let tt = TextTime { text_embeds: c.get("text_embeds"), time_ids };
    let eps = unet.forward_with(c.get("sample"), &t, &c.get("context"), Some(&tt));
    assert!(max_err("sdxl unet eps", eps, c.get("eps")) <= TOL);

    // diffusers' fp16 variant file loads upcast to fp32 (what the CPU computes with).
    let mut half = cfg.init::<B>(&Default::default());
    weights::load(&mut half, &sdxl.join("unet/diffusion_pytorch_model.fp16.safetensors")).unwrap();
    let eps16 = half.forward_with(c.get("sample"), &t, &c.get("context"), Some(&tt));
    assert!(max_err("sdxl unet eps, fp16 weights", eps16, c.get("eps_fp16_weights")) <= TOL);

    // The added embedding matters: other time ids give another prediction.
    let other = TextTime { time_ids: tt.time_ids.iter().map(|v| v + 64.0).collect(), ..tt };
    let eps_other = unet.forward_with(c.get("sample"), &t, &c.get("context"), Some(&other));
    assert!(max_err("sdxl eps, shifted time ids", eps_other, c.get("eps")) > 1e-3);

    // Weights cast to f16 (what a GPU keeps of an fp16 checkpoint): the whole pass runs in half
    // precision, group norm statistics aside, and hands back f32 close to diffusers' fp32 output.
    let half = unet.clone().cast_weights(FloatDType::F16);
    assert_eq!((unet.dtype(), half.dtype()), (FloatDType::F32, FloatDType::F16));
    let tt = TextTime { time_ids: other.time_ids.iter().map(|v| v - 64.0).collect(), ..other };
    let eps_half = half.forward_with(c.get("sample"), &t, &c.get("context"), Some(&tt));
    assert_eq!(eps_half.dtype(), burn::tensor::DType::F32, "f32 in, f32 out");
    let scale = nan_max(c.get::<4>("eps").abs().into_data().to_vec::<f32>().unwrap());
    let rel = max_err("sdxl unet eps, f16 weights and activations", eps_half, c.get("eps")) / scale;
    println!("  relative to max |eps| {scale:.3}: {rel:.2e}");
    assert!(rel <= 1e-2 && rel > 0.0, "f16 pass: relative error {rel}");
}

#[test]
fn unsupported_config_features_are_named() {
    let path = dir().join("unet").join(weights::CONFIG_FILE);
    let base: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut v = base.clone();
        v[key] = value;
        UNetConfig::from_json(&path, v).unwrap_err().to_string()
    };
    let err = with("addition_embed_type", serde_json::json!("text_time"));
    assert!(err.contains("`addition_embed_type`") && err.contains("needs") && err.contains("config.json"), "{err}");
    let err = with("addition_embed_type", serde_json::json!("image_proj"));
    assert!(err.contains("\"image_proj\" is not supported"), "{err}");
    let err = with("some_future_option", serde_json::json!(true));
    assert!(err.contains("`some_future_option`"), "{err}");
    let err = with("down_block_types", serde_json::json!(["CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D"]));
    assert!(err.contains("down_block_types"), "{err}");
    let err = with("attention_head_dim", serde_json::json!([3, 4, 4]));
    assert!(err.contains("heads do not divide"), "{err}");

    let vpath = dir().join("vae").join(weights::CONFIG_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&vpath).unwrap()).unwrap();
    v["latents_mean"] = serde_json::json!([0.1, 0.2, 0.3, 0.4]);
    let err = VaeConfig::from_json(&vpath, v).unwrap_err().to_string();
    assert!(err.contains("`latents_mean`"), "{err}");

    // The configs dace writes read back as the same config.
    let cfg = UNetConfig::load(&path).unwrap();
    assert_eq!(UNetConfig::from_json(&path, cfg.to_json()).unwrap(), cfg);
    let vcfg = VaeConfig::load(&vpath).unwrap();
    assert_eq!(VaeConfig::from_json(&vpath, vcfg.to_json()).unwrap(), vcfg);
}

/// The whole img2img pipeline (VAE, UNet, dace's WGSL noise and scheduler kernels) on wgpu
/// (lavapipe in CI) against diffusers' output.
#[cfg(feature = "wgpu")]
#[test]
fn img2img_on_wgpu_matches_diffusers() {
    // Without a Vulkan driver, one line naming the package instead of a panic in cubecl's thread.
    dace::device::check_wgpu().unwrap_or_else(|e| panic!("{e}"));
    use dace::device::WgpuBackend as W;
    let device = Default::default();
    let c = Cases::load();
    let to_w = |t: Tensor<B, 4>| Tensor::<W, 4>::from_data(t.into_data(), &device);
    let vcfg = VaeConfig::load(&dir().join("vae").join(weights::CONFIG_FILE)).unwrap();
    let mut vae = vcfg.init::<W>(&device);
    weights::load(&mut vae, &dir().join("vae").join(weights::WEIGHTS_FILE)).unwrap();
    let ucfg = UNetConfig::load(&dir().join("unet").join(weights::CONFIG_FILE)).unwrap();
    let mut unet = ucfg.init::<W>(&device);
    weights::load(&mut unet, &dir().join("unet").join(weights::WEIGHTS_FILE)).unwrap();
    let ids: Vec<NoiseId> = (0..2).map(|item| NoiseId { seed: 7, item }).collect();
    let steps = img2img_plan(&ScheduleConfig::default(), Sampler::EulerAncestral, 4, 0.5).unwrap();
    let ctx = c.get::<3>("img2img_context");
    let ctx = pipeline::Cond::from(Tensor::<W, 3>::from_data(ctx.into_data(), &device));
    let out = pipeline::img2img(&vae, &unet, to_w(c.get("vae_image")), &ctx, None, &steps, vcfg.scaling_factor, &ids);
    let out = Tensor::<B, 4>::from_data(out.into_data(), &Default::default());
    assert!(max_err("wgpu img2img decoded", out, c.get("img2img_out")) <= TOL);
}

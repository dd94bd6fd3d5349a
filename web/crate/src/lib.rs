//! dace in the browser: load a distilled package and its prior from fetched bytes, regenerate any
//! (patch, seed) expansion with dace's own expansion code, on WebGPU (burn's wgpu backend and
//! dace's WGSL kernels) or, where the browser has no WebGPU, on burn's CPU backend.
//!
//! The page (web/app.js) owns the UI; this module owns every number: the same [`Expander`] the
//! native tool runs, so a regeneration here is the student's regeneration.

use std::collections::HashMap;
use std::path::Path;

use dace::device::{CpuBackend, WgpuBackend};
use dace::expand::{quantize, Expander};
use dace::kernels::diffusion::DiffusionKernels;
use dace::kernels::DaceBackend;
use dace::package::{ExpandConfig, Mode, Package};
use dace::prior::bundle::Prior;
use wasm_bindgen::prelude::*;
use web_time::Instant;

/// A loaded package and prior on one backend.
struct Session<B: DaceBackend + DiffusionKernels> {
    pkg: Package,
    prior: Option<Prior<B>>,
    device: B::Device,
}

enum Engine {
    Gpu(Session<WgpuBackend>),
    Cpu(Session<CpuBackend>),
}

#[wasm_bindgen]
pub struct Demo {
    engine: Engine,
    backend: String,
}

/// One regeneration, as the page shows it.
struct Regeneration {
    width: usize,
    height: usize,
    channels: usize,
    /// `[-1, 1]` pixels, CHW, before rounding (compared with the native result by the e2e test).
    pixels: Vec<f32>,
    /// RGBA bytes for a canvas.
    rgba: Vec<u8>,
    ms: f64,
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn files_from(map: &js_sys::Map) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    map.for_each(&mut |value, key| {
        if let Some(name) = key.as_string() {
            files.insert(name, js_sys::Uint8Array::new(&value).to_vec());
        }
    });
    files
}

fn reader<'a>(files: &'a HashMap<String, Vec<u8>>, prefix: &'a str) -> impl Fn(&str) -> dace::Result<Vec<u8>> + 'a {
    move |name: &str| {
        let key = format!("{prefix}/{name}");
        files.get(&key).cloned().ok_or_else(|| dace::DaceError::Invalid(format!("{key} was not fetched")))
    }
}

fn open<B: DaceBackend + DiffusionKernels>(files: &HashMap<String, Vec<u8>>, device: B::Device) -> dace::Result<Session<B>> {
    let pkg = Package::from_files(Path::new("package"), &reader(files, "package"))?;
    let prior = if files.contains_key("prior/model_index.json") {
        let prior = Prior::<B>::from_files(Path::new("prior"), &reader(files, "prior"), &device)?;
        pkg.manifest.check_prior(Some(&prior.fingerprint))?;
        Some(prior.with_unet_dtype(pkg.manifest.expansion.unet_dtype.float())?)
    } else {
        None
    };
    Ok(Session { pkg, prior, device })
}

/// CHW `[-1, 1]` floats to RGBA bytes (grey images repeat their one channel).
fn rgba(pixels: &[f32], c: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(h * w * 4);
    for p in 0..h * w {
        for ch in 0..3 {
            out.push(quantize(pixels[(ch.min(c - 1)) * h * w + p]));
        }
        out.push(255);
    }
    out
}

impl<B: DaceBackend + DiffusionKernels> Session<B> {
    fn config(&self, rho: f64, steps: usize, mixup: bool) -> ExpandConfig {
        let base = &self.pkg.manifest.expansion;
        let mode = if base.mode == Mode::Upsample { Mode::Upsample } else { Mode::Img2img };
        let gamma = base.mixup.unwrap_or([0.5, 1.0]);
        ExpandConfig { mode, rho, steps, mixup: mixup.then_some(gamma), ..base.clone() }
    }

    async fn regenerate(&self, item: usize, seed: u64, rho: f64, steps: usize, mixup: bool) -> dace::Result<Regeneration> {
        let m = &self.pkg.manifest;
        if item >= m.items.len() {
            return Err(dace::DaceError::Invalid(format!("patch {item} of {}", m.items.len())));
        }
        let start = Instant::now();
        // The package's resolutions: the prior works at its `prior_size`, and the decoded image is
        // resized to the student's size by the same host function as on the native devices.
        let expander = Expander::new(
            self.prior.as_ref(),
            self.config(rho, steps, mixup),
            &self.pkg.patches,
            m.channels,
            m.resolutions(),
            m.items.clone(),
            1,
            &self.device,
        )?;
        let data = expander
            .expand_tensor(&[item], seed)
            .into_data_async()
            .await
            .map_err(|e| dace::DaceError::Invalid(format!("reading the expansion back: {e:?}")))?;
        let decoded: Vec<f32> = data.to_vec().map_err(|e| dace::DaceError::Invalid(format!("{e:?}")))?;
        let pixels = expander.to_image_size(decoded);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let [h, w] = m.image_size;
        Ok(Regeneration { width: w, height: h, channels: m.channels, rgba: rgba(&pixels, m.channels, h, w), pixels, ms })
    }
}

#[wasm_bindgen]
impl Demo {
    /// `files` maps `package/manifest.json`, `package/patches.bin`, `package/labels.bin` and
    /// (for a diffusion package) `prior/model_index.json`, `prior/vae/config.json`, ... to their
    /// bytes. With `use_webgpu`, a WebGPU adapter is requested and the CPU is the fallback.
    pub async fn load(files: js_sys::Map, use_webgpu: bool) -> Result<Demo, JsError> {
        console_error_panic_hook::set_once();
        let files = files_from(&files);
        let mut why_cpu = String::from("WebGPU not requested");
        if use_webgpu {
            match gpu_device().await {
                Ok((device, adapter)) => {
                    let session = open::<WgpuBackend>(&files, device).map_err(js_err)?;
                    return Ok(Demo { engine: Engine::Gpu(session), backend: format!("webgpu: {adapter}") });
                }
                Err(e) => why_cpu = e,
            }
        }
        let session = open::<CpuBackend>(&files, Default::default()).map_err(js_err)?;
        Ok(Demo { engine: Engine::Cpu(session), backend: format!("cpu ({why_cpu})") })
    }

    /// `webgpu: <adapter>` or `cpu (<why not WebGPU>)`.
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    fn pkg(&self) -> &Package {
        match &self.engine {
            Engine::Gpu(s) => &s.pkg,
            Engine::Cpu(s) => &s.pkg,
        }
    }

    /// The manifest (classes, items, seeds, shapes, expansion settings) as JSON.
    pub fn manifest(&self) -> String {
        serde_json::to_string(&self.pkg().manifest).unwrap_or_default()
    }

    /// RGBA bytes of low-resolution patch `item`.
    pub fn patch(&self, item: usize) -> Vec<u8> {
        let m = &self.pkg().manifest;
        let len = m.patch_len();
        let [ph, pw] = m.patch_size;
        let bytes = &self.pkg().patches[item * len..(item + 1) * len];
        let floats: Vec<f32> = bytes.iter().map(|&b| b as f32 / 127.5 - 1.0).collect();
        rgba(&floats, m.channels, ph, pw)
    }

    /// The stored soft label of (item, seed number `s`): softmax of the teacher's logits.
    pub fn label(&self, item: usize, s: usize) -> Vec<f32> {
        let m = &self.pkg().manifest;
        let k = m.num_classes();
        let row = s * m.items.len() + item;
        let logits = &self.pkg().logits[row * k..(row + 1) * k];
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect()
    }

    /// Regenerates `item` under `seed` with the given settings; returns
    /// `{width, height, channels, pixels, rgba, ms}`.
    pub async fn regenerate(&self, item: usize, seed: u64, rho: f64, steps: usize, mixup: bool) -> Result<JsValue, JsError> {
        let r = match &self.engine {
            Engine::Gpu(s) => s.regenerate(item, seed, rho, steps, mixup).await,
            Engine::Cpu(s) => s.regenerate(item, seed, rho, steps, mixup).await,
        }
        .map_err(js_err)?;
        to_js(&r)
    }
}

/// `{width, height, channels, ms, pixels: Float32Array, rgba: Uint8ClampedArray}`.
fn to_js(r: &Regeneration) -> Result<JsValue, JsError> {
    let obj = js_sys::Object::new();
    let fields: [(&str, JsValue); 6] = [
        ("width", JsValue::from(r.width as u32)),
        ("height", JsValue::from(r.height as u32)),
        ("channels", JsValue::from(r.channels as u32)),
        ("ms", JsValue::from(r.ms)),
        ("pixels", js_sys::Float32Array::from(&r.pixels[..]).into()),
        ("rgba", js_sys::Uint8ClampedArray::from(&r.rgba[..]).into()),
    ];
    for (key, value) in fields {
        js_sys::Reflect::set(&obj, &JsValue::from_str(key), &value).map_err(|_| JsError::new("building the result object"))?;
    }
    Ok(obj.into())
}

/// Requests a WebGPU adapter and sets burn's wgpu runtime up on it (asynchronously: a browser
/// cannot block). Returns the device and the adapter's name.
async fn gpu_device() -> Result<(burn::backend::wgpu::WgpuDevice, String), String> {
    use burn::backend::wgpu::{graphics::WebGpu, init_setup_async, RuntimeOptions, WgpuDevice};
    let has_gpu = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("navigator"))
        .and_then(|n| js_sys::Reflect::get(&n, &JsValue::from_str("gpu")))
        .map(|g| !g.is_undefined() && !g.is_null())
        .unwrap_or(false);
    if !has_gpu {
        return Err("this browser has no WebGPU (navigator.gpu is missing)".into());
    }
    let device = WgpuDevice::default();
    let setup = init_setup_async::<WebGpu>(&device, RuntimeOptions::default()).await;
    let info = setup.adapter.get_info();
    Ok((device, format!("{} ({:?})", info.name, info.backend)))
}

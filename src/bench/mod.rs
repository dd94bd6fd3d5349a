//! `dace bench train`: training and inference throughput of the classifiers per backend, plus a
//! breakdown of where a training step spends its time (forward / backward / optimiser, and each
//! convolution's forward, input-gradient and weight-gradient kernels). `data`, `kernels` and
//! `prior` measure the data path, the diffusion kernels and the prior.

pub mod data;
pub mod kernels;
pub mod prior;

use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, TensorPrimitive};
use serde::{Deserialize, Serialize};

use crate::kernels::{DaceBackend, KernelOps};
use crate::models::{Classifier, ClassifierConfig};

/// Backends `dace bench` can measure in this build.
pub fn available_backends() -> Vec<&'static str> {
    let mut v = vec!["flex", "ndarray"];
    if cfg!(feature = "candle") {
        v.push("candle");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepProfile {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvProfile {
    /// `[batch, in_channels, height, width, out_channels]`, 3x3 kernel, stride 1, padding 1.
    pub shape: [usize; 5],
    /// dace's kernels (what training uses).
    pub forward_ms: f64,
    /// Input and weight (and bias) gradients together.
    pub backward_ms: f64,
    /// burn's own kernels on the same backend, for comparison.
    pub burn_forward_ms: f64,
    pub burn_input_grad_ms: f64,
    pub burn_weight_grad_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRow {
    pub backend: String,
    pub arch: String,
    pub size: usize,
    pub channels: usize,
    pub batch: usize,
    pub train_img_s: f64,
    pub infer_img_s: f64,
    pub step: StepProfile,
    pub convs: Vec<ConvProfile>,
}

/// Runs `f` until `budget` has passed (after `warmup` untimed calls, and at least 2 timed ones);
/// returns seconds per call.
fn time_per_call(warmup: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let start = Instant::now();
    let mut calls = 0;
    while calls < 2 || start.elapsed() < budget {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

fn sync<B: Backend>(device: &B::Device) {
    let _ = B::sync(device);
}

pub fn bench_model<B: DaceBackend + KernelOps>(
    backend: &str,
    config: &ClassifierConfig,
    batch: usize,
    budget: Duration,
    device: &B::Device,
) -> BenchRow {
    type AD<B> = Autodiff<B>;
    let [h, w] = config.image_size;
    let c = config.in_channels;
    let images = Tensor::<AD<B>, 4>::random([batch, c, h, w], Distribution::Normal(0.0, 1.0), device);
    let labels = Tensor::<AD<B>, 1, Int>::from_data(
        TensorData::new((0..batch as i64).map(|i| i % config.num_classes as i64).collect::<Vec<_>>(), [batch]),
        device,
    );
    let mut model: Classifier<AD<B>> = config.init(device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init::<AD<B>, Classifier<AD<B>>>();
    let (mut fwd, mut bwd, mut opt) = (0.0, 0.0, 0.0);
    let mut steps = 0usize;
    let step_time = time_per_call(2, budget, || {
        let t0 = Instant::now();
        let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(device).forward(model.forward(images.clone()), labels.clone());
        sync::<AD<B>>(device);
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        sync::<AD<B>>(device);
        let t2 = Instant::now();
        model = optim.step(1e-3, model.clone(), grads);
        let _: f32 = model_checksum(&model);
        let t3 = Instant::now();
        fwd += (t1 - t0).as_secs_f64();
        bwd += (t2 - t1).as_secs_f64();
        opt += (t3 - t2).as_secs_f64();
        steps += 1;
    });
    let per = |t: f64| 1000.0 * t / steps as f64;
    let step = StepProfile { forward_ms: per(fwd), backward_ms: per(bwd), optimizer_ms: per(opt) };

    let eval_model = model.valid();
    let eval_images = images.inner();
    let infer_time = time_per_call(2, budget, || {
        let logits = eval_model.forward(eval_images.clone());
        let _ = logits.into_data();
    });

    BenchRow {
        backend: backend.into(),
        arch: config.arch.name().into(),
        size: h,
        channels: c,
        batch,
        train_img_s: batch as f64 / step_time,
        infer_img_s: batch as f64 / infer_time,
        step,
        convs: Vec::new(),
    }
}

/// Forces the optimiser step to finish by reading one scalar of the updated weights.
fn model_checksum<B: AutodiffBackend>(model: &Classifier<B>) -> f32 {
    let mut sum = 0.0;
    let mut visitor = FirstParam { sum: &mut sum };
    model.visit(&mut visitor);
    sum
}

struct FirstParam<'a> {
    sum: &'a mut f32,
}

impl<B: Backend> burn::module::ModuleVisitor<B> for FirstParam<'_> {
    // `[0..1]` is one range per sliced dimension (burn's slice), not a one-element Vec.
    #[allow(clippy::single_range_in_vec_init)]
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        if *self.sum == 0.0 {
            *self.sum = param.val().flatten::<1>(0, D - 1).slice([0..1]).into_scalar().elem::<f32>() + 1e-30;
        }
    }
}

/// Times one convolution layer shape: dace's kernels (forward, backward) and burn's own
/// (forward, input gradient, weight gradient) on the same backend.
pub fn bench_conv<B: KernelOps>(shape: [usize; 5], budget: Duration, device: &B::Device) -> ConvProfile {
    let [n, cin, h, w, cout] = shape;
    let x = Tensor::<B, 4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), device);
    let weight = Tensor::<B, 4>::random([cout, cin, 3, 3], Distribution::Normal(0.0, 0.1), device);
    let bias = Tensor::<B, 1>::random([cout], Distribution::Normal(0.0, 0.1), device);
    let grad = Tensor::<B, 4>::random([n, cout, h, w], Distribution::Normal(0.0, 1.0), device);
    let options = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let prim = |t: &Tensor<B, 4>| t.clone().into_primitive().tensor();
    let b = || Some(bias.clone().into_primitive().tensor());
    let read = |t: B::FloatTensorPrimitive| {
        let _ = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t)).into_data();
    };
    let ms = |f: &mut dyn FnMut()| 1000.0 * time_per_call(1, budget, f);
    ConvProfile {
        shape,
        forward_ms: ms(&mut || read(B::conv2d_fwd(prim(&x), prim(&weight), b(), options()))),
        backward_ms: ms(&mut || {
            let (dx, dw, _) = B::conv2d_bwd(prim(&x), prim(&weight), b(), prim(&grad), options());
            read(dx);
            read(dw);
        }),
        burn_forward_ms: ms(&mut || read(B::conv2d(prim(&x), prim(&weight), b(), options()))),
        burn_input_grad_ms: ms(&mut || read(B::conv2d_x_backward(prim(&x), prim(&weight), prim(&grad), options()))),
        burn_weight_grad_ms: ms(&mut || read(B::conv2d_weight_backward(prim(&x), prim(&weight), prim(&grad), options()))),
    }
}

/// The 3x3 convolution shapes of a ConvNet-D training step.
pub fn convnet_conv_shapes(config: &ClassifierConfig, batch: usize, depth: usize) -> Vec<[usize; 5]> {
    let [mut h, mut w] = config.image_size;
    let mut cin = config.in_channels;
    let mut shapes = Vec::new();
    for _ in 0..depth {
        shapes.push([batch, cin, h, w, 128]);
        cin = 128;
        h /= 2;
        w /= 2;
    }
    shapes
}

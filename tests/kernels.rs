//! dace's fused kernels against burn's own ops: values and gradients on random inputs.

mod common;

use common::nan_max;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::{BatchNormConfig, InstanceNormConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use dace::device::CpuBackend;
use dace::kernels;

type AD = Autodiff<CpuBackend>;

fn assert_close(name: &str, a: Tensor<AD, 1>, b: Tensor<AD, 1>) {
    let a: Vec<f32> = a.into_data().to_vec().unwrap();
    let b: Vec<f32> = b.into_data().to_vec().unwrap();
    assert_eq!(a.len(), b.len(), "{name}");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    let worst = nan_max(a.iter().zip(&b).map(|(x, y)| (x - y).abs())) / scale;
    assert!(worst <= 1e-4, "{name}: relative error {worst} (scale {scale})");
}

fn random(shape: [usize; 4], device: &burn::tensor::Device<AD>) -> Tensor<AD, 4> {
    Tensor::random(shape, Distribution::Normal(0.5, 2.0), device)
}

/// Runs `ours` and `reference` on the same input, backpropagates the same random cotangent, and
/// compares outputs and the gradients of the input and of the affine parameters.
fn check_norm(
    name: &str,
    shape: [usize; 4],
    params: impl Fn() -> (Param<Tensor<AD, 1>>, Param<Tensor<AD, 1>>),
    run: impl Fn(Tensor<AD, 4>, &Param<Tensor<AD, 1>>, &Param<Tensor<AD, 1>>, bool) -> Tensor<AD, 4>,
) {
    let device = Default::default();
    let x0 = random(shape, &device);
    let cotangent = random(shape, &device);
    let (gamma, beta) = params();
    let mut results = Vec::new();
    for fused in [true, false] {
        let x = x0.clone().detach().require_grad();
        let y = run(x.clone(), &gamma, &beta, fused);
        let grads = (y.clone() * cotangent.clone()).sum().backward();
        let flat =
            |t: Tensor<<AD as burn::tensor::backend::AutodiffBackend>::InnerBackend, 4>| Tensor::<AD, 4>::from_inner(t).flatten::<1>(0, 3);
        results.push((
            y.flatten::<1>(0, 3),
            flat(x.grad(&grads).unwrap()),
            Tensor::<AD, 1>::from_inner(gamma.val().grad(&grads).unwrap()),
            Tensor::<AD, 1>::from_inner(beta.val().grad(&grads).unwrap()),
        ));
    }
    let (ours, reference) = (results.remove(0), results.remove(0));
    assert_close(&format!("{name} output"), ours.0, reference.0);
    assert_close(&format!("{name} input grad"), ours.1, reference.1);
    assert_close(&format!("{name} gamma grad"), ours.2, reference.2);
    assert_close(&format!("{name} beta grad"), ours.3, reference.3);
}

#[test]
fn fused_instance_norm_matches_burn() {
    let device = Default::default();
    for shape in [[4, 8, 7, 7], [2, 3, 16, 16], [1, 1, 3, 5]] {
        let c = shape[1];
        let config = InstanceNormConfig::new(c);
        let params = || {
            let gamma = Tensor::<AD, 1>::random([c], Distribution::Normal(1.0, 0.5), &device);
            let beta = Tensor::<AD, 1>::random([c], Distribution::Normal(0.0, 0.5), &device);
            (Param::from_tensor(gamma), Param::from_tensor(beta))
        };
        check_norm("instance norm", shape, params, |x, gamma, beta, fused| {
            let mut norm = config.init::<AD>(&device);
            norm.gamma = Some(gamma.clone());
            norm.beta = Some(beta.clone());
            if fused {
                kernels::instance_norm(&norm, x)
            } else {
                norm.forward(x)
            }
        });
    }
}

#[test]
fn fused_group_norm_matches_burn() {
    use burn::nn::GroupNormConfig;
    let device = Default::default();
    // (shape, groups): a middle case, groups = 1, groups = channels (instance norm), odd sizes,
    // a 1x1 plane, and groups larger than one block of the kernel's sums.
    for (shape, groups) in [([3, 12, 5, 3], 4), ([2, 6, 7, 5], 1), ([2, 5, 3, 7], 5), ([1, 9, 1, 1], 3), ([2, 8, 33, 17], 2)] {
        let c = shape[1];
        let config = GroupNormConfig::new(groups, c);
        let params = || {
            let gamma = Tensor::<AD, 1>::random([c], Distribution::Normal(1.0, 0.5), &device);
            let beta = Tensor::<AD, 1>::random([c], Distribution::Normal(0.0, 0.5), &device);
            (Param::from_tensor(gamma), Param::from_tensor(beta))
        };
        check_norm(&format!("group norm {shape:?} / {groups}"), shape, params, |x, gamma, beta, fused| {
            let mut norm = config.init::<AD>(&device);
            norm.gamma = Some(gamma.clone());
            norm.beta = Some(beta.clone());
            if fused {
                kernels::group_norm(&norm, x)
            } else {
                norm.forward(x)
            }
        });
    }

    // Without affine parameters, and with a mean far from zero compared with the spread (where
    // one-pass variance sums in f32 would cancel): the output against an f64 reference, the input
    // gradient against burn (whose own f32 arithmetic around a mean of 300 is only good to ~1e-4).
    let (shape, groups) = ([2, 4, 6, 6], 2);
    let norm = GroupNormConfig::new(groups, 4).with_affine(false).with_epsilon(1e-6).init::<AD>(&device);
    let x0 = Tensor::<AD, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device).add_scalar(300.0);
    let xs: Vec<f32> = x0.to_data().to_vec().unwrap();
    let expected: Vec<f32> = xs
        .chunks(xs.len() / (shape[0] * groups))
        .flat_map(|g| {
            let n = g.len() as f64;
            let mean = g.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = g.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            g.iter().map(move |&v| ((v as f64 - mean) / (var + 1e-6).sqrt()) as f32).collect::<Vec<_>>()
        })
        .collect();
    let cot = random(shape, &device);
    let mut results = Vec::new();
    for fused in [true, false] {
        let x = x0.clone().detach().require_grad();
        let y = if fused { kernels::group_norm(&norm, x.clone()) } else { norm.forward(x.clone()) };
        let grads = (y.clone() * cot.clone()).sum().backward();
        results.push((y.flatten::<1>(0, 3), Tensor::<AD, 4>::from_inner(x.grad(&grads).unwrap()).flatten::<1>(0, 3)));
    }
    let (ours, reference) = (results.remove(0), results.remove(0));
    let y: Vec<f32> = ours.0.into_data().to_vec().unwrap();
    assert_eq!(y.len(), expected.len());
    let worst = nan_max(y.iter().zip(&expected).map(|(a, b)| (a - b).abs()));
    // (The mean is kept in f32: half an ulp of 300 is 1.5e-5.)
    assert!(worst <= 5e-5, "group norm (no affine, mean 300) output: error {worst}");
    let worst = nan_max((ours.1 - reference.1.clone()).abs().into_data().to_vec::<f32>().unwrap())
        / nan_max(reference.1.abs().into_data().to_vec::<f32>().unwrap());
    assert!(worst <= 1e-3, "group norm (no affine, mean 300) input grad: relative error {worst}");
}

#[test]
fn generic_group_norm_matches_the_fused_cpu_kernel() {
    use burn::tensor::TensorPrimitive;
    use dace::kernels::KernelOps;
    let device = Default::default();
    let (shape, groups) = ([3, 12, 5, 3], 4);
    let x = Tensor::<CpuBackend, 4>::random(shape, Distribution::Normal(0.5, 3.0), &device);
    let dy = Tensor::<CpuBackend, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let g = Tensor::<CpuBackend, 1>::random([12], Distribution::Normal(1.0, 0.5), &device);
    let b = Tensor::<CpuBackend, 1>::random([12], Distribution::Normal(0.0, 0.5), &device);
    let p = |t: Tensor<CpuBackend, 4>| t.into_primitive().tensor();
    let p1 = |t: Tensor<CpuBackend, 1>| t.into_primitive().tensor();
    let flat4 = |t| Tensor::<AD, 1>::from_inner(Tensor::<CpuBackend, 4>::from_primitive(TensorPrimitive::Float(t)).flatten::<1>(0, 3));
    let flat1 = |t| Tensor::<AD, 1>::from_inner(Tensor::<CpuBackend, 1>::from_primitive(TensorPrimitive::Float(t)));
    let [y0, m0, r0] = CpuBackend::group_norm_fwd(p(x.clone()), p1(g.clone()), p1(b.clone()), groups, 1e-5);
    let [y1, m1, r1] = kernels::generic::group_norm_fwd::<CpuBackend>(p(x.clone()), p1(g.clone()), p1(b), groups, 1e-5);
    assert_close("group norm forward", flat4(y0), flat4(y1));
    assert_close("group norm mean", flat1(m0.clone()), flat1(m1));
    assert_close("group norm rstd", flat1(r0.clone()), flat1(r1));
    let fused = CpuBackend::group_norm_bwd(p(x.clone()), p1(g.clone()), m0.clone(), r0.clone(), p(dy.clone()), groups);
    let generic = kernels::generic::group_norm_bwd::<CpuBackend>(p(x), p1(g), m0, r0, p(dy), groups);
    let [dx0, dg0, db0] = fused;
    let [dx1, dg1, db1] = generic;
    assert_close("group norm input grad", flat4(dx0), flat4(dx1));
    assert_close("group norm gamma grad", flat1(dg0), flat1(dg1));
    assert_close("group norm beta grad", flat1(db0), flat1(db1));
}

#[test]
fn fused_batch_norm_matches_burn_and_tracks_running_statistics() {
    let device = Default::default();
    for shape in [[4, 8, 7, 7], [8, 3, 4, 4]] {
        let c = shape[1];
        let config = BatchNormConfig::new(c);
        let params = || {
            let gamma = Tensor::<AD, 1>::random([c], Distribution::Normal(1.0, 0.5), &device);
            let beta = Tensor::<AD, 1>::random([c], Distribution::Normal(0.0, 0.5), &device);
            (Param::from_tensor(gamma), Param::from_tensor(beta))
        };
        check_norm("batch norm", shape, params, |x, gamma, beta, fused| {
            let mut norm = config.init::<AD>(&device);
            norm.gamma = gamma.clone();
            norm.beta = beta.clone();
            if fused {
                kernels::batch_norm(&norm, x)
            } else {
                norm.forward(x)
            }
        });

        // Running statistics after one training step agree too.
        let x = random(shape, &device);
        let ours = config.init::<AD>(&device);
        let reference = config.init::<AD>(&device);
        let _ = kernels::batch_norm(&ours, x.clone());
        let _ = reference.forward(x);
        assert_close("running mean", ours.running_mean.value(), reference.running_mean.value());
        assert_close("running var", ours.running_var.value(), reference.running_var.value());
    }
}

#[test]
fn generic_kernels_match_the_fused_cpu_kernels() {
    use burn::tensor::TensorPrimitive;
    use dace::kernels::KernelOps;
    let device = Default::default();
    let x = Tensor::<CpuBackend, 4>::random([3, 5, 6, 6], Distribution::Normal(0.0, 3.0), &device);
    let g = Tensor::<CpuBackend, 1>::random([5], Distribution::Normal(1.0, 0.5), &device);
    let b = Tensor::<CpuBackend, 1>::random([5], Distribution::Normal(0.0, 0.5), &device);
    let p = |t: Tensor<CpuBackend, 4>| t.into_primitive().tensor();
    let p1 = |t: Tensor<CpuBackend, 1>| t.into_primitive().tensor();
    let back = |t| Tensor::<AD, 1>::from_inner(Tensor::<CpuBackend, 4>::from_primitive(TensorPrimitive::Float(t)).flatten::<1>(0, 3));
    let fused = CpuBackend::batch_norm_fwd(p(x.clone()), p1(g.clone()), p1(b.clone()), 1e-5);
    let generic = kernels::generic::batch_norm_fwd::<CpuBackend>(p(x), p1(g), p1(b), 1e-5);
    let [y0, ..] = fused;
    let [y1, ..] = generic;
    assert_close("batch norm forward", back(y0), back(y1));
}

#[test]
fn dace_convolution_matches_burn_values_and_gradients() {
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::PaddingConfig2d;
    let device = Default::default();
    // (batch, c_in, size, c_out, kernel, stride, padding, bias): the shapes ConvNet and ResNet use.
    for (n, ci, s, co, k, stride, pad, bias) in [
        (3, 2, 9, 4, 3, 1, 1, true),
        (2, 3, 10, 5, 3, 2, 1, false),
        (2, 4, 8, 6, 1, 2, 0, false),
        (1, 3, 16, 4, 7, 2, 3, false),
        (2, 1, 5, 3, 3, 1, 0, true),
        // Small planes: several images share one GEMM (uneven last group), incl. 1x1 stride 1.
        (5, 4, 4, 6, 1, 1, 0, true),
        (7, 8, 4, 8, 3, 1, 1, true),
        (6, 3, 6, 4, 3, 2, 1, false),
        // "Same" convolutions (one shifted copy per tap): 5x5 with padding 2, and a 1x1 plane.
        (2, 3, 7, 4, 5, 1, 2, true),
        (2, 3, 1, 4, 3, 1, 1, true),
    ] {
        let conv = Conv2dConfig::new([ci, co], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(bias)
            .init::<AD>(&device);
        // Give the lazily initialised weights their values before cloning (see models::materialize).
        dace::models::materialize(&conv);
        let x0 = random([n, ci, s, s], &device);
        let mut outs = Vec::new();
        for ours in [true, false] {
            let conv = conv.clone();
            let x = x0.clone().detach().require_grad();
            let y = if ours { kernels::conv2d(&conv, x.clone()) } else { conv.forward(x.clone()) };
            let cot = Tensor::<AD, 4>::ones(y.dims(), &device).mul_scalar(0.5) + y.clone().detach();
            let grads = (y.clone() * cot).sum().backward();
            let inner = |t| Tensor::<AD, 4>::from_inner(t).flatten::<1>(0, 3);
            let gb = conv.bias.as_ref().map(|b| Tensor::<AD, 1>::from_inner(b.val().grad(&grads).unwrap()));
            outs.push((y.flatten::<1>(0, 3), inner(x.grad(&grads).unwrap()), inner(conv.weight.val().grad(&grads).unwrap()), gb));
        }
        let (a, b) = (outs.remove(0), outs.remove(0));
        let name = format!("conv {n}x{ci}x{s}x{s} -> {co}, k{k} s{stride} p{pad}");
        assert_close(&format!("{name} output"), a.0, b.0);
        assert_close(&format!("{name} input grad"), a.1, b.1);
        assert_close(&format!("{name} weight grad"), a.2, b.2);
        if let (Some(x), Some(y)) = (a.3, b.3) {
            assert_close(&format!("{name} bias grad"), x, y);
        }
    }
}

#[test]
fn batch_norm_inference_uses_the_running_statistics() {
    use burn::nn::BatchNormConfig;
    let device = Default::default();
    let norm = BatchNormConfig::new(4).init::<CpuBackend>(&device);
    norm.running_mean.update(Tensor::from_floats([0.5, -1.0, 2.0, 0.0], &device));
    norm.running_var.update(Tensor::from_floats([1.0, 4.0, 0.25, 9.0], &device));
    let x = Tensor::<CpuBackend, 4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 2.0), &device);
    let ours: Vec<f32> = kernels::batch_norm(&norm, x.clone()).into_data().to_vec().unwrap();
    let reference: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
    assert_eq!(ours.len(), reference.len());
    let worst = nan_max(ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()));
    assert!(worst < 1e-5, "worst difference {worst}");
}

#[test]
fn fused_relu_pool_matches_burn() {
    use burn::nn::pool::AvgPool2dConfig;
    use burn::tensor::activation::relu;
    let device = Default::default();
    // Even and odd sizes (floor mode drops the last row/column), and a plane smaller than 2x2.
    for shape in [[3, 5, 8, 8], [2, 4, 7, 9], [1, 2, 1, 3]] {
        let x0 = random(shape, &device);
        let [n, c, h, w] = shape;
        let cotangent: Tensor<AD, 4> = Tensor::random([n, c, h / 2, w / 2], Distribution::Normal(0.0, 1.0), &device);
        let pool = AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let mut results = Vec::new();
        for fused in [true, false] {
            let x = x0.clone().detach().require_grad();
            let y = if fused { kernels::relu_pool2(x.clone()) } else { pool.forward(relu(x.clone())) };
            assert_eq!(y.dims(), [n, c, h / 2, w / 2]);
            let grads = (y.clone() * cotangent.clone()).sum().backward();
            let dx = Tensor::<AD, 4>::from_inner(x.grad(&grads).unwrap()).flatten::<1>(0, 3);
            results.push((y.flatten::<1>(0, 3), dx));
        }
        let (ours, reference) = (results.remove(0), results.remove(0));
        if n * c * (h / 2) * (w / 2) > 0 {
            assert_close("relu+pool output", ours.0, reference.0);
        }
        assert_close("relu+pool input grad", ours.1, reference.1);
        // The generic path (GPU backends) against the same reference.
        let x = x0.clone().detach().require_grad();
        let prim = x.clone().into_primitive().tensor();
        let generic: Tensor<AD, 4> = Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(kernels::generic::relu_pool2::<AD>(prim)));
        let expected = pool.forward(relu(x));
        if n * c * (h / 2) * (w / 2) > 0 {
            assert_close("generic relu+pool", generic.flatten::<1>(0, 3), expected.flatten::<1>(0, 3));
        }
    }
}

/// Timing of forward + backward of group norm on `[64, 32, 28, 28]`, 8 groups (and of instance
/// norm on the same tensor; each time includes `(y * cotangent).sum()` and its backward):
/// `cargo test --release --test kernels -- --ignored --nocapture group_norm_timing`.
#[test]
#[ignore]
fn group_norm_timing() {
    use burn::nn::GroupNormConfig;
    use std::time::Instant;
    let device = Default::default();
    let shape = [64, 32, 28, 28];
    let x0 = random(shape, &device);
    let cot = random(shape, &device);
    let norm = GroupNormConfig::new(8, 32).init::<AD>(&device);
    let inorm = InstanceNormConfig::new(32).with_affine(true).init::<AD>(&device);
    let time = |name: &str, f: &dyn Fn(Tensor<AD, 4>) -> Tensor<AD, 4>| {
        let mut best = f64::MAX;
        for _ in 0..6 {
            let x = x0.clone().detach().require_grad();
            let t = Instant::now();
            let y = f(x.clone());
            let grads = (y * cot.clone()).sum().backward();
            let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
            assert!(dx[0].is_finite());
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name}: {:.1} ms (best of 6, fwd+bwd)", best * 1e3);
    };
    time("dace group_norm", &|x| kernels::group_norm(&norm, x));
    time("burn GroupNorm", &|x| norm.forward(x));
    // The previous composition: instance norm on [N, G, C/G * H, W], then a broadcast affine.
    let per_group = InstanceNormConfig::new(8).with_affine(false).init::<AD>(&device);
    time("instance norm + broadcast affine (before)", &|x| {
        let [n, c, h, w] = x.dims();
        let y = kernels::instance_norm(&per_group, x.reshape([n, 8, (c / 8) * h, w])).reshape([n, c, h, w]);
        y * norm.gamma.as_ref().unwrap().val().reshape([1, c, 1, 1]) + norm.beta.as_ref().unwrap().val().reshape([1, c, 1, 1])
    });
    time("dace instance_norm", &|x| kernels::instance_norm(&inorm, x));
}

/// Largest absolute difference between two equally long outputs, relative to the reference's
/// largest magnitude (NaN when any value is NaN).
fn rel_diff(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    let scale = nan_max(reference.iter().map(|v| v.abs())).max(1e-3);
    nan_max(ours.iter().zip(reference).map(|(a, b)| (a - b).abs())) / scale
}

/// GroupNorm + SiLU: the CPU kernel (one pass) against group norm then burn's SiLU, and on
/// autodiff (prior training) values and gradients against burn's `GroupNorm` then `silu`.
#[test]
fn fused_group_norm_silu_matches_burn() {
    use burn::nn::GroupNormConfig;
    use burn::tensor::activation::silu;
    type B = CpuBackend;
    let device = Default::default();
    for (shape, groups) in [([2, 32, 7, 7], 16), ([1, 64, 14, 14], 32), ([3, 8, 5, 3], 8), ([2, 6, 1, 1], 3)] {
        let c = shape[1];
        let mut norm = GroupNormConfig::new(groups, c).init::<B>(&device);
        norm.gamma = Some(Param::from_tensor(Tensor::random([c], Distribution::Normal(1.0, 0.5), &device)));
        norm.beta = Some(Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 0.5), &device)));
        let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.5, 2.0), &device);
        let ours: Vec<f32> = kernels::group_norm_silu(&norm, x.clone()).into_data().to_vec().unwrap();
        let reference: Vec<f32> = silu(norm.forward(x)).into_data().to_vec().unwrap();
        let err = rel_diff(&ours, &reference);
        assert!(err <= 2e-6, "group norm + silu {shape:?} / {groups}: relative error {err:e}");
    }
    let (shape, groups) = ([2, 12, 5, 4], 4);
    let config = GroupNormConfig::new(groups, 12);
    let params = || {
        let gamma = Tensor::<AD, 1>::random([12], Distribution::Normal(1.0, 0.5), &device);
        let beta = Tensor::<AD, 1>::random([12], Distribution::Normal(0.0, 0.5), &device);
        (Param::from_tensor(gamma), Param::from_tensor(beta))
    };
    check_norm("group norm + silu (autodiff)", shape, params, |x, gamma, beta, fused| {
        let mut norm = config.init::<AD>(&device);
        norm.gamma = Some(gamma.clone());
        norm.beta = Some(beta.clone());
        if fused {
            kernels::group_norm_silu(&norm, x)
        } else {
            silu(norm.forward(x))
        }
    });
    // A NaN input poisons its group's output instead of disappearing.
    let norm = GroupNormConfig::new(2, 4).init::<B>(&device);
    let mut values = vec![0.5f32; 2 * 4 * 3 * 3];
    values[5] = f32::NAN;
    let y: Vec<f32> = kernels::group_norm_silu(&norm, Tensor::<B, 4>::from_data(TensorData::new(values, [2, 4, 3, 3]), &device))
        .into_data()
        .to_vec()
        .unwrap();
    assert!(y[..18].iter().all(|v| v.is_nan()) && y[18..].iter().all(|v| v.is_finite()), "{y:?}");
}

/// GEGLU: the CPU kernel against burn's `chunk` + erf `gelu`, values and (through autodiff,
/// which composes burn's ops) gradients.
#[test]
fn fused_geglu_matches_burn() {
    use burn::tensor::activation::gelu;
    type B = CpuBackend;
    let device = Default::default();
    for shape in [[2, 49, 512], [1, 196, 256], [3, 5, 6]] {
        let x = Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 2.0), &device);
        let ours: Vec<f32> = kernels::geglu(x.clone()).into_data().to_vec().unwrap();
        let [h, gate] = x.chunk(2, 2).try_into().unwrap();
        let reference: Vec<f32> = (h * gelu(gate)).into_data().to_vec().unwrap();
        let err = rel_diff(&ours, &reference);
        assert!(err <= 2e-6, "geglu {shape:?}: relative error {err:e}");
    }
    let x0 = Tensor::<AD, 3>::random([2, 7, 8], Distribution::Normal(0.0, 2.0), &device);
    let mut grads_of = Vec::new();
    for fused in [true, false] {
        let x = x0.clone().detach().require_grad();
        let y = if fused {
            kernels::geglu(x.clone())
        } else {
            let [h, gate] = x.clone().chunk(2, 2).try_into().unwrap();
            h * gelu(gate)
        };
        let g = x.grad(&(y * x0.clone().slice([0..2, 0..7, 0..4])).sum().backward()).unwrap();
        grads_of.push(g.into_data().to_vec::<f32>().unwrap());
    }
    assert!(rel_diff(&grads_of[0], &grads_of[1]) <= 1e-6, "geglu gradients differ");
    let nan = Tensor::<B, 3>::from_data(TensorData::new(vec![1.0, f32::NAN, f32::NAN, 1.0], [1, 1, 4]), &device);
    let y: Vec<f32> = kernels::geglu(nan).into_data().to_vec().unwrap();
    assert!(y[0].is_nan() && y[1].is_nan(), "{y:?}");
}

/// Multi-head attention: the strided CPU kernel against burn's attention on transposed copies,
/// self- and cross-attention, one head and several, token counts that do not fill a query block.
#[test]
fn fused_attention_matches_burn() {
    type B = CpuBackend;
    let device = Default::default();
    let prim = |t: Tensor<B, 3>| t.into_primitive().tensor();
    let back = |p| Tensor::<B, 3>::from_primitive(burn::tensor::TensorPrimitive::Float(p));
    // (batch, queries, keys, heads, head dim)
    for (b, n, m, heads, d) in [(2, 49, 49, 2, 32), (3, 196, 1, 1, 32), (1, 130, 77, 5, 8), (4, 7, 9, 3, 4), (1, 1, 1, 1, 1)] {
        let q = Tensor::<B, 3>::random([b, n, heads * d], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<B, 3>::random([b, m, heads * d], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<B, 3>::random([b, m, heads * d], Distribution::Normal(0.0, 1.0), &device);
        let ours: Vec<f32> = kernels::attention(q.clone(), k.clone(), v.clone(), heads).into_data().to_vec().unwrap();
        let reference = back(kernels::generic::attention::<B>(prim(q), prim(k), prim(v), heads));
        let err = rel_diff(&ours, &reference.into_data().to_vec::<f32>().unwrap());
        assert!(err <= 2e-6, "attention b{b} n{n} m{m} heads {heads} d{d}: relative error {err:e}");
    }
    // A NaN key poisons every query of its image and head.
    let q = Tensor::<B, 3>::ones([2, 3, 4], &device);
    let mut kv = vec![0.5f32; 2 * 5 * 4];
    kv[0] = f32::NAN;
    let k = Tensor::<B, 3>::from_data(TensorData::new(kv, [2, 5, 4]), &device);
    let y: Vec<f32> = kernels::attention(q, k.clone(), k, 2).into_data().to_vec().unwrap();
    assert!(y[..2].iter().all(|v| v.is_nan()) && y[12..].iter().all(|v| v.is_finite()), "{y:?}");
}

// The vectorised activations of `kernels::activation_cpu` against their definitions.

/// The larger of two non-negative errors, NaN if either is NaN (`f64::max` would drop a NaN).
fn nan_max64(m: f64, x: f64) -> f64 {
    if m.is_nan() || x <= m {
        m
    } else {
        x
    }
}
use dace::kernels::activation_cpu::{exp, geglu, gelu, silu_inplace};

fn rel(a: f32, b: f32) -> f32 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f32::MIN_POSITIVE)
    }
}

#[test]
fn cpu_exp_matches_std_to_a_few_ulps() {
    let mut worst = 0f32;
    let mut x = -87.0f32;
    while x < 88.5 {
        let e = rel(exp(x), (x as f64).exp() as f32);
        assert!(!e.is_nan(), "exp({x}) is NaN");
        worst = nan_max([worst, e]);
        x += 0.000_37;
    }
    assert!(worst <= 3e-7, "worst relative error {worst:e}");
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp(200.0), f32::INFINITY);
    assert_eq!(exp(-200.0), 0.0);
    assert!(exp(f32::NAN).is_nan());
    assert_eq!(exp(0.0), 1.0);
}

#[test]
fn cpu_silu_and_gelu_match_their_definitions() {
    let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.005).collect();
    let mut s = xs.clone();
    silu_inplace(&mut s);
    let mut worst = (0f64, 0f64);
    for (&x, &y) in xs.iter().zip(&s) {
        let want = x as f64 / (1.0 + (-x as f64).exp());
        worst.0 = nan_max64(worst.0, (y as f64 - want).abs());
        let g = gelu(x) as f64;
        let want = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
        worst.1 = nan_max64(worst.1, (g - want).abs());
    }
    assert!(worst.0 <= 2e-6, "silu worst abs error {:e}", worst.0);
    assert!(worst.1 <= 4e-6, "gelu worst abs error {:e}", worst.1);
    let mut nan = [f32::NAN, 1.0];
    silu_inplace(&mut nan);
    assert!(nan[0].is_nan() && gelu(f32::NAN).is_nan());
}

/// erf in f64 by its Taylor series (|x| < 3) or the asymptotic complement: a reference good
/// to ~1e-12, independent of the approximation under test.
fn libm_erf(x: f64) -> f64 {
    let a = x.abs();
    let y = if a < 3.0 {
        let (mut term, mut sum, mut k) = (a, a, 0.0);
        while term.abs() > 1e-17 {
            k += 1.0;
            term *= -a * a / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut s = 1.0;
        let mut t = 1.0;
        for k in 1..8 {
            t *= -((2 * k - 1) as f64) / (2.0 * a * a);
            s += t;
        }
        1.0 - (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * s
    };
    y.copysign(x)
}

#[test]
fn cpu_geglu_multiplies_each_half_by_the_gelu_of_the_other() {
    let x: Vec<f32> = (0..3 * 8).map(|i| (i as f32 - 11.0) * 0.3).collect();
    let out = geglu(&x, 4);
    for r in 0..3 {
        for j in 0..4 {
            let want = x[r * 8 + j] * gelu(x[r * 8 + 4 + j]);
            assert_eq!(out[r * 4 + j], want);
        }
    }
}

/// Every vector tier of the CPU kernels gives the same bits as the baseline build: AVX2 and
/// AVX-512, where this CPU has them, on inputs with NaN, infinities and lengths that leave a
/// remainder after the 16-lane chunks.
#[test]
fn cpu_kernel_tiers_give_the_same_bits() {
    use dace::kernels::activation_cpu::{exp_shifted, geglu_rows, max_or_nan};
    use dace::kernels::norm_cpu::sum_and_dot;
    use dace::kernels::simd::{with_tier, Tier};
    let tiers = Tier::all_supported();
    assert!(tiers.contains(&Tier::Baseline));
    #[cfg(target_arch = "x86_64")]
    assert!(tiers.contains(&Tier::Avx2), "the test machines have AVX2; this one does not: {tiers:?}");
    let mut xs: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 2000) as f32 * 0.013 - 13.0).collect();
    xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 90.0, -90.0]);
    let run = |tier: Tier| {
        with_tier(tier, || {
            let mut s = xs.clone();
            silu_inplace(&mut s);
            let mut e = xs[..999].to_vec();
            let total = exp_shifted(&mut e, 3.0);
            let mut g = vec![0f32; 500];
            geglu_rows(&mut g, &xs[..1000], 50);
            let (sum, dot) = sum_and_dot(&xs[..1001], &xs[3..1004]);
            let maxima: Vec<f32> = [0, 1, 15, 16, 17, 999, 1001].iter().map(|&n| max_or_nan(&xs[..n])).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (bits(&s), bits(&e), total.to_bits(), bits(&g), sum.to_bits(), dot.to_bits(), bits(&maxima))
        })
        .expect("a supported tier")
    };
    let baseline = run(Tier::Baseline);
    for &tier in &tiers[1..] {
        assert!(run(tier) == baseline, "{tier:?} differs from the baseline build");
    }
}

/// The vectorised row maximum used by the softmax: the plain maximum, NaN if any value is NaN,
/// -inf for an empty row.
#[test]
fn cpu_row_maximum_propagates_nan() {
    use dace::kernels::activation_cpu::max_or_nan;
    assert_eq!(max_or_nan(&[]), f32::NEG_INFINITY);
    for n in [1, 5, 16, 17, 40] {
        let row: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let want = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max_or_nan(&row), want, "{n} values");
        for at in [0, n / 2, n - 1] {
            let mut with_nan = row.clone();
            with_nan[at] = f32::NAN;
            assert!(max_or_nan(&with_nan).is_nan(), "NaN at {at} of {n} dropped");
        }
    }
}

/// The thread's scratch buffer is handed out with old contents: a convolution after a call that
/// left NaN in all of it still matches burn (every im2col element is written), and a nested
/// request gets a buffer of its own.
#[test]
fn convolution_writes_every_scratch_element() {
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::PaddingConfig2d;
    use dace::kernels::matmul_cpu::with_scratch;
    type B = CpuBackend;
    let device = Default::default();
    with_scratch(3, |outer| {
        outer.fill(1.0);
        with_scratch(5, |inner| inner.fill(2.0));
        assert_eq!(outer, [1.0; 3], "a nested request reused the outer buffer");
    });
    for (n, ci, s, co, stride) in [(7, 8, 4, 8, 1), (3, 5, 7, 6, 1), (4, 3, 6, 4, 2)] {
        let conv = Conv2dConfig::new([ci, co], [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<B>(&device);
        let x = Tensor::<B, 4>::random([n, ci, s, s], Distribution::Normal(0.0, 1.0), &device);
        let reference: Vec<f32> = conv.forward(x.clone()).into_data().to_vec().unwrap();
        // Poison this thread's buffer and the pool threads' (the convolution runs on the pool).
        let poison = || with_scratch(1 << 20, |b| b.fill(f32::NAN));
        poison();
        rayon::broadcast(|_| poison());
        let ours: Vec<f32> = kernels::conv2d(&conv, x).into_data().to_vec().unwrap();
        let err = rel_diff(&ours, &reference);
        assert!(err <= 1e-5, "conv {n}x{ci}x{s}x{s} -> {co} s{stride}: relative error {err:e}");
    }
}

/// `kernels::linear` (one GEMM that starts from the bias) against burn's `Linear::forward`, for
/// rank 2 to 4 with and without bias; values exact or within rounding, gradients on autodiff
/// (burn's own op there), NaN propagated.
#[test]
fn fused_linear_matches_burn() {
    use burn::nn::LinearConfig;
    type B = CpuBackend;
    let device = Default::default();
    for bias in [true, false] {
        let layer = LinearConfig::new(64, 48).with_bias(bias).init::<B>(&device);
        let check = |name: &str, ours: Vec<f32>, reference: Vec<f32>| {
            let err = rel_diff(&ours, &reference);
            assert!(err <= 1e-6, "linear {name} (bias {bias}): relative error {err:e}");
        };
        let x2 = Tensor::<B, 2>::random([130, 64], Distribution::Normal(0.0, 1.0), &device);
        check("rank 2", kernels::linear(&layer, x2.clone()).into_data().to_vec().unwrap(), layer.forward(x2).into_data().to_vec().unwrap());
        let x3 = Tensor::<B, 3>::random([3, 49, 64], Distribution::Normal(0.0, 1.0), &device);
        check(
            "rank 3",
            kernels::linear(&layer, x3.clone()).into_data().to_vec().unwrap(),
            layer.forward(x3.clone()).into_data().to_vec().unwrap(),
        );
        // A transposed (non-contiguous) input.
        let xt = x3.swap_dims(0, 1);
        check(
            "strided",
            kernels::linear(&layer, xt.clone()).into_data().to_vec().unwrap(),
            layer.forward(xt).into_data().to_vec().unwrap(),
        );
        // Channels-first activations seen as tokens (read in place), and a view of three row
        // groups (copied first).
        let nchw = Tensor::<B, 4>::random([2, 64, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        let tokens = nchw.permute([0, 2, 3, 1]).reshape([2, 15, 64]);
        check(
            "tokens",
            kernels::linear(&layer, tokens.clone()).into_data().to_vec().unwrap(),
            layer.forward(tokens).into_data().to_vec().unwrap(),
        );
        let x4 = Tensor::<B, 4>::random([2, 3, 4, 64], Distribution::Normal(0.0, 1.0), &device).permute([2, 1, 0, 3]);
        check(
            "3 groups",
            kernels::linear(&layer, x4.clone()).into_data().to_vec().unwrap(),
            layer.forward(x4).into_data().to_vec().unwrap(),
        );
        let x4 = Tensor::<B, 4>::random([2, 2, 3, 64], Distribution::Normal(0.0, 1.0), &device);
        let y4 = kernels::linear(&layer, x4.clone());
        assert_eq!(y4.dims(), [2, 2, 3, 48]);
        check("rank 4", y4.into_data().to_vec().unwrap(), layer.forward(x4).into_data().to_vec().unwrap());
    }
    let layer = LinearConfig::new(4, 3).init::<AD>(&device);
    dace::models::materialize(&layer);
    let x0 = Tensor::<AD, 3>::random([2, 5, 4], Distribution::Normal(0.0, 1.0), &device);
    let mut grads_of = Vec::new();
    for ours in [true, false] {
        let x = x0.clone().detach().require_grad();
        let y = if ours { kernels::linear(&layer, x.clone()) } else { layer.forward(x.clone()) };
        let grads = (y.clone() * y.detach()).sum().backward();
        let wg = layer.weight.val().grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        grads_of.push((x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(), wg));
    }
    assert!(grads_of[0] == grads_of[1], "linear gradients differ on autodiff");
    let layer = LinearConfig::new(2, 2).init::<B>(&device);
    let nan = Tensor::<B, 2>::from_data(TensorData::new(vec![f32::NAN, 1.0, 1.0, 1.0], [2, 2]), &device);
    let y: Vec<f32> = kernels::linear(&layer, nan).into_data().to_vec().unwrap();
    assert!(y[0].is_nan() && y[1].is_nan() && !y[2].is_nan(), "{y:?}");
}

/// The convolution's weight gradient sums its batch in a fixed order: the same inputs give the same
/// bits while other rayon work competes for the pool (as a regeneration between epochs does), so a
/// student trains to the same weights whatever else ran in the process.
#[test]
fn convolution_weight_gradient_is_bit_identical_under_concurrent_load() {
    use dace::kernels::conv_cpu::{weight_grad, ConvGeometry};
    use rayon::prelude::*;
    let g = ConvGeometry {
        batch: 96,
        in_channels: 6,
        height: 14,
        width: 14,
        out_channels: 12,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let [ho, wo] = g.out_size();
    let noise = |n: usize, salt: u32| -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ salt) as f32 / u32::MAX as f32 - 0.5).collect()
    };
    let x = noise(g.batch * g.in_channels * g.height * g.width, 7);
    let dy = noise(g.batch * g.out_channels * ho * wo, 11);
    let reference = weight_grad(&x, &dy, &g);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 1usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n = n % 5000 + 997;
                let v: f64 = (0..n * 100).into_par_iter().map(|i| (i as f64).sqrt()).sum();
                std::hint::black_box(v);
            }
        });
        for round in 0..40 {
            let again = weight_grad(&x, &dy, &g);
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same(&again.0, &reference.0) && same(&again.1, &reference.1), "weight gradient changed bits in round {round}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// Issue 18: the direct convolution (channels-last tiles, no im2col) against a float64 loop and
/// the im2col + GEMM path (which the baseline tier keeps): output widths that take tiles of 6, 7
/// and 8 pixels, with and without columns past the output, 1 to 3 blocks of 16 output channels (the last partial),
/// strides 1 and 2, one image (channel blocks or rows in parallel) and several (images in
/// parallel). The AVX2 and AVX-512 builds give the same bits; NaN reaches exactly the outputs
/// whose window holds it; beyond 128 channels the GEMM path runs.
#[test]
fn direct_convolution_matches_a_float64_loop_and_the_gemm_path() {
    use dace::kernels::conv_cpu::{self, ConvGeometry};
    use dace::kernels::conv_direct::{applies, forward};
    use dace::kernels::simd::{with_tier, Tier};
    let reference = |x: &[f32], w: &[f32], b: &[f32], g: &ConvGeometry| -> Vec<f64> {
        let [ho, wo] = g.out_size();
        let mut y = vec![0f64; g.batch * g.out_channels * ho * wo];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut s = b[o] as f64;
                        for c in 0..g.in_channels {
                            for ky in 0..g.kernel[0] {
                                for kx in 0..g.kernel[1] {
                                    let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                                    let ix = (ox * g.stride[1] + kx) as isize - g.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.height as isize || ix >= g.width as isize {
                                        continue;
                                    }
                                    let xv = x[((n * g.in_channels + c) * g.height + iy as usize) * g.width + ix as usize];
                                    let wv = w[((o * g.in_channels + c) * g.kernel[0] + ky) * g.kernel[1] + kx];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((n * g.out_channels + o) * ho + oy) * wo + ox] = s;
                    }
                }
            }
        }
        y
    };
    let values =
        |len: usize, salt: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7919 + salt * 131) % 2003) as f32 / 1001.5 - 1.0).collect() };
    // (batch, c_in, height, width, c_out, kernel, stride, padding)
    for (n, ci, h, w, co, k, s, p) in [
        (1, 4, 14, 14, 32, 3, 1, 1),
        (3, 1, 9, 13, 16, 3, 1, 1),
        (2, 33, 7, 7, 40, 3, 1, 1),
        (1, 128, 6, 19, 20, 3, 2, 1),
        (5, 8, 12, 12, 48, 3, 2, 0),
        (2, 3, 5, 31, 7, 5, 1, 2),
        (4, 16, 1, 1, 16, 3, 1, 1),
        (1, 16, 4, 16, 16, 3, 1, 1),
        // One image with one block: its rows in parallel.
        (1, 3, 9, 10, 16, 3, 1, 1),
        (1, 2, 5, 9, 7, 3, 1, 1),
    ] {
        let g = ConvGeometry {
            batch: n,
            in_channels: ci,
            height: h,
            width: w,
            out_channels: co,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        };
        let name = format!("conv {n}x{ci}x{h}x{w} -> {co}, k{k} s{s} p{p}");
        assert!(with_tier(Tier::Avx2, || applies(&g)).unwrap(), "{name}: the direct path does not take it");
        let (x, wt, b) = (values(n * ci * h * w, 1), values(co * ci * k * k, 2), values(co, 3));
        let truth = reference(&x, &wt, &b, &g);
        // On this thread's tier in a one-thread pool (the row kernels pick the tier of the
        // thread they run on), and on the default pool (images or channel blocks in parallel).
        let on = |tier: Tier| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            pool.install(|| with_tier(tier, || forward(&x, &wt, Some(&b), &g)))
        };
        let direct = forward(&x, &wt, Some(&b), &g);
        let gemm = conv_cpu::forward(&x, &wt, Some(&b), &g);
        let scale = (ci * k * k) as f64;
        for (label, ours) in [("direct", &direct), ("im2col + GEMM", &gemm)] {
            assert_eq!(ours.len(), truth.len(), "{name}: {label} length");
            let worst = nan_max(ours.iter().zip(&truth).map(|(&a, &t)| (a as f64 - t).abs() as f32));
            assert!(worst as f64 <= 2e-7 * scale, "{name}: {label} differs from the float64 loop by {worst:e}");
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for tier in [Tier::Avx2, Tier::Avx512] {
            if let Some(one_thread) = on(tier) {
                assert!(bits(&one_thread) == bits(&direct), "{name}: {tier:?} on one thread differs from the parallel run");
            }
        }
        let none = with_tier(Tier::Avx2, || forward(&x, &wt, None, &g)).unwrap();
        let without_bias: Vec<f64> = reference(&x, &wt, &vec![0.0; co], &g);
        let worst = nan_max(none.iter().zip(&without_bias).map(|(&a, &t)| (a as f64 - t).abs() as f32));
        assert!(worst <= 2e-7 * scale as f32, "{name}: without bias differs by {worst:e}");
    }
    // NaN in one input pixel reaches the outputs whose window covers it, and only those.
    let g =
        ConvGeometry { batch: 2, in_channels: 3, height: 8, width: 8, out_channels: 17, kernel: [3, 3], stride: [1, 1], padding: [1, 1] };
    let mut x = values(2 * 3 * 64, 4);
    x[64 + 3 * 8 + 5] = f32::NAN; // image 0, channel 1, (3, 5)
    let y = with_tier(Tier::Avx2, || forward(&x, &values(17 * 27, 5), None, &g)).unwrap();
    for (i, v) in y.iter().enumerate() {
        let (image, oy, ox) = (i / (17 * 64), i % 64 / 8, i % 8);
        let covered = image == 0 && oy.abs_diff(3) <= 1 && ox.abs_diff(5) <= 1;
        assert_eq!(v.is_nan(), covered, "output {i}: NaN {} where the window covers NaN {covered}", v.is_nan());
    }
    let wide = ConvGeometry { in_channels: 129, ..g };
    assert!(!with_tier(Tier::Avx2, || applies(&wide)).unwrap() && !with_tier(Tier::Baseline, || applies(&g)).unwrap());
}

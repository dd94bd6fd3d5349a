//! Every architecture runs forward on the CPU backend, and on wgpu (lavapipe in CI) with the same
//! weights giving the same outputs.

mod common;

use common::nan_max;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Distribution;
use dace::device::CpuBackend;
use dace::models::{trainable_params, Arch, ClassifierConfig, NormKind};
use dace::train::checkpoint::{model_from_bytes, model_to_bytes};

fn config(arch: Arch, channels: usize, size: usize) -> ClassifierConfig {
    ClassifierConfig::new(arch, channels, 10, [size, size])
}

#[test]
fn every_arch_gives_finite_logits_on_cpu() {
    let device = Default::default();
    for (arch, size) in [
        (Arch::Convnet3, 28),
        (Arch::Convnet4, 32),
        (Arch::Convnet5, 32),
        (Arch::Resnet18, 28),
        (Arch::Resnet18Imagenet, 32),
        (Arch::Resnet50Imagenet, 32),
    ] {
        for norm in [NormKind::Instance, NormKind::Batch, NormKind::None] {
            let cfg = config(arch, 3, size).with_norm(norm);
            let model = cfg.init::<CpuBackend>(&device);
            let x = Tensor::<CpuBackend, 4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
            let logits = model.forward(x);
            assert_eq!(logits.dims(), [2, 10], "{arch:?}");
            let values: Vec<f32> = logits.into_data().to_vec().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{arch:?} {norm:?}: {values:?}");
        }
    }
}

#[test]
fn parameter_counts_match_the_architectures() {
    let device = Default::default();
    // ConvNet-3 on 1x28x28: 3 convs (1->128, 128->128, 128->128) + norms + linear(128*3*3 -> 10).
    let convnet = config(Arch::Convnet3, 1, 28).init::<Autodiff<CpuBackend>>(&device);
    let expected = (128 * 9 + 128) + 2 * (128 * 128 * 9 + 128) + 3 * 2 * 128 + (128 * 9 * 10 + 10);
    assert_eq!(trainable_params(&convnet), expected);
    // ResNet-18 (ImageNet stem, 1000 classes) has 11,689,512 parameters in torchvision, plus
    // 2 x 4,800 batch-norm running statistics.
    let resnet = ClassifierConfig::new(Arch::Resnet18Imagenet, 3, 1000, [224, 224]).init::<Autodiff<CpuBackend>>(&device);
    assert_eq!(trainable_params(&resnet), 11_689_512);
    assert_eq!(resnet.num_params(), 11_689_512 + 9_600);
    // ResNet-50: 25,557,032 in torchvision, plus 2 x 26,560 running statistics.
    let resnet50 = ClassifierConfig::new(Arch::Resnet50Imagenet, 3, 1000, [224, 224]).init::<Autodiff<CpuBackend>>(&device);
    assert_eq!(trainable_params(&resnet50), 25_557_032);
    assert_eq!(resnet50.num_params(), 25_557_032 + 53_120);
}

#[test]
fn saved_weights_reproduce_the_model() {
    let device = Default::default();
    for arch in [Arch::Convnet3, Arch::Resnet18, Arch::Resnet50Imagenet] {
        let cfg = config(arch, 1, 16);
        let model = cfg.init::<CpuBackend>(&device);
        let copy = model_from_bytes::<CpuBackend>(&cfg, model_to_bytes(&model).unwrap(), std::path::Path::new("memory"), &device).unwrap();
        let x = Tensor::<CpuBackend, 4>::random([2, 1, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let a: Vec<f32> = model.forward(x.clone()).into_data().to_vec().unwrap();
        let b: Vec<f32> = copy.forward(x).into_data().to_vec().unwrap();
        assert_eq!(a, b, "{arch:?}");
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_cpu_with_the_same_weights() {
    // Without a Vulkan driver, one line naming the package instead of a panic in cubecl's thread.
    dace::device::check_wgpu().unwrap_or_else(|e| panic!("{e}"));
    use burn::backend::Wgpu;
    let cpu = Default::default();
    let gpu = burn::backend::wgpu::WgpuDevice::default();
    // Tiny shapes: lavapipe compiles every shader on the CPU.
    for (arch, channels, size, norm) in [
        (Arch::Convnet3, 1, 16, NormKind::Instance),
        (Arch::Convnet3, 3, 16, NormKind::Batch),
        (Arch::Convnet4, 3, 16, NormKind::None),
        (Arch::Convnet5, 1, 32, NormKind::Instance),
        (Arch::Resnet18, 3, 16, NormKind::Batch),
        (Arch::Resnet18Imagenet, 3, 32, NormKind::Batch),
    ] {
        let cfg = config(arch, channels, size).with_norm(norm);
        let model_cpu = cfg.init::<CpuBackend>(&cpu);
        let bytes = model_to_bytes(&model_cpu).unwrap();
        let model_gpu = model_from_bytes::<Wgpu>(&cfg, bytes, std::path::Path::new("memory"), &gpu).unwrap();
        let x = Tensor::<CpuBackend, 4>::random([2, channels, size, size], Distribution::Normal(0.0, 1.0), &cpu);
        let x_gpu = Tensor::<Wgpu, 4>::from_data(x.to_data(), &gpu);
        let a: Vec<f32> = model_cpu.forward(x).into_data().to_vec().unwrap();
        let b: Vec<f32> = model_gpu.forward(x_gpu).into_data().to_vec().unwrap();
        assert_eq!(a.len(), b.len());
        let worst = nan_max(a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x.abs().max(1.0)));
        assert!(worst <= 1e-4, "{arch:?} {norm:?}: cpu {a:?} vs wgpu {b:?} (worst {worst})");
    }
}

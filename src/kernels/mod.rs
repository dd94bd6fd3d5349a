//! Compute kernels and their glue to the models.
//!
//! Models call the functions here instead of burn's layers directly, so that a faster kernel for
//! one backend plugs in without touching any model. [`DaceBackend`] is the backend extension:
//! every backend dace runs on implements it, with burn's tensor ops as the portable default and
//! fused kernels where they pay (the CPU normalisation kernels of `norm_cpu`).

pub mod activation_cpu;
pub mod attention_cpu;
mod backend;
pub mod coeffs;
pub mod conformance;
pub mod conv_cpu;
pub mod conv_direct;
pub mod diffusion;
pub mod diffusion_ref;
pub mod matmul_cpu;
pub mod norm_cpu;
pub mod pool_cpu;
pub mod simd;

pub use backend::{generic, DaceBackend, KernelOps, TrainBackend};

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, InstanceNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, FloatDType, TensorPrimitive};

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(p: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// 2-D convolution with the parameters and options of `conv`.
pub fn conv2d<B: DaceBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        // Asymmetric or "same" padding: burn's layer handles it.
        _ => return conv.forward(x),
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let bias = conv.bias.as_ref().map(|b| prim(b.val()));
    tensor(B::dace_conv2d(prim(x), prim(conv.weight.val()), bias, options))
}

/// `avgpool2x2(relu(x))`, stride 2, floor mode: the end of every ConvNet block, fused.
pub fn relu_pool2<B: DaceBackend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    tensor(B::relu_pool2(prim(x)))
}

/// Instance norm (per image and channel) with the affine parameters of `norm`.
pub fn instance_norm<B: DaceBackend>(norm: &InstanceNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let channels = x.dims()[1];
    let device = x.device();
    let gamma = norm.gamma.as_ref().map(|g| g.val()).unwrap_or_else(|| Tensor::ones([channels], &device));
    let beta = norm.beta.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([channels], &device));
    tensor(B::instance_norm(prim(x), prim(gamma), prim(beta), norm.epsilon))
}

/// Group norm with the parameters of `norm` (identity affine when it has none): one fused op
/// with its own backward pass ([`DaceBackend::group_norm`]).
pub fn group_norm<B: DaceBackend>(norm: &burn::nn::GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let c = x.dims()[1];
    assert_eq!(c, norm.num_channels, "group norm over {} channels applied to {c}", norm.num_channels);
    let device = x.device();
    let gamma = norm.gamma.as_ref().map(|g| g.val()).unwrap_or_else(|| Tensor::ones([c], &device));
    let beta = norm.beta.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([c], &device));
    let dtype = x.dtype();
    if matches!(dtype, DType::F16 | DType::BF16) {
        // Half-precision activations: statistics over thousands of elements in f32, as PyTorch
        // computes them; the result goes back to the activations' type.
        let f32 = |t: Tensor<B, 1>| t.cast(FloatDType::F32);
        let y: Tensor<B, 4> =
            tensor(B::group_norm(prim(x.cast(FloatDType::F32)), prim(f32(gamma)), prim(f32(beta)), norm.num_groups, norm.epsilon));
        return y.cast(float_dtype(dtype));
    }
    tensor(B::group_norm(prim(x), prim(gamma), prim(beta), norm.num_groups, norm.epsilon))
}

/// `silu(group_norm(x))` with the parameters of `norm`: one pass on the CPU backend. Half-precision
/// activations keep the composed form (group norm in f32, SiLU in the activations' type), so
/// their results do not change with this fusion.
pub fn group_norm_silu<B: DaceBackend>(norm: &burn::nn::GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if matches!(x.dtype(), DType::F16 | DType::BF16) {
        return burn::tensor::activation::silu(group_norm(norm, x));
    }
    let c = x.dims()[1];
    assert_eq!(c, norm.num_channels, "group norm over {} channels applied to {c}", norm.num_channels);
    let device = x.device();
    let gamma = norm.gamma.as_ref().map(|g| g.val()).unwrap_or_else(|| Tensor::ones([c], &device));
    let beta = norm.beta.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([c], &device));
    tensor(B::group_norm_silu(prim(x), prim(gamma), prim(beta), norm.num_groups, norm.epsilon))
}

/// GEGLU over the last axis: `h * gelu(gate)` for `x = [h | gate]` ([`DaceBackend::geglu`]).
pub fn geglu<B: DaceBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::geglu(prim(x)))
}

/// `layer.forward(x)` of a `Linear` layer, through [`DaceBackend::dace_linear`].
pub fn linear<B: DaceBackend, const D: usize>(layer: &burn::nn::Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    if D < 2 {
        return layer.forward(x);
    }
    let bias = layer.bias.as_ref().map(|b| prim(b.val()));
    tensor(B::dace_linear(prim(x), prim(layer.weight.val()), bias))
}

/// Multi-head attention of `[batch, tokens, heads * d]` inputs ([`DaceBackend::attention`]).
pub fn attention<B: DaceBackend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    tensor(B::multi_head_attention(prim(q), prim(k), prim(v), heads))
}

/// Batch norm: batch statistics (and a running-average update) while training, running
/// statistics otherwise, like `BatchNorm::forward`.
pub fn batch_norm<B: DaceBackend>(norm: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if !B::ad_enabled(&x.device()) {
        // Fold the running statistics into one per-channel affine map.
        let scale = norm.gamma.val() * norm.running_var.value().add_scalar(norm.epsilon).sqrt().recip();
        let shift = norm.beta.val() - norm.running_mean.value() * scale.clone();
        return tensor(B::channel_affine(prim(x), prim(scale), prim(shift)));
    }
    let (y, mean, var) = B::batch_norm_train(prim(x), prim(norm.gamma.val()), prim(norm.beta.val()), norm.epsilon);
    let (mean, var): (Tensor<B, 1>, Tensor<B, 1>) = (tensor(mean), tensor(var));
    let m = norm.momentum;
    let running_mean = norm.running_mean.value_sync().mul_scalar(1.0 - m).add(mean.detach().mul_scalar(m));
    let running_var = norm.running_var.value_sync().mul_scalar(1.0 - m).add(var.detach().mul_scalar(m));
    norm.running_mean.update(running_mean.detach());
    norm.running_var.update(running_var.detach());
    tensor(y)
}

/// The float type of a tensor's [`DType`] (f32 for anything that is not a float type).
pub fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

//! The backend extension: fused normalisation ops with their own backward pass.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{DType, TensorPrimitive};

use super::activation_cpu;
use super::attention_cpu::{self, AttentionShape};
use super::conv_cpu::{self, ConvGeometry};
use super::conv_direct;
use super::matmul_cpu::{self, RowsLayout};
use super::norm_cpu::{self, Stats};
use super::pool_cpu;

/// Ops the models need beyond burn's, on every backend dace runs on.
pub trait DaceBackend: Backend {
    /// 2-D convolution (`weight [C_out, C_in / groups, kh, kw]`), differentiable on autodiff.
    fn dace_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// Affine instance norm of `x` `[N, C, H, W]` with `gamma`, `beta` `[C]`.
    fn instance_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;

    /// Affine group norm of `x` `[N, C, H, W]` (statistics per image and group of `C / groups`
    /// consecutive channels, biased variance) with per-channel `gamma`, `beta` `[C]`.
    fn group_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, eps: f64) -> FloatTensor<Self>;

    /// `x * scale[c] + shift[c]` per channel of `x [N, C, H, W]`: batch norm in inference mode.
    fn channel_affine(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::channel_affine::<Self>(x, scale, shift)
    }

    /// Batch norm with batch statistics. Returns the output and the (untracked) per-channel batch
    /// mean and biased variance, for the running estimates.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `avgpool2x2(relu(x))` with stride 2 in floor mode, for `x [N, C, H, W]`.
    fn relu_pool2(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `silu(group_norm(x))` (see [`DaceBackend::group_norm`]). The default composes the two, so
    /// on autodiff it trains through the fused group norm's own backward.
    fn group_norm_silu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        generic::silu::<Self>(Self::group_norm(x, gamma, beta, groups, eps))
    }

    /// GEGLU over the last axis of `x [.., 2w]`: `h * gelu(gate)` with `[h | gate]` its halves
    /// (erf GELU, as diffusers' `GEGLU`). Returns `[.., w]`.
    fn geglu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::geglu::<Self>(x)
    }

    /// Multi-head attention `softmax(q k^T / sqrt(d)) v` of `q [B, N, heads * d]` and
    /// `k`, `v [B, M, heads * d]`, head `h` owning channels `h*d .. (h+1)*d`. Returns `[B, N, heads * d]`.
    fn multi_head_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        generic::attention::<Self>(q, k, v, heads)
    }

    /// `x [.., d_in] weight [d_in, d_out] + bias [d_out]`, burn's `Linear` (its op by default,
    /// differentiable on autodiff).
    fn dace_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::linear(x, weight, bias)
    }
}

/// A backend that trains: autodiff over a backend that has the kernels too (for evaluation).
pub trait TrainBackend: AutodiffBackend<InnerBackend: DaceBackend> + DaceBackend {}
impl<B: AutodiffBackend<InnerBackend: DaceBackend> + DaceBackend> TrainBackend for B {}

/// Forward kernels that also return what their backward needs, and the backward kernels.
/// The defaults compose burn tensor ops (any backend); the CPU backend overrides them with the
/// fused kernels of `norm_cpu`.
pub trait KernelOps: Backend {
    fn channel_affine_fwd(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::channel_affine::<Self>(x, scale, shift)
    }

    /// Convolution forward; burn's own kernel by default.
    fn conv2d_fwd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::conv2d(x, weight, bias, options)
    }
    /// Convolution backward: `(dx, dweight, dbias)`; burn's own kernels by default.
    fn conv2d_bwd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, Option<FloatTensor<Self>>) {
        burn_conv2d_bwd::<Self>(x, weight, bias, dy, options)
    }

    /// `(y, mean [N*C], rstd [N*C])`
    fn instance_norm_fwd(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> [FloatTensor<Self>; 3] {
        generic::instance_norm_fwd::<Self>(x, gamma, beta, eps)
    }
    /// `(dx, dgamma, dbeta)`
    fn instance_norm_bwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        generic::norm_bwd::<Self>(x, gamma, mean, rstd, dy, false)
    }
    /// `(y, mean [N*G], rstd [N*G])`
    fn group_norm_fwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        generic::group_norm_fwd::<Self>(x, gamma, beta, groups, eps)
    }
    /// `(dx, dgamma, dbeta)`
    fn group_norm_bwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        groups: usize,
    ) -> [FloatTensor<Self>; 3] {
        generic::group_norm_bwd::<Self>(x, gamma, mean, rstd, dy, groups)
    }
    /// `(y, mean [C], rstd [C], biased var [C])`
    fn batch_norm_fwd(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> [FloatTensor<Self>; 4] {
        generic::batch_norm_fwd::<Self>(x, gamma, beta, eps)
    }
    fn batch_norm_bwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        generic::norm_bwd::<Self>(x, gamma, mean, rstd, dy, true)
    }

    fn relu_pool2_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::relu_pool2::<Self>(x)
    }

    /// `silu(group_norm(x))`, inference only (autodiff composes the tracked ops instead).
    fn group_norm_silu_fwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed_group_norm_silu::<Self>(x, gamma, beta, groups, eps)
    }
    fn geglu_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::geglu::<Self>(x)
    }
    fn attention_fwd(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        generic::attention::<Self>(q, k, v, heads)
    }
    fn linear_fwd(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::linear(x, weight, bias)
    }
    /// Gradient of `relu_pool2` with respect to its input `x`, given the output gradient `dy`.
    fn relu_pool2_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::relu_pool2_bwd::<Self>(x, dy)
    }
}

/// `silu(group_norm_fwd(x))` in two ops: the default, and the CPU kernel's fallback.
fn composed_group_norm_silu<B: KernelOps>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    groups: usize,
    eps: f64,
) -> FloatTensor<B> {
    let [y, _, _] = B::group_norm_fwd(x, gamma, beta, groups, eps);
    generic::silu::<B>(y)
}

/// burn's own convolution gradients: `(dx, dweight, dbias)`.
fn burn_conv2d_bwd<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    dy: FloatTensor<B>,
    options: ConvOptions<2>,
) -> (FloatTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>) {
    let dx = B::conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), options.clone());
    let dw = B::conv2d_weight_backward(x.clone(), weight, dy.clone(), options);
    let db = bias.map(|b| B::conv2d_bias_backward(x, b, dy));
    (dx, dw, db)
}

macro_rules! plain_backend {
    ($($B:ty),* $(,)?) => {$(
        impl DaceBackend for $B {
            fn dace_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Option<FloatTensor<Self>>, options: ConvOptions<2>) -> FloatTensor<Self> {
                <Self as KernelOps>::conv2d_fwd(x, weight, bias, options)
            }
            fn channel_affine(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self> {
                <Self as KernelOps>::channel_affine_fwd(x, scale, shift)
            }
            fn instance_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
                let [y, _, _] = <Self as KernelOps>::instance_norm_fwd(x, gamma, beta, eps);
                y
            }
            fn group_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, eps: f64) -> FloatTensor<Self> {
                let [y, _, _] = <Self as KernelOps>::group_norm_fwd(x, gamma, beta, groups, eps);
                y
            }
            fn batch_norm_train(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                let [y, mean, _, var] = <Self as KernelOps>::batch_norm_fwd(x, gamma, beta, eps);
                (y, mean, var)
            }
            fn relu_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
                <Self as KernelOps>::relu_pool2_fwd(x)
            }
            fn group_norm_silu(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, eps: f64) -> FloatTensor<Self> {
                <Self as KernelOps>::group_norm_silu_fwd(x, gamma, beta, groups, eps)
            }
            fn geglu(x: FloatTensor<Self>) -> FloatTensor<Self> {
                <Self as KernelOps>::geglu_fwd(x)
            }
            fn multi_head_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
                <Self as KernelOps>::attention_fwd(q, k, v, heads)
            }
            fn dace_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
                <Self as KernelOps>::linear_fwd(x, weight, bias)
            }
        }
    )*};
}

plain_backend!(burn::backend::Flex, burn::backend::NdArray);
impl KernelOps for burn::backend::NdArray {}
#[cfg(feature = "wgpu")]
plain_backend!(burn::backend::Wgpu);
#[cfg(feature = "wgpu")]
impl KernelOps for burn::backend::Wgpu {}
#[cfg(feature = "cuda")]
plain_backend!(burn::backend::Cuda);
#[cfg(feature = "cuda")]
impl KernelOps for burn::backend::Cuda {}
#[cfg(feature = "candle")]
plain_backend!(burn::backend::Candle);
#[cfg(feature = "candle")]
impl KernelOps for burn::backend::Candle {}

#[derive(Debug)]
struct InstanceNormBackward;
#[derive(Debug)]
struct BatchNormBackward;

type NormState<B> = [FloatTensor<B>; 4]; // x, gamma, mean, rstd

fn backward_norm<B: KernelOps>(ops: Ops<NormState<B>, 3>, grads: &mut Gradients, batch: bool) {
    let [node_x, node_gamma, node_beta] = ops.parents;
    let dy = grads.consume::<B>(&ops.node);
    let [x, gamma, mean, rstd] = ops.state;
    let [dx, dgamma, dbeta] =
        if batch { B::batch_norm_bwd(x, gamma, mean, rstd, dy) } else { B::instance_norm_bwd(x, gamma, mean, rstd, dy) };
    for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
        if let Some(node) = node {
            grads.register::<B>(node.id, grad);
        }
    }
}

impl<B: KernelOps> Backward<B, 3> for InstanceNormBackward {
    type State = NormState<B>;
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_norm::<B>(ops, grads, false);
    }
}

impl<B: KernelOps> Backward<B, 3> for BatchNormBackward {
    type State = NormState<B>;
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_norm::<B>(ops, grads, true);
    }
}

#[derive(Debug)]
struct GroupNormBackward;

impl<B: KernelOps> Backward<B, 3> for GroupNormBackward {
    type State = (NormState<B>, usize); // (x, gamma, mean, rstd), groups
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let ([x, gamma, mean, rstd], groups) = ops.state;
        let [dx, dgamma, dbeta] = B::group_norm_bwd(x, gamma, mean, rstd, dy, groups);
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct ReluPoolBackward;

impl<B: KernelOps> Backward<B, 1> for ReluPoolBackward {
    type State = FloatTensor<B>;
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [node_x] = ops.parents;
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::relu_pool2_bwd(ops.state, dy));
        }
    }
}

#[derive(Debug)]
struct ConvBackward;
#[derive(Debug)]
struct ConvNoBiasBackward;

type ConvState<B> = (FloatTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>, ConvOptions<2>);

fn backward_conv<B: KernelOps, const N: usize>(ops: Ops<ConvState<B>, N>, grads: &mut Gradients) {
    let dy = grads.consume::<B>(&ops.node);
    let (x, weight, bias, options) = ops.state;
    let (dx, dw, db) = B::conv2d_bwd(x, weight, bias, dy, options);
    let mut parents = ops.parents.into_iter();
    let grads_in = [Some(dx), Some(dw), db];
    for (node, grad) in parents.by_ref().zip(grads_in) {
        if let (Some(node), Some(grad)) = (node, grad) {
            grads.register::<B>(node.id, grad);
        }
    }
}

impl<B: KernelOps> Backward<B, 3> for ConvBackward {
    type State = ConvState<B>;
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_conv::<B, 3>(ops, grads);
    }
}

impl<B: KernelOps> Backward<B, 2> for ConvNoBiasBackward {
    type State = ConvState<B>;
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_conv::<B, 2>(ops, grads);
    }
}

impl<B: KernelOps + DaceBackend, C: CheckpointStrategy> DaceBackend for Autodiff<B, C> {
    fn dace_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let y = B::conv2d_fwd(x.primitive.clone(), weight.primitive.clone(), bias.as_ref().map(|b| b.primitive.clone()), options.clone());
        match bias {
            Some(bias) => {
                match ConvBackward.prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()]).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive, Some(bias.primitive), options), y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                }
            }
            None => match ConvNoBiasBackward.prepare::<C>([x.node.clone(), weight.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive, None, options), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            },
        }
    }

    fn instance_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let [y, mean, rstd] = B::instance_norm_fwd(x.primitive.clone(), gamma.primitive.clone(), beta.primitive.clone(), eps);
        match InstanceNormBackward.prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish([x.primitive, gamma.primitive, mean, rstd], y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn group_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, eps: f64) -> FloatTensor<Self> {
        let [y, mean, rstd] = B::group_norm_fwd(x.primitive.clone(), gamma.primitive.clone(), beta.primitive.clone(), groups, eps);
        match GroupNormBackward.prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(([x.primitive, gamma.primitive, mean, rstd], groups), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [y, mean, rstd, var] = B::batch_norm_fwd(x.primitive.clone(), gamma.primitive.clone(), beta.primitive.clone(), eps);
        let y = match BatchNormBackward.prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish([x.primitive, gamma.primitive, mean.clone(), rstd], y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, Self::from_inner(mean), Self::from_inner(var))
    }

    fn relu_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = B::relu_pool2_fwd(x.primitive.clone());
        match ReluPoolBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(x.primitive, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// The fused CPU kernels on burn's Flex backend (f32; other dtypes take the generic path).
impl KernelOps for burn::backend::Flex {
    fn channel_affine_fwd(x: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some([n, c, h, w]) = flex::dims4_f32(&x) else {
            return generic::channel_affine::<Self>(x, scale, shift);
        };
        let (xs, ss, bs) = (flex::contiguous(&x), flex::contiguous(&scale), flex::contiguous(&shift));
        let y = norm_cpu::channel_affine(flex::slice(&xs), flex::slice(&ss), flex::slice(&bs), c, h * w);
        flex::tensor(y, vec![n, c, h, w])
    }
    fn conv2d_fwd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let Some(g) = flex::conv_geometry(&x, &weight, &options) else {
            return <Self as ModuleOps<Self>>::conv2d(x, weight, bias, options);
        };
        let (xs, ws) = (flex::contiguous(&x), flex::contiguous(&weight));
        let bs = bias.as_ref().map(flex::contiguous);
        let (xs, ws, bs) = (flex::slice(&xs), flex::slice(&ws), bs.as_ref().map(flex::slice));
        // Small channel counts without im2col where the CPU has fused multiply-adds.
        let y = if conv_direct::applies(&g) { conv_direct::forward(xs, ws, bs, &g) } else { conv_cpu::forward(xs, ws, bs, &g) };
        let [ho, wo] = g.out_size();
        flex::tensor(y, vec![g.batch, g.out_channels, ho, wo])
    }

    fn conv2d_bwd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let Some(g) = flex::conv_geometry(&x, &weight, &options) else {
            return burn_conv2d_bwd::<Self>(x, weight, bias, dy, options);
        };
        let (xs, ws, dys) = (flex::contiguous(&x), flex::contiguous(&weight), flex::contiguous(&dy));
        let dx = conv_cpu::input_grad(flex::slice(&dys), flex::slice(&ws), &g);
        let (dw, db) = conv_cpu::weight_grad(flex::slice(&xs), flex::slice(&dys), &g);
        let w_shape = weight.layout().shape().to_vec();
        (
            flex::tensor(dx, vec![g.batch, g.in_channels, g.height, g.width]),
            flex::tensor(dw, w_shape),
            bias.map(|_| flex::tensor(db, vec![g.out_channels])),
        )
    }

    fn instance_norm_fwd(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> [FloatTensor<Self>; 3] {
        let Some([n, c, h, w]) = flex::dims4_f32(&x) else {
            return generic::instance_norm_fwd::<Self>(x, gamma, beta, eps);
        };
        let (xs, gs, bs) = (flex::contiguous(&x), flex::contiguous(&gamma), flex::contiguous(&beta));
        let mut y = vec![0f32; n * c * h * w];
        let stats = norm_cpu::instance_norm_forward(flex::slice(&xs), flex::slice(&gs), flex::slice(&bs), c, h * w, eps, &mut y);
        let [mean, rstd] = flex::stats_tensors(&stats);
        [flex::tensor(y, vec![n, c, h, w]), mean, rstd]
    }

    fn instance_norm_bwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let Some([_, c, h, w]) = flex::dims4_f32(&x) else {
            return generic::norm_bwd::<Self>(x, gamma, mean, rstd, dy, false);
        };
        let (xs, gs, dys) = (flex::contiguous(&x), flex::contiguous(&gamma), flex::contiguous(&dy));
        let stats = flex::stats_from(&mean, &rstd);
        let (dx, dgamma, dbeta) = norm_cpu::instance_norm_backward(flex::slice(&xs), flex::slice(&gs), &stats, flex::slice(&dys), c, h * w);
        [flex::tensor(dx, x.layout().shape().to_vec()), flex::tensor(dgamma, vec![c]), flex::tensor(dbeta, vec![c])]
    }

    fn group_norm_fwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        let Some([n, c, h, w]) = flex::dims4_f32(&x).filter(|d| groups > 0 && d[1].is_multiple_of(groups) && d[2] * d[3] > 0) else {
            return generic::group_norm_fwd::<Self>(x, gamma, beta, groups, eps);
        };
        let (xs, gs, bs) = (flex::contiguous(&x), flex::contiguous(&gamma), flex::contiguous(&beta));
        let mut y = vec![0f32; n * c * h * w];
        let stats = norm_cpu::group_norm_forward(flex::slice(&xs), flex::slice(&gs), flex::slice(&bs), c, groups, h * w, eps, &mut y);
        let [mean, rstd] = flex::stats_tensors(&stats);
        [flex::tensor(y, vec![n, c, h, w]), mean, rstd]
    }

    fn group_norm_bwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        groups: usize,
    ) -> [FloatTensor<Self>; 3] {
        let Some([n, c, h, w]) = flex::dims4_f32(&x).filter(|d| groups > 0 && d[1].is_multiple_of(groups) && d[2] * d[3] > 0) else {
            return generic::group_norm_bwd::<Self>(x, gamma, mean, rstd, dy, groups);
        };
        let (xs, gs, dys) = (flex::contiguous(&x), flex::contiguous(&gamma), flex::contiguous(&dy));
        let stats = flex::stats_from(&mean, &rstd);
        let (dx, dgamma, dbeta) =
            norm_cpu::group_norm_backward(flex::slice(&xs), flex::slice(&gs), &stats, flex::slice(&dys), c, groups, h * w);
        [flex::tensor(dx, vec![n, c, h, w]), flex::tensor(dgamma, vec![c]), flex::tensor(dbeta, vec![c])]
    }

    fn batch_norm_fwd(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> [FloatTensor<Self>; 4] {
        let Some([n, c, h, w]) = flex::dims4_f32(&x) else {
            return generic::batch_norm_fwd::<Self>(x, gamma, beta, eps);
        };
        let (xs, gs, bs) = (flex::contiguous(&x), flex::contiguous(&gamma), flex::contiguous(&beta));
        let mut y = vec![0f32; n * c * h * w];
        let (stats, var) = norm_cpu::batch_norm_forward(flex::slice(&xs), flex::slice(&gs), flex::slice(&bs), n, c, h * w, eps, &mut y);
        let [mean, rstd] = flex::stats_tensors(&stats);
        [flex::tensor(y, vec![n, c, h, w]), mean, rstd, flex::tensor(var, vec![c])]
    }

    fn batch_norm_bwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let Some([n, c, h, w]) = flex::dims4_f32(&x) else {
            return generic::norm_bwd::<Self>(x, gamma, mean, rstd, dy, true);
        };
        let (xs, gs, dys) = (flex::contiguous(&x), flex::contiguous(&gamma), flex::contiguous(&dy));
        let stats = flex::stats_from(&mean, &rstd);
        let (dx, dgamma, dbeta) = norm_cpu::batch_norm_backward(flex::slice(&xs), flex::slice(&gs), &stats, flex::slice(&dys), n, c, h * w);
        [flex::tensor(dx, vec![n, c, h, w]), flex::tensor(dgamma, vec![c]), flex::tensor(dbeta, vec![c])]
    }

    fn relu_pool2_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some([n, c, h, w]) = flex::dims4_f32(&x) else {
            return generic::relu_pool2::<Self>(x);
        };
        let xs = flex::contiguous(&x);
        let (ho, wo) = pool_cpu::pooled(h, w);
        flex::tensor(pool_cpu::relu_pool_forward(flex::slice(&xs), h, w), vec![n, c, ho, wo])
    }

    fn relu_pool2_bwd(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some([n, c, h, w]) = flex::dims4_f32(&x) else {
            return generic::relu_pool2_bwd::<Self>(x, dy);
        };
        let (xs, dys) = (flex::contiguous(&x), flex::contiguous(&dy));
        flex::tensor(pool_cpu::relu_pool_backward(flex::slice(&xs), flex::slice(&dys), h, w), vec![n, c, h, w])
    }

    fn group_norm_silu_fwd(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        let Some([n, c, h, w]) = flex::dims4_f32(&x).filter(|d| groups > 0 && d[1].is_multiple_of(groups) && d[2] * d[3] > 0) else {
            return composed_group_norm_silu::<Self>(x, gamma, beta, groups, eps);
        };
        let (xs, gs, bs) = (flex::contiguous(&x), flex::contiguous(&gamma), flex::contiguous(&beta));
        let mut y = vec![0f32; n * c * h * w];
        norm_cpu::group_norm_silu_forward(flex::slice(&xs), flex::slice(&gs), flex::slice(&bs), c, groups, h * w, eps, &mut y);
        flex::tensor(y, vec![n, c, h, w])
    }

    fn geglu_fwd(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = x.layout().shape().to_vec();
        let Some(&last) = shape.last().filter(|&&l| x.dtype() == DType::F32 && l % 2 == 0 && l > 0) else {
            return generic::geglu::<Self>(x);
        };
        let xs = flex::contiguous(&x);
        let mut out_shape = shape;
        *out_shape.last_mut().expect("non-empty shape") = last / 2;
        flex::tensor(activation_cpu::geglu(flex::slice(&xs), last / 2), out_shape)
    }

    fn attention_fwd(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let dims3 = |t: &FloatTensor<Self>| {
            let s = t.layout().shape();
            (t.dtype() == DType::F32 && s.len() == 3).then(|| [s[0], s[1], s[2]])
        };
        let shape = match (dims3(&q), dims3(&k), dims3(&v)) {
            (Some([b, n, inner]), Some([bk, m, ik]), Some(vd))
                if bk == b && ik == inner && vd == [b, m, inner] && heads > 0 && inner % heads == 0 =>
            {
                AttentionShape { batch: b, queries: n, keys: m, heads, head_dim: inner / heads }
            }
            _ => return generic::attention::<Self>(q, k, v, heads),
        };
        let (qs, ks, vs) = (flex::contiguous(&q), flex::contiguous(&k), flex::contiguous(&v));
        let o = attention_cpu::attention(flex::slice(&qs), flex::slice(&ks), flex::slice(&vs), shape);
        flex::tensor(o, vec![shape.batch, shape.queries, shape.heads * shape.head_dim])
    }

    fn linear_fwd(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        let mut shape = x.layout().shape().to_vec();
        let w = weight.layout().shape().to_vec();
        let f32s = x.dtype() == DType::F32 && weight.dtype() == DType::F32 && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
        let fits = w.len() == 2
            && shape.len() >= 2
            && shape.last() == Some(&w[0])
            && bias.as_ref().is_none_or(|b| b.layout().shape().to_vec() == [w[1]]);
        if !(f32s && fits) {
            return <Self as ModuleOps<Self>>::linear(x, weight, bias);
        }
        let (ws, bs) = (flex::contiguous(&weight), bias.as_ref().map(flex::contiguous));
        let (ws, bs) = (flex::slice(&ws), bs.as_ref().map(flex::slice));
        let y = match flex::rows_layout(&x) {
            Some(layout) => matmul_cpu::linear(x.storage::<f32>(), layout, ws, bs, w[0], w[1]),
            None => {
                let rows = shape[..shape.len() - 1].iter().product();
                matmul_cpu::linear(flex::slice(&flex::contiguous(&x)), RowsLayout::contiguous(rows, w[0]), ws, bs, w[0], w[1])
            }
        };
        *shape.last_mut().expect("rank >= 2") = w[1];
        flex::tensor(y, shape)
    }
}

/// Access to Flex tensors as f32 slices.
mod flex {
    use burn::backend::flex::FlexTensor;
    use burn::tensor::{DType, TensorData};

    use super::{ConvGeometry, ConvOptions, RowsLayout, Stats};

    pub fn dims4_f32(t: &FlexTensor) -> Option<[usize; 4]> {
        let shape = t.layout().shape();
        (t.dtype() == DType::F32 && shape.len() == 4).then(|| [shape[0], shape[1], shape[2], shape[3]])
    }

    pub fn contiguous(t: &FlexTensor) -> FlexTensor {
        if t.is_contiguous() && t.layout().start_offset() == 0 {
            t.clone()
        } else {
            t.to_contiguous()
        }
    }

    /// The input of a linear layer (`[.., d_in]`, f32) as at most two levels of rows read in
    /// place: leading axes merged where their strides allow, `None` when more than two groups
    /// remain or a stride is negative (then the caller copies).
    pub fn rows_layout(t: &FlexTensor) -> Option<RowsLayout> {
        let layout = t.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        let last = shape.num_dims().checked_sub(1)?;
        if !layout.has_positive_strides() {
            return None;
        }
        // (size, stride) of the row axes, outermost first, size-1 axes dropped, mergeable
        // neighbours merged.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for i in 0..last {
            let (size, stride) = (shape[i], strides[i] as usize);
            if size == 1 {
                continue;
            }
            match groups.last_mut() {
                Some((outer, outer_stride)) if *outer_stride == stride * size => {
                    *outer *= size;
                    *outer_stride = stride;
                }
                _ => groups.push((size, stride)),
            }
        }
        let column = strides[last] as usize;
        let (batches, batch_stride, rows, row_stride) = match groups[..] {
            [] => (1, 0, 1, 0),
            [(rows, stride)] => (1, 0, rows, stride),
            [(batches, batch_stride), (rows, stride)] => (batches, batch_stride, rows, stride),
            _ => return None,
        };
        Some(RowsLayout { offset: layout.start_offset(), batches, batch_stride, rows, strides: [row_stride, column] })
    }

    pub fn slice(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("contiguous f32 tensor")
    }

    pub fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// The geometry of a convolution dace's CPU kernel handles (f32, groups 1, no dilation).
    pub fn conv_geometry(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<ConvGeometry> {
        let [n, c, h, w] = dims4_f32(x)?;
        let [co, ci, kh, kw] = dims4_f32(weight)?;
        let ok = options.groups == 1
            && options.dilation == [1, 1]
            && ci == c
            && h + 2 * options.padding[0] >= kh
            && w + 2 * options.padding[1] >= kw;
        ok.then_some(ConvGeometry {
            batch: n,
            in_channels: c,
            height: h,
            width: w,
            out_channels: co,
            kernel: [kh, kw],
            stride: options.stride,
            padding: options.padding,
        })
    }

    pub fn stats_tensors(stats: &[Stats]) -> [FlexTensor; 2] {
        let n = stats.len();
        [tensor(stats.iter().map(|s| s.mean).collect(), vec![n]), tensor(stats.iter().map(|s| s.rstd).collect(), vec![n])]
    }

    pub fn stats_from(mean: &FlexTensor, rstd: &FlexTensor) -> Vec<Stats> {
        let (mean, rstd) = (contiguous(mean), contiguous(rstd));
        slice(&mean).iter().zip(slice(&rstd)).map(|(&mean, &rstd)| Stats { mean, rstd }).collect()
    }
}

/// Portable implementations from burn tensor ops (the reference the fused kernels are tested
/// against, and the path of the GPU backends).
pub mod generic {
    use super::*;

    pub fn silu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        burn::tensor::activation::silu(t::<B, 4>(x)).into_primitive().tensor()
    }

    /// `h * gelu(gate)` over the halves of the last axis (any rank up to 4).
    pub fn geglu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        fn halves<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
            let [h, gate] = x.chunk(2, D - 1).try_into().expect("two halves");
            (h * burn::tensor::activation::gelu(gate)).into_primitive().tensor()
        }
        match burn::tensor::TensorMetadata::rank(&x) {
            2 => halves(t::<B, 2>(x)),
            3 => halves(t::<B, 3>(x)),
            _ => halves(t::<B, 4>(x)),
        }
    }

    /// burn's attention on `[B, heads, tokens, d]` views of the `[B, tokens, heads * d]` inputs.
    pub fn attention<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, heads: usize) -> FloatTensor<B> {
        use burn::tensor::module::attention;
        use burn::tensor::ops::AttentionModuleOptions;
        let (q, k, v) = (t::<B, 3>(q), t::<B, 3>(k), t::<B, 3>(v));
        let [b, n, inner] = q.dims();
        let m = k.dims()[1];
        let d = inner / heads;
        let split = |x: Tensor<B, 3>, len: usize| x.reshape([b, len, heads, d]).swap_dims(1, 2);
        let o = attention(split(q, n), split(k, m), split(v, m), None, None, AttentionModuleOptions::default());
        o.swap_dims(1, 2).reshape([b, n, inner]).into_primitive().tensor()
    }

    fn t<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(p))
    }

    /// `x [N, C, H, W]` as `[N, C, H*W]`, gamma/beta as `[1, C, 1]`.
    fn shaped<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>) -> (Tensor<B, 3>, Tensor<B, 3>, [usize; 4]) {
        let x: Tensor<B, 4> = t(x);
        let dims = x.dims();
        let [n, c, h, w] = dims;
        (x.reshape([n, c, h * w]), t::<B, 1>(gamma).reshape([1, c, 1]), dims)
    }

    pub fn channel_affine<B: Backend>(x: FloatTensor<B>, scale: FloatTensor<B>, shift: FloatTensor<B>) -> FloatTensor<B> {
        let x: Tensor<B, 4> = t(x);
        let c = x.dims()[1];
        let y = x * t::<B, 1>(scale).reshape([1, c, 1, 1]) + t::<B, 1>(shift).reshape([1, c, 1, 1]);
        y.into_primitive().tensor()
    }

    pub fn instance_norm_fwd<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, beta: FloatTensor<B>, eps: f64) -> [FloatTensor<B>; 3] {
        let (x, gamma, dims) = shaped::<B>(x, gamma);
        let [n, c, _, _] = dims;
        let mean = x.clone().mean_dim(2);
        let var = (x.clone() - mean.clone()).square().mean_dim(2);
        let rstd = var.add_scalar(eps).sqrt().recip();
        let y = (x - mean.clone()) * rstd.clone() * gamma + t::<B, 1>(beta).reshape([1, c, 1]);
        [
            y.reshape(dims).into_primitive().tensor(),
            mean.reshape([n * c]).into_primitive().tensor(),
            rstd.reshape([n * c]).into_primitive().tensor(),
        ]
    }

    /// Group norm: statistics over `[N, G, C/G * H * W]`, affine per channel.
    pub fn group_norm_fwd<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        beta: FloatTensor<B>,
        groups: usize,
        eps: f64,
    ) -> [FloatTensor<B>; 3] {
        let (x, gamma, dims) = shaped::<B>(x, gamma);
        let [n, c, h, w] = dims;
        assert!(groups > 0 && c % groups == 0, "group norm: {c} channels in {groups} groups");
        let xg = x.reshape([n, groups, (c / groups) * h * w]);
        let mean = xg.clone().mean_dim(2);
        let var = (xg.clone() - mean.clone()).square().mean_dim(2);
        let rstd = var.add_scalar(eps).sqrt().recip();
        let xhat = ((xg - mean.clone()) * rstd.clone()).reshape([n, c, h * w]);
        let y = xhat * gamma + t::<B, 1>(beta).reshape([1, c, 1]);
        [
            y.reshape(dims).into_primitive().tensor(),
            mean.reshape([n * groups]).into_primitive().tensor(),
            rstd.reshape([n * groups]).into_primitive().tensor(),
        ]
    }

    /// Group norm backward: `(dx, dgamma, dbeta)`.
    pub fn group_norm_bwd<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        mean: FloatTensor<B>,
        rstd: FloatTensor<B>,
        dy: FloatTensor<B>,
        groups: usize,
    ) -> [FloatTensor<B>; 3] {
        let (x, gamma, dims) = shaped::<B>(x, gamma);
        let [n, c, h, w] = dims;
        let m = (c / groups) * h * w;
        let dy: Tensor<B, 3> = t::<B, 4>(dy).reshape([n, c, h * w]);
        let (mean, rstd) = (t::<B, 1>(mean).reshape([n, groups, 1]), t::<B, 1>(rstd).reshape([n, groups, 1]));
        let xhat = (x.reshape([n, groups, m]) - mean) * rstd.clone();
        let dbeta = dy.clone().sum_dim(2).sum_dim(0).reshape([c]);
        let dgamma = (dy.clone() * xhat.clone().reshape([n, c, h * w])).sum_dim(2).sum_dim(0).reshape([c]);
        // With g = gamma * dy: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) over each group.
        let g = (dy * gamma).reshape([n, groups, m]);
        let mg = g.clone().mean_dim(2);
        let mgx = (g.clone() * xhat.clone()).mean_dim(2);
        let dx = (g - mg - xhat * mgx) * rstd;
        [dx.reshape(dims).into_primitive().tensor(), dgamma.into_primitive().tensor(), dbeta.into_primitive().tensor()]
    }

    pub fn batch_norm_fwd<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, beta: FloatTensor<B>, eps: f64) -> [FloatTensor<B>; 4] {
        let (x, gamma, dims) = shaped::<B>(x, gamma);
        let c = dims[1];
        let mean = x.clone().mean_dim(2).mean_dim(0);
        let var = (x.clone() - mean.clone()).square().mean_dim(2).mean_dim(0);
        let rstd = var.clone().add_scalar(eps).sqrt().recip();
        let y = (x - mean.clone()) * rstd.clone() * gamma + t::<B, 1>(beta).reshape([1, c, 1]);
        [
            y.reshape(dims).into_primitive().tensor(),
            mean.reshape([c]).into_primitive().tensor(),
            rstd.reshape([c]).into_primitive().tensor(),
            var.reshape([c]).into_primitive().tensor(),
        ]
    }

    pub fn relu_pool2<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        B::avg_pool2d(B::relu(x), [2, 2], [2, 2], [0, 0], true, false)
    }

    pub fn relu_pool2_bwd<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
        let r = B::relu(x.clone());
        let d: Tensor<B, 4> = t(B::avg_pool2d_backward(r, dy, [2, 2], [2, 2], [0, 0], true, false));
        let x: Tensor<B, 4> = t(x);
        d.mask_fill(x.lower_equal_elem(0.0), 0.0).into_primitive().tensor()
    }

    /// Shared backward: per-group sums of `dy` and `dy * xhat` over the plane (instance) or over
    /// batch and plane (batch norm).
    pub fn norm_bwd<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        mean: FloatTensor<B>,
        rstd: FloatTensor<B>,
        dy: FloatTensor<B>,
        batch: bool,
    ) -> [FloatTensor<B>; 3] {
        let (x, gamma, dims) = shaped::<B>(x, gamma);
        let [n, c, h, w] = dims;
        let dy: Tensor<B, 3> = t::<B, 4>(dy).reshape([n, c, h * w]);
        let group = if batch { [1, c, 1] } else { [n, c, 1] };
        let (mean, rstd) = (t::<B, 1>(mean).reshape(group), t::<B, 1>(rstd).reshape(group));
        let xhat = (x - mean) * rstd.clone();
        let reduce = |v: Tensor<B, 3>| if batch { v.sum_dim(2).sum_dim(0) } else { v.sum_dim(2) };
        let sdy = reduce(dy.clone());
        let sdyx = reduce(dy.clone() * xhat.clone());
        let m = if batch { n * h * w } else { h * w } as f64;
        let dx = (dy.mul_scalar(m) - sdy.clone() - xhat * sdyx.clone()) * (gamma * rstd).div_scalar(m);
        let per_channel = |v: Tensor<B, 3>| v.sum_dim(0).reshape([c]).into_primitive().tensor();
        [dx.reshape(dims).into_primitive().tensor(), per_channel(sdyx), per_channel(sdy)]
    }
}

//! The fused diffusion kernels as backend ops: `scheduler_step`, `add_noise`, `latent_lerp`.
//!
//! One function per op for the rest of dace; the backend decides how it runs: the CPU backends
//! use the plain-Rust reference (`diffusion_ref`), wgpu launches dace's WGSL shaders
//! (`shaders/*.wgsl`) and CUDA dace's CUDA kernels (`kernels/*.cu`), both through cubecl's raw
//! kernel launch. Latents are `[batch, L]` (any trailing shape flattened); latent `p` draws its
//! noise from `keys[p]` (docs/FORMAT.md).

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorMetadata, TensorPrimitive};

use super::diffusion_ref::{self as reference, NoiseKey};
use crate::kernels::coeffs::{NoiseCoeffs, StepCoeffs};

/// Backends that run the diffusion kernels.
pub trait DiffusionKernels: Backend {
    /// `out = ca*x + ce*eps + cz*z` per element, `z` from the latent's noise key.
    fn scheduler_step(x: FloatTensor<Self>, eps: FloatTensor<Self>, c: StepCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self>;
    /// `out = a*z0 + b*n`.
    fn add_noise(z0: FloatTensor<Self>, c: NoiseCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self>;
    /// `out_p = (gamma_p*z1_p + (1-gamma_p)*z2_p)*a + b*n_p` over pairs `p`.
    fn latent_lerp(z1: FloatTensor<Self>, z2: FloatTensor<Self>, gamma: &[f32], c: NoiseCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self>;
}

fn check(what: &str, dims: &[usize], keys: usize) {
    assert!(!dims.is_empty() && dims[0] == keys && keys > 0, "{what}: {keys} noise keys for a batch of shape {dims:?}");
}

/// One denoising step (Euler ancestral or DDIM in the [`StepCoeffs`] form) of a batch of latents.
pub fn scheduler_step<B: DiffusionKernels, const D: usize>(
    x: Tensor<B, D>,
    eps: Tensor<B, D>,
    c: StepCoeffs,
    keys: &[NoiseKey],
) -> Tensor<B, D> {
    check("scheduler_step", &x.dims(), keys.len());
    assert_eq!(x.dims(), eps.dims(), "scheduler_step: x and eps differ in shape");
    let p = B::scheduler_step(x.into_primitive().tensor(), eps.into_primitive().tensor(), c, keys);
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// Forward noising `a*z0 + b*n` of a batch of latents.
pub fn add_noise<B: DiffusionKernels, const D: usize>(z0: Tensor<B, D>, c: NoiseCoeffs, keys: &[NoiseKey]) -> Tensor<B, D> {
    check("add_noise", &z0.dims(), keys.len());
    Tensor::from_primitive(TensorPrimitive::Float(B::add_noise(z0.into_primitive().tensor(), c, keys)))
}

/// Latent mixup fused with forward noising, batched over pairs.
pub fn latent_lerp<B: DiffusionKernels, const D: usize>(
    z1: Tensor<B, D>,
    z2: Tensor<B, D>,
    gamma: &[f32],
    c: NoiseCoeffs,
    keys: &[NoiseKey],
) -> Tensor<B, D> {
    check("latent_lerp", &z1.dims(), keys.len());
    assert_eq!(z1.dims(), z2.dims(), "latent_lerp: z1 and z2 differ in shape");
    assert_eq!(gamma.len(), keys.len(), "latent_lerp: one gamma per pair");
    let p = B::latent_lerp(z1.into_primitive().tensor(), z2.into_primitive().tensor(), gamma, c, keys);
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// CPU backends: the reference on host memory, latents spread over the rayon pool (each latent is
/// independent: its own noise key, its own slice).
macro_rules! cpu_kernels {
    ($($B:ty),*) => {$(
        impl DiffusionKernels for $B {
            fn scheduler_step(x: FloatTensor<Self>, eps: FloatTensor<Self>, c: StepCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self> {
                let eps = host_vec::<Self>(eps);
                host::<Self>(x, keys.len(), |p, x, out| {
                    let len = x.len();
                    reference::scheduler_step(x, &eps[p * len..(p + 1) * len], c, keys[p], out)
                })
            }
            fn add_noise(z0: FloatTensor<Self>, c: NoiseCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self> {
                host::<Self>(z0, keys.len(), |p, z0, out| reference::add_noise(z0, c.a, c.b, keys[p], out))
            }
            fn latent_lerp(z1: FloatTensor<Self>, z2: FloatTensor<Self>, gamma: &[f32], c: NoiseCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self> {
                let z2 = host_vec::<Self>(z2);
                host::<Self>(z1, keys.len(), |p, z1, out| {
                    let len = z1.len();
                    reference::latent_lerp(z1, &z2[p * len..(p + 1) * len], &gamma[p..p + 1], c.a, c.b, &keys[p..p + 1], out)
                })
            }
        }
    )*};
}
cpu_kernels!(burn::backend::Flex, burn::backend::NdArray);

fn host_vec<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let n = t.shape().num_elements();
    let flat = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::float_reshape(t, Shape::new([n]))));
    flat.into_data().convert::<f32>().to_vec().expect("f32 tensor")
}

/// Runs `f(p, latent_p, out_p)` for each of the `batch` latents of `input` on host copies, in
/// parallel, and returns the output with the input's shape and device.
fn host<B: Backend>(input: FloatTensor<B>, batch: usize, f: impl Fn(usize, &[f32], &mut [f32]) + Sync) -> FloatTensor<B> {
    use rayon::prelude::*;
    let shape = input.shape();
    let device = B::float_device(&input);
    let x = host_vec::<B>(input);
    let len = x.len() / batch.max(1);
    let mut out = vec![0f32; x.len()];
    if len > 0 {
        out.par_chunks_mut(len).zip(x.par_chunks(len)).enumerate().for_each(|(p, (out, x))| f(p, x, out));
    }
    let n = out.len();
    let flat = Tensor::<B, 1>::from_data(TensorData::new(out, [n]), &device).into_primitive().tensor();
    B::float_reshape(flat, shape)
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    //! Raw WGSL / CUDA kernels launched through cubecl (burn's GPU runtimes).

    use burn::tensor::{DType, Shape};
    use burn_cubecl::cubecl::prelude::*;
    use burn_cubecl::cubecl::server::KernelArguments;
    use burn_cubecl::cubecl::{CompilationError, Compiler, CubeCount, CubeDim, CubeTask};
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::CubeRuntime;

    use burn::tensor::ops::FloatTensor;

    use super::reference::{self, NoiseKey};
    use crate::kernels::coeffs::{NoiseCoeffs, StepCoeffs};

    /// A kernel given as finished source text (WGSL for wgpu, CUDA C++ for cuda), entry `entry`.
    pub struct RawKernel {
        pub name: &'static str,
        pub entry: &'static str,
        pub source: String,
        /// The runtime reads the compiler's representation of the kernel (cubecl-cuda does, for
        /// its shared-memory size, and panics without one): hand it that of an empty kernel.
        pub needs_repr: bool,
    }

    const CUBE_DIM: CubeDim = CubeDim { x: reference::WORKGROUP_SIZE as u32, y: 1, z: 1 };

    impl<C: Compiler> CubeTask<C> for RawKernel {
        fn compile(
            &self,
            compiler: &mut C,
            options: &C::CompilationOptions,
            mode: ExecutionMode,
            addr: StorageType,
        ) -> Result<CompiledKernel<C>, CompilationError> {
            // An empty kernel's representation: no shared memory, like dace's kernels. Only its
            // metadata is used; the source compiled and launched is `self.source`.
            let repr = if self.needs_repr {
                let empty = burn_cubecl::cubecl::prelude::KernelBuilder::default()
                    .build(burn_cubecl::cubecl::KernelSettings::default().cube_dim(CUBE_DIM));
                Some(compiler.compile(empty, options, mode, addr)?)
            } else {
                None
            };
            Ok(CompiledKernel {
                entrypoint_name: self.entry.to_string(),
                debug_name: Some(self.name),
                source: self.source.clone(),
                cube_dim: CUBE_DIM,
                debug_info: None,
                repr,
            })
        }
    }

    impl KernelMetadata for RawKernel {
        fn id(&self) -> KernelId {
            KernelId::new::<Self>().info(self.name).cube_dim(CUBE_DIM)
        }
        fn address_type(&self) -> StorageType {
            u32::as_type_native_unchecked().storage_type()
        }
    }

    fn words_to_bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub fn keys_bytes(keys: &[NoiseKey]) -> Vec<u8> {
        words_to_bytes(&keys.iter().flatten().copied().collect::<Vec<_>>())
    }

    /// Launches `kernel` with `inputs` (made contiguous), then `extra` host buffers (keys, gammas),
    /// then a fresh f32 output shaped like `inputs[0]`, then the parameter block; one thread per
    /// four elements of each of `batch` latents.
    pub fn launch<R: CubeRuntime>(
        kernel: RawKernel,
        inputs: Vec<CubeTensor<R>>,
        extra: Vec<Vec<u8>>,
        params: &[u32],
        batch: usize,
    ) -> CubeTensor<R> {
        let inputs: Vec<CubeTensor<R>> = inputs.into_iter().map(into_contiguous).collect();
        let first = &inputs[0];
        assert!(inputs.iter().all(|t| t.dtype == DType::F32), "dace's diffusion kernels take f32 latents");
        let shape: Shape = first.meta.shape().clone();
        let n = shape.num_elements();
        let client = first.client.clone();
        let out = CubeTensor::new_contiguous(client.clone(), first.device.clone(), shape, client.empty(n * 4), DType::F32);
        let mut buffers: Vec<_> = inputs.iter().map(|t| t.handle.clone().binding()).collect();
        buffers.extend(extra.iter().map(|bytes| client.create_from_slice(bytes).binding()));
        buffers.push(out.handle.clone().binding());
        buffers.push(client.create_from_slice(&words_to_bytes(params)).binding());
        let (gx, gy) = reference::workgroups(reference::kernel_threads(n / batch, batch));
        client.launch(Box::new(kernel), CubeCount::Static(gx, gy, 1), KernelArguments::new().with_buffers(buffers));
        out
    }

    /// Source language of a GPU runtime's kernels.
    #[derive(Clone, Copy)]
    pub enum Lang {
        #[cfg(feature = "wgpu")]
        Wgsl,
        #[cfg(feature = "cuda")]
        Cuda,
    }

    impl Lang {
        /// The finished kernel `which` ("scheduler_step", "add_noise", "latent_lerp").
        pub fn kernel(self, which: &'static str) -> RawKernel {
            match self {
                // WGSL has no `#include`: each kernel is shaders/philox.wgsl + the kernel file;
                // every entry point is `main`.
                #[cfg(feature = "wgpu")]
                Lang::Wgsl => {
                    let (name, body) = match which {
                        "scheduler_step" => ("wgsl/scheduler_step", include_str!("../../shaders/scheduler_step.wgsl")),
                        "add_noise" => ("wgsl/add_noise", include_str!("../../shaders/add_noise.wgsl")),
                        "latent_lerp" => ("wgsl/latent_lerp", include_str!("../../shaders/latent_lerp.wgsl")),
                        other => unreachable!("no shader {other}"),
                    };
                    RawKernel {
                        name,
                        entry: "main",
                        source: format!("{}\n{}", include_str!("../../shaders/philox.wgsl"), body),
                        needs_repr: false,
                    }
                }
                // NVRTC compiles one string: kernels/philox.cuh replaces the `#include`; entry
                // points are `dace_<kernel>`.
                #[cfg(feature = "cuda")]
                Lang::Cuda => {
                    let (name, entry, body) = match which {
                        "scheduler_step" => ("cuda/scheduler_step", "dace_scheduler_step", include_str!("../../kernels/scheduler_step.cu")),
                        "add_noise" => ("cuda/add_noise", "dace_add_noise", include_str!("../../kernels/add_noise.cu")),
                        "latent_lerp" => ("cuda/latent_lerp", "dace_latent_lerp", include_str!("../../kernels/latent_lerp.cu")),
                        other => unreachable!("no kernel {other}"),
                    };
                    let source = body.replace("#include \"philox.cuh\"", include_str!("../../kernels/philox.cuh"));
                    RawKernel { name, entry, source, needs_repr: true }
                }
            }
        }
    }

    macro_rules! cube_kernels {
        ($B:ty, $lang:expr) => {
            impl super::DiffusionKernels for $B {
                fn scheduler_step(x: FloatTensor<Self>, eps: FloatTensor<Self>, c: StepCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self> {
                    let batch = keys.len();
                    let len = (x.meta.shape().num_elements() / batch) as u32;
                    launch(
                        $lang.kernel("scheduler_step"),
                        vec![x, eps],
                        vec![keys_bytes(keys)],
                        &reference::step_params(c, len, batch as u32),
                        batch,
                    )
                }
                fn add_noise(z0: FloatTensor<Self>, c: NoiseCoeffs, keys: &[NoiseKey]) -> FloatTensor<Self> {
                    let batch = keys.len();
                    let len = (z0.meta.shape().num_elements() / batch) as u32;
                    launch(
                        $lang.kernel("add_noise"),
                        vec![z0],
                        vec![keys_bytes(keys)],
                        &reference::add_noise_params(c, len, batch as u32),
                        batch,
                    )
                }
                fn latent_lerp(
                    z1: FloatTensor<Self>,
                    z2: FloatTensor<Self>,
                    gamma: &[f32],
                    c: NoiseCoeffs,
                    keys: &[NoiseKey],
                ) -> FloatTensor<Self> {
                    let pairs = keys.len();
                    let len = (z1.meta.shape().num_elements() / pairs) as u32;
                    let gamma: Vec<u8> = gamma.iter().flat_map(|g| g.to_le_bytes()).collect();
                    launch(
                        $lang.kernel("latent_lerp"),
                        vec![z1, z2],
                        vec![gamma, keys_bytes(keys)],
                        &reference::lerp_params(c.a, c.b, len, pairs as u32),
                        pairs,
                    )
                }
            }
        };
    }

    #[cfg(feature = "wgpu")]
    cube_kernels!(burn::backend::Wgpu, Lang::Wgsl);
    #[cfg(feature = "cuda")]
    cube_kernels!(burn::backend::Cuda, Lang::Cuda);
}

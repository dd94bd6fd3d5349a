//! Run-time device choice. Models and training code are generic over the burn backend; this module
//! maps `--device cpu|wgpu|cuda` to a concrete backend and device.

use serde::{Deserialize, Serialize};

/// The CPU backend dace uses (the fastest measured on CPU; see docs/results/cpu_speed.md).
pub type CpuBackend = burn::backend::Flex;
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// burn's Flex backend on the CPU (rayon threads).
    Cpu,
    /// wgpu: Vulkan, Metal or DX12 (lavapipe on machines without a GPU).
    Wgpu,
    /// NVIDIA CUDA.
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// Runs `$body` with `$B` bound to the backend type of `$kind` and `$device` to its default
/// device. `$body` must evaluate to `crate::Result<T>`; a device whose cargo feature is off yields
/// `DaceError::DeviceUnavailable`.
#[macro_export]
macro_rules! on_device {
    ($kind:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $kind {
            $crate::device::DeviceKind::Cpu => {
                #[allow(dead_code)]
                type $B = $crate::device::CpuBackend;
                let $device = <burn::tensor::Device<$B> as Default>::default();
                $body
            }
            $crate::device::DeviceKind::Wgpu => {
                #[cfg(feature = "wgpu")]
                {
                    #[allow(dead_code)]
                    type $B = $crate::device::WgpuBackend;
                    let $device = <burn::tensor::Device<$B> as Default>::default();
                    $body
                }
                #[cfg(not(feature = "wgpu"))]
                {
                    Err($crate::error::DaceError::DeviceUnavailable("wgpu"))
                }
            }
            $crate::device::DeviceKind::Cuda => {
                #[cfg(feature = "cuda")]
                {
                    #[allow(dead_code)]
                    type $B = $crate::device::CudaBackend;
                    let $device = <burn::tensor::Device<$B> as Default>::default();
                    $body
                }
                #[cfg(not(feature = "cuda"))]
                {
                    Err($crate::error::DaceError::DeviceUnavailable("cuda"))
                }
            }
        }
    }};
}

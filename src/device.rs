//! Run-time device choice. Models and training code are generic over the burn backend; this module
//! maps `--device cpu|wgpu|cuda[:N]` to a concrete backend and device.

use serde::{Deserialize, Serialize};

/// The CPU backend dace uses (the fastest measured on CPU; see docs/results/cpu_speed.md).
pub type CpuBackend = burn::backend::Flex;
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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

/// One device: a backend and, for GPUs, which one (`cuda:1`, `wgpu:0`); no index is the
/// backend's default device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    pub index: Option<usize>,
}

impl From<DeviceKind> for DeviceSpec {
    fn from(kind: DeviceKind) -> Self {
        DeviceSpec { kind, index: None }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.kind.name()),
            None => f.write_str(self.kind.name()),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    /// `cpu`, `wgpu`, `cuda`, or a GPU by index: `cuda:1`, `wgpu:0` (the first discrete GPU).
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, index) = match text.trim().split_once(':') {
            Some((name, index)) => (name, Some(index)),
            None => (text.trim(), None),
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "cpu" => DeviceKind::Cpu,
            "wgpu" => DeviceKind::Wgpu,
            "cuda" => DeviceKind::Cuda,
            _ => return Err(format!("`{text}` is not a device: cpu, wgpu, cuda, or a GPU by index (cuda:1, wgpu:0)")),
        };
        let index = match index {
            None => None,
            Some(_) if kind == DeviceKind::Cpu => return Err(format!("`{text}`: the CPU has no index (write `cpu`)")),
            Some(i) => Some(i.trim().parse::<usize>().map_err(|_| format!("`{text}`: `{i}` is not a device index (0, 1, ...)"))?),
        };
        Ok(DeviceSpec { kind, index })
    }
}

/// Checks a list of devices for one run: one backend, no GPU twice.
pub fn check_device_list(devices: &[DeviceSpec]) -> Result<(), String> {
    // `cuda` is `cuda:0`; the CPU may be listed more than once (a shard per listing).
    let gpus: Vec<(DeviceKind, usize)> =
        devices.iter().filter(|d| d.kind != DeviceKind::Cpu).map(|d| (d.kind, d.index.unwrap_or(0))).collect();
    if let Some((kind, index)) = gpus.iter().enumerate().find_map(|(i, d)| gpus[..i].contains(d).then_some(d)) {
        return Err(format!("{}:{index} is named twice", kind.name()));
    }
    if devices.iter().any(|d| d.kind != devices[0].kind) {
        return Err("the devices of one run share a backend (e.g. cuda:0,cuda:1)".into());
    }
    Ok(())
}

#[cfg(feature = "wgpu")]
impl DeviceSpec {
    /// burn's wgpu device: the default adapter, or the N-th discrete GPU for `wgpu:N`.
    pub fn wgpu_device(self) -> burn::backend::wgpu::WgpuDevice {
        match self.index {
            None => burn::backend::wgpu::WgpuDevice::DefaultDevice,
            Some(i) => burn::backend::wgpu::WgpuDevice::DiscreteGpu(i),
        }
    }
}

#[cfg(feature = "cuda")]
impl DeviceSpec {
    /// burn's CUDA device: `cuda` is GPU 0, `cuda:N` GPU N (as CUDA numbers them).
    pub fn cuda_device(self) -> burn::backend::cuda::CudaDevice {
        burn::backend::cuda::CudaDevice::new(self.index.unwrap_or(0))
    }
}

/// Checks that the libraries `--device cuda` needs can be loaded: the NVIDIA driver
/// (`libcuda`) and NVRTC (kernels are compiled at run time). cudarc would panic inside burn's
/// runtime thread without them; this names what is missing instead.
#[cfg(feature = "cuda")]
pub fn check_cuda() -> crate::Result<()> {
    #[cfg(windows)]
    let (driver, nvrtc): (&[&str], &[&str]) = (&["nvcuda.dll"], &["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_12.dll"]);
    #[cfg(not(windows))]
    let (driver, nvrtc): (&[&str], &[&str]) = (
        &["libcuda.so.1", "libcuda.so"],
        // The names cudarc tries (its `get_lib_name_candidates`, Linux).
        &["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11", "libnvrtc.so.10", "libnvrtc.so.9", "libnvrtc.so.1"],
    );
    // SAFETY: loading these libraries runs their initialisers, which is what using CUDA does anyway.
    let loads = |names: &[&str]| names.iter().any(|n| unsafe { libloading::Library::new(*n) }.is_ok());
    if !loads(driver) {
        return Err(crate::error::DaceError::Invalid(format!(
            "--device cuda: no NVIDIA driver found ({} could not be loaded); use --device wgpu or cpu",
            driver.join(", ")
        )));
    }
    if !loads(nvrtc) {
        return Err(crate::error::DaceError::Invalid(format!(
            "--device cuda: NVRTC not found ({}): install the CUDA toolkit's runtime compiler or add its lib folder to LD_LIBRARY_PATH",
            nvrtc.join(", ")
        )));
    }
    Ok(())
}

/// Checks that wgpu finds an adapter of the graphics API burn's wgpu runtime asks for (Vulkan,
/// Metal on macOS). Without one, cubecl panics inside its runtime thread with a backtrace; this
/// names what is missing and the package that provides it instead. Checked once per process.
#[cfg(all(feature = "wgpu", not(target_family = "wasm")))]
pub fn check_wgpu() -> crate::Result<()> {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(find_wgpu_adapter).clone().map_err(crate::error::DaceError::Invalid)
}

/// In a browser the page asks for WebGPU itself and falls back to the CPU (web/app.js).
#[cfg(all(feature = "wgpu", target_family = "wasm"))]
pub fn check_wgpu() -> crate::Result<()> {
    Ok(())
}

#[cfg(all(feature = "wgpu", not(target_family = "wasm")))]
fn find_wgpu_adapter() -> Result<(), String> {
    // cubecl-wgpu's `AutoGraphicsApi` on native targets.
    let backend = if cfg!(target_os = "macos") { wgpu::Backend::Metal } else { wgpu::Backend::Vulkan };
    if backend == wgpu::Backend::Vulkan && !vulkan_loader_present() {
        return Err(format!("--device wgpu: the Vulkan loader ({VULKAN_LOADER}) is missing; install it (Debian/Ubuntu: apt-get install libvulkan1 mesa-vulkan-drivers)"));
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    if pollster::block_on(instance.enumerate_adapters(backend.into())).is_empty() {
        return Err(format!(
            "--device wgpu: no {backend:?} driver found; install one (a GPU vendor's driver, or on Debian/Ubuntu Mesa's CPU driver lavapipe: apt-get install mesa-vulkan-drivers)"
        ));
    }
    Ok(())
}

#[cfg(all(feature = "wgpu", not(target_family = "wasm")))]
const VULKAN_LOADER: &str = if cfg!(windows) { "vulkan-1.dll" } else { "libvulkan.so.1" };

#[cfg(all(feature = "wgpu", not(target_family = "wasm")))]
fn vulkan_loader_present() -> bool {
    // SAFETY: loading the loader runs its initialisers, which is what using Vulkan does anyway.
    unsafe { libloading::Library::new(VULKAN_LOADER) }.is_ok()
}

/// Runs `$body` with `$B` bound to the backend type of `$kind` (a `DeviceKind` or a `DeviceSpec`)
/// and `$device` to that device (the backend's default where no index is given). `$body` must
/// evaluate to `crate::Result<T>`; a device whose cargo feature is off yields
/// `DaceError::DeviceUnavailable`.
#[macro_export]
macro_rules! on_device {
    (@run $specs:expr, |$B:ident, $device:ident, $all:ident| $body:expr) => {{
        let specs: Vec<$crate::device::DeviceSpec> = $specs;
        match specs[0].kind {
            $crate::device::DeviceKind::Cpu => {
                #[allow(dead_code)]
                type $B = $crate::device::CpuBackend;
                #[allow(unused_variables)]
                let $all: Vec<burn::tensor::Device<$B>> = specs.iter().map(|_| Default::default()).collect();
                let $device = $all[0].clone();
                $body
            }
            $crate::device::DeviceKind::Wgpu => {
                #[cfg(feature = "wgpu")]
                {
                    match $crate::device::check_wgpu() {
                        Err(e) => Err(e),
                        Ok(()) => {
                            #[allow(dead_code)]
                            type $B = $crate::device::WgpuBackend;
                            #[allow(unused_variables)]
                            let $all: Vec<burn::tensor::Device<$B>> = specs.iter().map(|s| s.wgpu_device()).collect();
                            let $device = $all[0].clone();
                            $body
                        }
                    }
                }
                #[cfg(not(feature = "wgpu"))]
                {
                    Err($crate::error::DaceError::DeviceUnavailable("wgpu"))
                }
            }
            $crate::device::DeviceKind::Cuda => {
                #[cfg(feature = "cuda")]
                {
                    match $crate::device::check_cuda() {
                        Err(e) => Err(e),
                        Ok(()) => {
                            #[allow(dead_code)]
                            type $B = $crate::device::CudaBackend;
                            #[allow(unused_variables)]
                            let $all: Vec<burn::tensor::Device<$B>> = specs.iter().map(|s| s.cuda_device()).collect();
                            let $device = $all[0].clone();
                            $body
                        }
                    }
                }
                #[cfg(not(feature = "cuda"))]
                {
                    Err($crate::error::DaceError::DeviceUnavailable("cuda"))
                }
            }
        }
    }};
    ($kind:expr, |$B:ident, $device:ident| $body:expr) => {
        $crate::on_device!(@run vec![$crate::device::DeviceSpec::from($kind)], |$B, $device, all_devices| $body)
    };
    // Several devices of one backend (`&[DeviceSpec]`, checked by `check_device_list`): `$device`
    // is the first, `$all` every one, in order.
    ($specs:expr, |$B:ident, $device:ident, $all:ident| $body:expr) => {
        $crate::on_device!(@run ($specs).to_vec(), |$B, $device, $all| $body)
    };
}

//! Conformance of the fused diffusion kernels across devices (src/kernels/conformance.rs): the CPU backend (the plain-Rust
//! reference) against wgpu running dace's WGSL shaders (lavapipe in CI). Normals that agree to
//! 1e-6 imply identical integer Philox streams: one differing word changes a normal completely.

use burn::prelude::*;
use dace::device::CpuBackend;
use dace::kernels::coeffs::{NoiseCoeffs, StepCoeffs};
use dace::kernels::diffusion::{self, DiffusionKernels};
use dace::kernels::diffusion_ref::{self, NoiseKey};
use dace::rng::{SeedRng, Stream};

fn keys(batch: usize, seed: u64, stream: Stream) -> Vec<NoiseKey> {
    (0..batch as u64).map(|item| SeedRng::new(seed, item, stream).shader_params()).collect()
}

/// Deterministic pseudo-random inputs (values in about [-3, 3]).
fn values(n: usize, salt: u64) -> Vec<f32> {
    let rng = SeedRng::new(salt, 0, Stream::Shuffle);
    (0..n as u64).map(|i| 6.0 * rng.uniform_at(i) - 3.0).collect()
}

fn to<B: Backend>(v: &[f32], batch: usize, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [batch, v.len() / batch]), device)
}

fn host<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// All three kernels on backend `B` for one case.
fn run_all<B: DiffusionKernels>(batch: usize, len: usize, device: &B::Device) -> [Vec<f32>; 4] {
    let (x, eps) = (values(batch * len, 1), values(batch * len, 2));
    let step = StepCoeffs { ca: 1.0, ce: -0.73, cz: 0.41 };
    let ddim = StepCoeffs { ca: 0.92, ce: 0.31, cz: 0.0 };
    let k = keys(batch, 9, Stream::Ancestral(2));
    let noise = NoiseCoeffs { a: 0.6, b: 0.8 };
    let gamma: Vec<f32> = (0..batch).map(|p| 0.2 + 0.15 * p as f32).collect();
    [
        host(diffusion::scheduler_step(to::<B>(&x, batch, device), to::<B>(&eps, batch, device), step, &k)),
        host(diffusion::scheduler_step(to::<B>(&x, batch, device), to::<B>(&eps, batch, device), ddim, &k)),
        host(diffusion::add_noise(to::<B>(&x, batch, device), noise, &keys(batch, 4, Stream::AddNoise))),
        host(diffusion::latent_lerp(
            to::<B>(&x, batch, device),
            to::<B>(&eps, batch, device),
            &gamma,
            noise,
            &keys(batch, 5, Stream::MixupGamma),
        )),
    ]
}

const CASES: [(usize, usize); 4] = [(1, 1), (3, 23), (2, 64), (16, 256)];

#[test]
fn cpu_backend_runs_the_reference() {
    let device = Default::default();
    for (batch, len) in CASES {
        let [a, _, _, _] = run_all::<CpuBackend>(batch, len, &device);
        let (x, eps) = (values(batch * len, 1), values(batch * len, 2));
        let mut want = vec![0f32; batch * len];
        diffusion_ref::scheduler_step_batched(
            &x,
            &eps,
            StepCoeffs { ca: 1.0, ce: -0.73, cz: 0.41 },
            &keys(batch, 9, Stream::Ancestral(2)),
            &mut want,
        );
        assert_eq!(a, want);
        // The noise really is the stream's normals.
        let z = (a[0] - (x[0] - 0.73 * eps[0])) / 0.41;
        assert!((z - SeedRng::new(9, 0, Stream::Ancestral(2)).normal_at(0)).abs() < 1e-4);
    }
}

/// The conformance check itself must catch a wrong kernel: a device result with one element off
/// by 2e-5 fails it, and a NaN counts as an infinite error.
#[test]
fn conformance_check_sees_small_errors() {
    use dace::kernels::conformance;
    let cases = conformance::cases(3, 7);
    assert_eq!(cases.len(), 9, "6 fixed cases + 3 random ones");
    assert_eq!(cases, conformance::cases(3, 7), "random cases are reproducible");
    let rows = conformance::check::<CpuBackend>(&cases[..4], &Default::default());
    assert_eq!(rows.len(), 4 * (conformance::KERNELS.len() + 1));
    // The CPU backend is the reference: exact, and its noise is the SeedRng stream itself.
    assert!(rows.iter().all(|r| r.max_abs_err <= 2e-6), "{rows:?}");
    let worst = conformance::worst_per_kernel(&rows);
    assert_eq!(worst.len(), conformance::KERNELS.len() + 1);
    let good = [0.5f32, -1.0, 2.0];
    assert_eq!(conformance::max_abs_diff(&good, &good), 0.0);
    assert!(conformance::max_abs_diff(&good, &[0.5, -1.0, 2.00003]) > conformance::TOLERANCE);
    assert_eq!(conformance::max_abs_diff(&good, &[0.5, f32::NAN, 2.0]), f32::INFINITY);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_shaders_match_the_cpu_reference() {
    // Without a Vulkan driver, one line naming the package instead of a panic in cubecl's thread.
    dace::device::check_wgpu().unwrap_or_else(|e| panic!("{e}"));
    use burn::backend::Wgpu;
    use dace::kernels::conformance;
    let rows = conformance::check::<Wgpu>(&conformance::cases(4, 11), &Default::default());
    for r in &rows {
        assert!(r.max_abs_err <= conformance::TOLERANCE, "{} on {} x {}: max abs error {}", r.kernel, r.batch, r.len, r.max_abs_err);
    }
    for (kernel, err) in conformance::worst_per_kernel(&rows) {
        println!("wgpu {kernel}: max abs error {err:.2e}");
    }
}

/// Without a Vulkan driver (the loader pointed at none), `--device wgpu` is one clear error that
/// names the missing driver and its package, not a panic in burn's runtime thread.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_without_a_driver_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dace"))
        .args(["bench", "conformance", "--device", "wgpu", "--random", "0"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded without a driver: {stderr}");
    assert!(stderr.contains("--device wgpu: no Vulkan driver found") && stderr.contains("apt-get install mesa-vulkan-drivers"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

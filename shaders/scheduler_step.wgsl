// scheduler_step.wgsl: one denoising step of Euler ancestral or DDIM, fused (docs/FORMAT.md,
// "Kernels"). Needs shaders/philox.wgsl prepended. CPU reference:
// src/kernels/diffusion_ref.rs, scheduler_step_batched.
//
//   dst[p*L + j] = (ca * x[p*L + j] + ce * eps[p*L + j]) + cz * normal(keys[p], j)
//
// for latent p in 0..batch, element j in 0..L. No Philox is run when cz == 0.
//
// Bindings (group 0). Every binding is declared read_write although only `dst` is written:
// cubecl sub-allocates tensors from shared wgpu buffers, and wgpu rejects one buffer bound both
// read-only and read-write in a dispatch.
//   0  x       storage, read        array<f32>, batch * L
//   1  eps     storage, read        array<f32>, batch * L
//   2  keys    storage, read        array<vec4<u32>>, batch   ([key0, key1, stream id, sub])
//   3  dst     storage, read_write  array<f32>, batch * L    (must not alias x or eps)
//   4  params  storage, read        StepParams (32 bytes)
//
// Dispatch: one thread per group of 4 elements of a latent, T = batch * ceil(L / 4) threads,
// workgroups (min(G, 65535), ceil(G / 65535)) with G = ceil(T / 256). batch * L < 2^32.

struct StepParams {
    ca: f32,
    ce: f32,
    cz: f32,
    latent_len: u32,
    batch: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> eps: array<f32>;
@group(0) @binding(2) var<storage, read_write> keys: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: StepParams;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let len = params.latent_len;
    let groups = (len + 3u) / 4u;
    if (t >= groups * params.batch) {
        return;
    }
    let p = t / groups;
    let q = t - p * groups;
    let base = p * len + 4u * q;
    let count = min(4u, len - 4u * q);
    let ca = params.ca;
    let ce = params.ce;
    let cz = params.cz;
    var z = vec4<f32>(0.0);
    if (cz != 0.0) {
        z = philox_normal4(keys[p], q);
    }
    for (var lane = 0u; lane < count; lane = lane + 1u) {
        let i = base + lane;
        dst[i] = ca * x[i] + ce * eps[i] + cz * z[lane];
    }
}

// add_noise.wgsl: forward noising (img2img start), docs/FORMAT.md "Kernels". Needs
// shaders/philox.wgsl prepended. CPU reference: src/kernels/diffusion_ref.rs, add_noise_batched.
//
//   dst[p*L + j] = a * z0[p*L + j] + b * normal(keys[p], j)
//
// for latent p in 0..batch, element j in 0..L. No Philox is run when b == 0.
// Euler ancestral: a = 1, b = sigma_t; DDIM: a = sqrt(abar_t), b = sqrt(1 - abar_t).
//
// Bindings (group 0). Every binding is declared read_write although only `dst` is written:
// cubecl sub-allocates tensors from shared wgpu buffers, and wgpu rejects one buffer bound both
// read-only and read-write in a dispatch.
//   0  z0      storage, read        array<f32>, batch * L
//   1  keys    storage, read        array<vec4<u32>>, batch   ([key0, key1, stream id, sub])
//   2  dst     storage, read_write  array<f32>, batch * L    (must not alias z0)
//   3  params  storage, read        NoiseParams (16 bytes)
//
// Dispatch: T = batch * ceil(L / 4) threads, workgroups (min(G, 65535), ceil(G / 65535)),
// G = ceil(T / 256). batch * L < 2^32.

struct NoiseParams {
    a: f32,
    b: f32,
    latent_len: u32,
    batch: u32,
}

@group(0) @binding(0) var<storage, read_write> z0: array<f32>;
@group(0) @binding(1) var<storage, read_write> keys: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: NoiseParams;

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
    let a = params.a;
    let b = params.b;
    var n = vec4<f32>(0.0);
    if (b != 0.0) {
        n = philox_normal4(keys[p], q);
    }
    for (var lane = 0u; lane < count; lane = lane + 1u) {
        let i = base + lane;
        dst[i] = a * z0[i] + b * n[lane];
    }
}

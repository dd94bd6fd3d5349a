// latent_lerp.wgsl: latent mixup fused with forward noising, docs/FORMAT.md "Kernels". Needs
// shaders/philox.wgsl prepended. CPU reference: src/kernels/diffusion_ref.rs, latent_lerp.
//
//   dst[p*L + j] = (gamma[p] * z1[p*L + j] + (1 - gamma[p]) * z2[p*L + j]) * a
//                  + b * normal(keys[p], j)
//
// for pair p in 0..pairs, element j in 0..L. No Philox is run when b == 0.
//
// Bindings (group 0). Every binding is declared read_write although only `dst` is written:
// cubecl sub-allocates tensors from shared wgpu buffers, and wgpu rejects one buffer bound both
// read-only and read-write in a dispatch.
//   0  z1      storage, read        array<f32>, pairs * L
//   1  z2      storage, read        array<f32>, pairs * L
//   2  gamma   storage, read        array<f32>, pairs
//   3  keys    storage, read        array<vec4<u32>>, pairs   ([key0, key1, stream id, sub])
//   4  dst     storage, read_write  array<f32>, pairs * L    (must not alias the inputs)
//   5  params  storage, read        LerpParams (16 bytes)
//
// Dispatch: T = pairs * ceil(L / 4) threads, workgroups (min(G, 65535), ceil(G / 65535)),
// G = ceil(T / 256). pairs * L < 2^32.

struct LerpParams {
    a: f32,
    b: f32,
    latent_len: u32,
    pairs: u32,
}

@group(0) @binding(0) var<storage, read_write> z1: array<f32>;
@group(0) @binding(1) var<storage, read_write> z2: array<f32>;
@group(0) @binding(2) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> keys: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read_write> params: LerpParams;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    let len = params.latent_len;
    let groups = (len + 3u) / 4u;
    if (t >= groups * params.pairs) {
        return;
    }
    let p = t / groups;
    let q = t - p * groups;
    let base = p * len + 4u * q;
    let count = min(4u, len - 4u * q);
    let a = params.a;
    let b = params.b;
    let g = gamma[p];
    let h = 1.0 - g;
    var n = vec4<f32>(0.0);
    if (b != 0.0) {
        n = philox_normal4(keys[p], q);
    }
    for (var lane = 0u; lane < count; lane = lane + 1u) {
        let i = base + lane;
        dst[i] = (g * z1[i] + h * z2[i]) * a + b * n[lane];
    }
}

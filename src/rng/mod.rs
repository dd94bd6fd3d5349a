//! Named random streams (RNG scheme version 1; specified in `docs/FORMAT.md`).
//!
//! Every random number dace draws is element `i` of a stream identified by
//! (seed, item, [`Stream`]). Element `i` is a pure function of those and `i` (Philox4x32-10,
//! see [`philox`]), so results do not depend on thread count, batch order or device, and a GPU
//! shader can reproduce them: the `u32` values bit for bit, normals to ~1e-6.
//!
//! Changing any constant or layout here changes every package dace produces: bump the scheme
//! version in `docs/FORMAT.md` instead of editing in place.

pub mod philox;

use philox::{box_muller, philox4x32_10, u32_to_unit_open};

/// "DACE" in ASCII; fills counter word 2 of the key-derivation call, so that call's input can
/// never coincide with a stream call made with the same key.
pub const KEY_DERIVATION_TAG: u32 = 0x4441_4345;

/// The purposes random numbers are drawn for. Each has a fixed id (see [`Stream::id`]); ids are
/// part of the package format and are never renumbered or reused. Append new streams with new ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Sampling the VAE latent (mean + std * eps).
    VaeSample,
    /// Forward-diffusion noise added to a latent.
    AddNoise,
    /// Fresh noise in an ancestral sampler step; the payload is the step index.
    Ancestral(u32),
    /// Random-crop offsets.
    Crop,
    /// Horizontal flip decisions.
    Flip,
    /// Choice of the mixup partner.
    MixupPartner,
    /// Mixup mixing coefficient.
    MixupGamma,
    /// CutMix box and partner.
    CutMix,
    /// Permutations of a dataset or batch.
    Shuffle,
}

impl Stream {
    /// `(stream id, sub-index)`, which become counter words 2 and 3. Id 0 is reserved (unused).
    ///
    /// | stream          | id | sub  |
    /// |-----------------|----|------|
    /// | VaeSample       | 1  | 0    |
    /// | AddNoise        | 2  | 0    |
    /// | Ancestral(step) | 3  | step |
    /// | Crop            | 4  | 0    |
    /// | Flip            | 5  | 0    |
    /// | MixupPartner    | 6  | 0    |
    /// | MixupGamma      | 7  | 0    |
    /// | CutMix          | 8  | 0    |
    /// | Shuffle         | 9  | 0    |
    pub fn id(self) -> (u32, u32) {
        match self {
            Stream::VaeSample => (1, 0),
            Stream::AddNoise => (2, 0),
            Stream::Ancestral(step) => (3, step),
            Stream::Crop => (4, 0),
            Stream::Flip => (5, 0),
            Stream::MixupPartner => (6, 0),
            Stream::MixupGamma => (7, 0),
            Stream::CutMix => (8, 0),
            Stream::Shuffle => (9, 0),
        }
    }
}

/// Random-access generator for one (seed, item, stream). Cheap to build and copy; holds no
/// position, so element `i` is asked for by index.
#[derive(Clone, Copy, Debug)]
pub struct SeedRng {
    key: [u32; 2],
    stream: u32,
    sub: u32,
}

impl SeedRng {
    /// Key derivation: `key = philox4x32_10([item_lo, item_hi, 0x44414345, 0],
    /// [seed_lo, seed_hi])[0..2]`. Hashing (seed, item) through Philox, rather than using them
    /// directly, makes the keys of neighbouring items or seeds unrelated.
    pub fn new(seed: u64, item: u64, stream: Stream) -> Self {
        let w = philox4x32_10([item as u32, (item >> 32) as u32, KEY_DERIVATION_TAG, 0], [seed as u32, (seed >> 32) as u32]);
        let (stream, sub) = stream.id();
        SeedRng { key: [w[0], w[1]], stream, sub }
    }

    /// `[key0, key1, stream id, sub]`: what a shader needs to reproduce this stream (block `b`
    /// is `philox4x32_10([b_lo, b_hi, stream id, sub], [key0, key1])`).
    pub fn shader_params(&self) -> [u32; 4] {
        [self.key[0], self.key[1], self.stream, self.sub]
    }

    /// The four words of block `b` (elements `4b .. 4b+4`).
    #[inline]
    fn block(&self, b: u64) -> [u32; 4] {
        philox4x32_10([b as u32, (b >> 32) as u32, self.stream, self.sub], self.key)
    }

    /// Element `i` as raw bits: lane `i % 4` of block `i / 4`.
    #[inline]
    pub fn u32_at(&self, i: u64) -> u32 {
        self.block(i / 4)[(i % 4) as usize]
    }

    /// Element `i` as a uniform f32 in (0, 1) (never 0 or 1).
    #[inline]
    pub fn uniform_at(&self, i: u64) -> f32 {
        u32_to_unit_open(self.u32_at(i))
    }

    /// Element `i` in `0..n` (multiply-shift, tiny bias; see [`philox::below`]). 0 when `n == 0`.
    #[inline]
    pub fn below_at(&self, i: u64, n: u32) -> u32 {
        philox::below(self.u32_at(i), n)
    }

    /// Element `i` as a standard normal. Block `i / 4` gives two Box-Muller pairs: lanes (0, 1)
    /// for elements `i % 4` in {0, 1} and lanes (2, 3) for {2, 3}; the even element takes the
    /// cosine, the odd one the sine.
    #[inline]
    pub fn normal_at(&self, i: u64) -> f32 {
        let w = self.block(i / 4);
        let (c0, s0, c1, s1) = normals4(w);
        [c0, s0, c1, s1][(i % 4) as usize]
    }

    /// `out[j] = normal_at(j)` for every `j`, one Philox call per four elements.
    pub fn fill_normal(&self, out: &mut [f32]) {
        for (b, chunk) in out.chunks_mut(4).enumerate() {
            let (c0, s0, c1, s1) = normals4(self.block(b as u64));
            let n = [c0, s0, c1, s1];
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
    }

    /// `out[j] = uniform_at(j)` for every `j`, one Philox call per four elements.
    pub fn fill_uniform(&self, out: &mut [f32]) {
        for (b, chunk) in out.chunks_mut(4).enumerate() {
            let w = self.block(b as u64);
            for (o, &x) in chunk.iter_mut().zip(&w) {
                *o = u32_to_unit_open(x);
            }
        }
    }
}

/// The four normals of one block, in element order.
#[inline]
fn normals4(w: [u32; 4]) -> (f32, f32, f32, f32) {
    let (c0, s0) = box_muller(w[0], w[1]);
    let (c1, s1) = box_muller(w[2], w[3]);
    (c0, s0, c1, s1)
}

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
        let w = philox4x32_10(
            [item as u32, (item >> 32) as u32, KEY_DERIVATION_TAG, 0],
            [seed as u32, (seed >> 32) as u32],
        );
        let (stream, sub) = stream.id();
        SeedRng {
            key: [w[0], w[1]],
            stream,
            sub,
        }
    }

    /// `[key0, key1, stream id, sub]`: what a shader needs to reproduce this stream (block `b`
    /// is `philox4x32_10([b_lo, b_hi, stream id, sub], [key0, key1])`).
    pub fn shader_params(&self) -> [u32; 4] {
        [self.key[0], self.key[1], self.stream, self.sub]
    }

    /// The four words of block `b` (elements `4b .. 4b+4`).
    #[inline]
    fn block(&self, b: u64) -> [u32; 4] {
        philox4x32_10(
            [b as u32, (b >> 32) as u32, self.stream, self.sub],
            self.key,
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn first(rng: &SeedRng, n: u64) -> Vec<u32> {
        (0..n).map(|i| rng.u32_at(i)).collect()
    }

    /// Pins scheme version 1 (the same values are listed in docs/FORMAT.md). If this fails,
    /// the random numbers of every existing package changed.
    #[test]
    fn scheme_v1_pinned() {
        let cases = [
            (
                SeedRng::new(0, 0, Stream::VaeSample),
                [0x25b2ce3b, 0x9356c045, 1, 0],
                [0xaab74654, 0x37484037, 0x3a66c465, 0x1a3006e1],
                [0.19114503, 0.8796685, 1.3761499, 1.0304781],
            ),
            (
                SeedRng::new(0x0123_4567_89AB_CDEF, 42, Stream::Ancestral(7)),
                [0x2f7c7ab8, 0x897c9951, 3, 7],
                [0xbf641f6b, 0x246c749f, 0xf767e024, 0x631235c6],
                [0.4776975, 0.5945772, -0.19818182, 0.17035033],
            ),
        ];
        for (rng, params, words, normals) in cases {
            assert_eq!(rng.shader_params(), params);
            assert_eq!(first(&rng, 4), words);
            for (i, want) in normals.into_iter().enumerate() {
                // Normals are only promised to ~1e-6 across platforms (libm differs).
                assert!((rng.normal_at(i as u64) - want).abs() < 2e-6);
            }
        }
        let u = SeedRng::new(0, 0, Stream::VaeSample).uniform_at(0);
        assert_eq!(u, ((0xaab74654u32 >> 9) as f32 + 0.5) / 8_388_608.0);
    }

    #[test]
    fn deterministic() {
        let a = SeedRng::new(7, 3, Stream::AddNoise);
        let b = SeedRng::new(7, 3, Stream::AddNoise);
        assert_eq!(first(&a, 64), first(&b, 64));
        // Random access: order of requests does not matter.
        let backwards: Vec<u32> = (0..64).rev().map(|i| a.u32_at(i)).collect();
        assert_eq!(
            backwards.into_iter().rev().collect::<Vec<_>>(),
            first(&a, 64)
        );
    }

    #[test]
    fn streams_items_and_seeds_are_independent() {
        let all = [
            SeedRng::new(1, 2, Stream::VaeSample),
            SeedRng::new(1, 2, Stream::AddNoise),
            SeedRng::new(1, 2, Stream::Ancestral(0)),
            SeedRng::new(1, 2, Stream::Ancestral(1)),
            SeedRng::new(1, 2, Stream::Crop),
            SeedRng::new(1, 2, Stream::Flip),
            SeedRng::new(1, 2, Stream::MixupPartner),
            SeedRng::new(1, 2, Stream::MixupGamma),
            SeedRng::new(1, 2, Stream::CutMix),
            SeedRng::new(1, 2, Stream::Shuffle),
            SeedRng::new(1, 3, Stream::VaeSample),
            SeedRng::new(2, 2, Stream::VaeSample),
            SeedRng::new(2, 1, Stream::VaeSample), // swapped seed and item
            SeedRng::new(1, 2 + (1 << 32), Stream::VaeSample), // high word of item
            SeedRng::new(1 + (1 << 32), 2, Stream::VaeSample), // high word of seed
        ];
        let seqs: Vec<Vec<u32>> = all.iter().map(|r| first(r, 16)).collect();
        for i in 0..seqs.len() {
            for j in i + 1..seqs.len() {
                // Unrelated streams: not even one of the 16 positions should coincide.
                let same = seqs[i].iter().zip(&seqs[j]).filter(|(a, b)| a == b).count();
                assert_eq!(same, 0, "{:?} vs {:?}", all[i], all[j]);
            }
        }
        // Stream ids are distinct.
        let ids: Vec<(u32, u32)> = all[..10].iter().map(|r| (r.stream, r.sub)).collect();
        for i in 0..ids.len() {
            assert!(!ids[i + 1..].contains(&ids[i]));
        }
    }

    #[test]
    fn fill_matches_elementwise() {
        let rng = SeedRng::new(99, 5, Stream::VaeSample);
        for len in [0, 1, 3, 4, 5, 17] {
            let mut n = vec![f32::NAN; len];
            let mut u = vec![f32::NAN; len];
            rng.fill_normal(&mut n);
            rng.fill_uniform(&mut u);
            for i in 0..len {
                assert_eq!(
                    n[i].to_bits(),
                    rng.normal_at(i as u64).to_bits(),
                    "normal {i}"
                );
                assert_eq!(
                    u[i].to_bits(),
                    rng.uniform_at(i as u64).to_bits(),
                    "uniform {i}"
                );
            }
        }
    }

    #[test]
    fn normal_lanes_follow_the_spec() {
        let rng = SeedRng::new(5, 6, Stream::AddNoise);
        for b in 0..8u64 {
            let w = [0, 1, 2, 3].map(|l| rng.u32_at(4 * b + l));
            let (c0, s0) = box_muller(w[0], w[1]);
            let (c1, s1) = box_muller(w[2], w[3]);
            let got = [0, 1, 2, 3].map(|l| rng.normal_at(4 * b + l));
            assert_eq!(got, [c0, s0, c1, s1]);
        }
    }

    #[test]
    fn normal_moments() {
        let mut v = vec![0f32; 1_000_000];
        SeedRng::new(2024, 0, Stream::AddNoise).fill_normal(&mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard errors are 1e-3 (mean) and 1.4e-3 (variance); these bounds are ~7 sigma.
        assert!(mean.abs() < 0.007, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn uniform_open_interval() {
        let mut v = vec![0f32; 1_000_000];
        SeedRng::new(3, 4, Stream::Crop).fill_uniform(&mut v);
        assert!(v.iter().all(|&x| x > 0.0 && x < 1.0));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.003, "mean {mean}");
    }

    #[test]
    fn below_in_range() {
        let rng = SeedRng::new(8, 9, Stream::Shuffle);
        for n in [1, 2, 3, 7, 10, 1000, u32::MAX] {
            for i in 0..10_000 {
                assert!(rng.below_at(i, n) < n);
            }
        }
        // Roughly uniform over a small range.
        let mut counts = [0u32; 10];
        for i in 0..100_000 {
            counts[rng.below_at(i, 10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
    }
}

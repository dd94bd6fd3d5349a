//! The portable RNG (docs/FORMAT.md): Random123 known answers, the 32-bit-only multiply the
//! shaders use, conversions, and the named-stream API.

mod philox {
    use dace::rng::philox::*;

    /// SplitMix64, only to generate test inputs.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Random123 `examples/kat_vectors`, lines "philox4x32 10 ...": (counter, key, expected).
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
        ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
        ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
    ];

    #[test]
    fn known_answers() {
        for (ctr, key, want) in KAT {
            assert_eq!(philox4x32_10(ctr, key), want, "ctr {ctr:08x?} key {key:08x?}");
            assert_eq!(philox4x32_10_emulated(ctr, key), want, "emulated, ctr {ctr:08x?}");
        }
    }

    #[test]
    fn emulated_multiply_matches() {
        let edges = [0, 1, 2, 0xFFFF, 0x1_0000, 0x1_0001, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF, PHILOX_M0, PHILOX_M1];
        for &a in &edges {
            for &b in &edges {
                assert_eq!(mulhilo32_emulated(a, b), mulhilo32(a, b), "{a:#x} * {b:#x}");
            }
        }
        let mut s = 1;
        for _ in 0..1_000_000 {
            let v = splitmix(&mut s);
            let (a, b) = (v as u32, (v >> 32) as u32);
            assert_eq!(mulhilo32_emulated(a, b), mulhilo32(a, b), "{a:#x} * {b:#x}");
            // below() is the high word, so a shader can compute it with the emulated multiply.
            assert_eq!(below(a, b), mulhilo32_emulated(a, b).0);
        }
    }

    #[test]
    fn emulated_philox_matches() {
        let mut s = 2;
        for _ in 0..100_000 {
            let (v, w, k) = (splitmix(&mut s), splitmix(&mut s), splitmix(&mut s));
            let ctr = [v as u32, (v >> 32) as u32, w as u32, (w >> 32) as u32];
            let key = [k as u32, (k >> 32) as u32];
            assert_eq!(philox4x32_10_emulated(ctr, key), philox4x32_10(ctr, key));
        }
    }

    #[test]
    fn unit_open_interval_edges() {
        assert_eq!(u32_to_unit_open(0), 2f32.powi(-24));
        assert_eq!(u32_to_unit_open(u32::MAX), 1.0 - 2f32.powi(-24));
        assert!(u32_to_unit_open(u32::MAX) < 1.0);
        // The two documented formulas are the same function.
        let mut s = 3;
        for _ in 0..100_000 {
            let x = splitmix(&mut s) as u32;
            assert_eq!(u32_to_unit_open(x), ((x >> 8) | 1) as f32 * 2f32.powi(-24));
        }
    }

    #[test]
    fn box_muller_is_finite_and_bounded() {
        for (u0, u1) in [(0, 0), (0, u32::MAX), (u32::MAX, 0), (u32::MAX, u32::MAX), (0x8000_0000, 0x4000_0000)] {
            let (a, b) = box_muller(u0, u1);
            assert!(a.is_finite() && b.is_finite());
            assert!(a.abs() <= 5.8 && b.abs() <= 5.8);
        }
    }

    #[test]
    fn below_edges() {
        assert_eq!(below(0, 10), 0);
        assert_eq!(below(u32::MAX, 10), 9);
        assert_eq!(below(u32::MAX, u32::MAX), u32::MAX - 1);
        assert_eq!(below(12345, 0), 0);
        assert_eq!(below(u32::MAX, 1), 0);
    }
}

mod streams {
    #[allow(unused_imports)]
    use dace::rng::philox::*;
    use dace::rng::*;

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
        assert_eq!(backwards.into_iter().rev().collect::<Vec<_>>(), first(&a, 64));
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
            SeedRng::new(2, 1, Stream::VaeSample),             // swapped seed and item
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
        let ids: Vec<[u32; 2]> = all[..10]
            .iter()
            .map(|r| {
                let p = r.shader_params();
                [p[2], p[3]]
            })
            .collect();
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
                assert_eq!(n[i].to_bits(), rng.normal_at(i as u64).to_bits(), "normal {i}");
                assert_eq!(u[i].to_bits(), rng.uniform_at(i as u64).to_bits(), "uniform {i}");
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
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }
}

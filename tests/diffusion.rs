//! Diffusion kernels' math: scheduler coefficients against diffusers (fixture made by
//! tests/fixtures/make_scheduler_fixture.py), the CPU references of the fused kernels
//! (scheduler step, add_noise, latent_lerp) against naive formulas and the RNG streams, and the
//! resize of decoded images to the student's size against PyTorch (tests/fixtures/
//! make_resize_fixture.py).

mod common;

mod scheduler {
    use dace::kernels::coeffs::StepCoeffs;
    use dace::prior::scheduler::*;
    use std::collections::HashMap;

    /// `tests/fixtures/schedulers.txt`: `name v0 v1 ...` per line (diffusers' numbers).
    fn fixture() -> HashMap<String, Vec<f64>> {
        let text = include_str!("../tests/fixtures/schedulers.txt");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split_whitespace();
                let name = it.next().unwrap().to_string();
                let vals = it.map(|v| v.parse::<f64>().unwrap()).collect();
                (name, vals)
            })
            .collect()
    }

    fn get<'a>(f: &'a HashMap<String, Vec<f64>>, k: &str) -> &'a [f64] {
        f.get(k).unwrap_or_else(|| panic!("fixture has no {k}"))
    }

    fn usizes(v: &[f64]) -> Vec<usize> {
        v.iter().map(|&x| x as usize).collect()
    }

    /// |got - want| <= tol * max(1, |want|).
    fn close(got: f64, want: f64, tol: f64) -> bool {
        (got - want).abs() <= tol * want.abs().max(1.0)
    }

    #[test]
    fn betas_and_alphas_cumprod_match_diffusers_f32() {
        let f = fixture();
        let abar = ScheduleConfig::default().alphas_cumprod();
        let want = get(&f, "alphas_cumprod");
        assert_eq!(abar.len(), 1000);
        let worst = abar.iter().zip(want).map(|(a, w)| (a / w - 1.0).abs()).fold(0.0, |m: f64, x| if x.is_nan() || x > m { x } else { m });
        // diffusers' f32 cumprod drifts from the f64 one by ~1e-6 relative.
        assert!(worst < 2e-6, "worst relative error {worst}");
        let betas = betas_scaled_linear(1000, BETA_START, BETA_END);
        assert!((betas[0] - 0.00085).abs() < 1e-15 && (betas[999] - 0.012).abs() < 1e-15);
    }

    #[test]
    fn timesteps_known_values() {
        assert_eq!(timesteps(1000, 5, Spacing::Trailing), vec![999, 799, 599, 399, 199]);
        assert_eq!(timesteps(1000, 4, Spacing::Trailing), vec![999, 749, 499, 249]);
        assert_eq!(timesteps(1000, 3, Spacing::Trailing), vec![999, 666, 332]);
        assert_eq!(timesteps(1000, 1, Spacing::Trailing), vec![999]);
        assert_eq!(timesteps(1000, 5, Spacing::Leading), vec![800, 600, 400, 200, 0]);
        assert_eq!(timesteps_with_offset(1000, 5, Spacing::Leading, 1), vec![801, 601, 401, 201, 1]);
        assert_eq!(timesteps_with_offset(1000, 5, Spacing::Trailing, 1), vec![999, 799, 599, 399, 199]);
        // numpy rounds half to even: N = 16 has step 62.5 -> 937.5 rounds to 938, 812.5 to 812.
        let t16 = timesteps(1000, 16, Spacing::Trailing);
        assert_eq!(&t16[..4], &[999, 937, 874, 811]);
        let t1000 = timesteps(1000, 1000, Spacing::Leading);
        assert_eq!((t1000[0], t1000[999]), (999, 0));
        assert!(ScheduleConfig::stable_diffusion().validate(1000).is_err());
        assert!(ScheduleConfig::stable_diffusion().validate(999).is_ok());
        assert!(ScheduleConfig::default().validate(0).is_err());
    }

    #[test]
    fn timesteps_all_n_match_diffusers_checksums() {
        // For every N in 1..=1000: sum_i (i+1) * (t_i + 1) over diffusers' first N timesteps.
        let f = fixture();
        for (spacing, key) in [(Spacing::Trailing, "check.trailing"), (Spacing::Leading, "check.leading")] {
            let want = get(&f, key);
            assert_eq!(want.len(), 1000);
            for n in 1..=1000 {
                let ts = timesteps(1000, n, spacing);
                assert_eq!(ts.len(), n);
                let sum: f64 = ts.iter().enumerate().map(|(i, &t)| ((i + 1) * (t + 1)) as f64).sum();
                assert_eq!(sum, want[n - 1], "{spacing:?} N = {n}");
            }
        }
    }

    const EA_CASES: [(&str, Spacing, usize, usize); 5] = [
        ("ea_trailing_5", Spacing::Trailing, 5, 1),
        ("ea_trailing_4", Spacing::Trailing, 4, 0),
        ("ea_trailing_3", Spacing::Trailing, 3, 0),
        ("ea_leading_5_off1", Spacing::Leading, 5, 1),
        ("ea_leading_4", Spacing::Leading, 4, 0),
    ];

    fn cfg(spacing: Spacing, steps_offset: usize) -> ScheduleConfig {
        ScheduleConfig { spacing, steps_offset, ..ScheduleConfig::default() }
    }

    #[test]
    fn euler_a_schedule_matches_diffusers() {
        let f = fixture();
        for (name, spacing, n, off) in EA_CASES {
            let c = cfg(spacing, off);
            let ts = c.timesteps(n);
            assert_eq!(ts, usizes(get(&f, &format!("{name}.timesteps"))), "{name}");
            let sig = euler_a_sigmas(&c.alphas_cumprod(), &ts);
            let want = get(&f, &format!("{name}.sigmas"));
            assert_eq!(sig.len(), want.len());
            for (s, w) in sig.iter().zip(want) {
                assert!(close(*s, *w, 3e-5), "{name}: sigma {s} vs {w}");
            }
            let ins = init_noise_sigma(&c, Sampler::EulerAncestral, n);
            let want = get(&f, &format!("{name}.init_noise_sigma"))[0];
            assert!(close(ins, want, 3e-5), "{name}: init_noise_sigma {ins} vs {want}");
        }
        // 1000-step leading schedule, sampled.
        let c = cfg(Spacing::Leading, 0);
        let ts = c.timesteps(1000);
        assert_eq!(vec![ts[0], ts[999]], usizes(get(&f, "ea_leading_1000.timesteps_first_last")));
        let sig = euler_a_sigmas(&c.alphas_cumprod(), &ts);
        for (&i, &w) in get(&f, "ea_leading_1000.sigma_index").iter().zip(get(&f, "ea_leading_1000.sigmas")) {
            assert!(close(sig[i as usize], w, 3e-5), "sigma[{i}] {} vs {w}", sig[i as usize]);
        }
        let ins = euler_a_init_noise_sigma(&sig, Spacing::Leading);
        assert!(close(ins, get(&f, "ea_leading_1000.init_noise_sigma")[0], 3e-5));
    }

    /// Applies `coeffs` to the fixture's x, eps and `noise` in f64.
    fn apply64(c: StepCoeffs, x: &[f64], eps: &[f64], z: &[f64]) -> Vec<f64> {
        (0..x.len()).map(|i| c.ca as f64 * x[i] + c.ce as f64 * eps[i] + c.cz as f64 * z[i]).collect()
    }

    fn assert_all_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(close(*g, *w, tol), "{what}[{i}]: {g} vs diffusers {w}");
        }
    }

    #[test]
    fn euler_a_steps_match_diffusers() {
        let f = fixture();
        let (x, eps) = (get(&f, "x"), get(&f, "eps"));
        for (name, spacing, n, off) in EA_CASES {
            let steps = plan(&cfg(spacing, off), Sampler::EulerAncestral, n);
            assert_eq!(steps.len(), n);
            for (i, s) in steps.iter().enumerate() {
                assert_eq!(s.coeffs.ca, 1.0);
                let noise = get(&f, &format!("{name}.noise_{i}"));
                let got = apply64(s.coeffs, x, eps, noise);
                assert_all_close(&got, get(&f, &format!("{name}.step_{i}")), 5e-6, &format!("{name} step {i}"));
            }
            // The last step lands on sigma = 0: no noise, x_next = x - sigma * eps.
            assert_eq!(steps[n - 1].coeffs.cz, 0.0);
        }
    }

    #[test]
    fn ddim_steps_match_diffusers() {
        let f = fixture();
        let (x, eps, z) = (get(&f, "x"), get(&f, "eps"), get(&f, "z"));
        let cases: [(&str, Spacing, usize, usize, f64, bool); 5] = [
            ("ddim_trailing_5_eta0", Spacing::Trailing, 5, 0, 0.0, true),
            ("ddim_trailing_5_eta1", Spacing::Trailing, 5, 0, 1.0, true),
            ("ddim_trailing_3_eta05", Spacing::Trailing, 3, 0, 0.5, true),
            ("ddim_leading_5_off1_eta1_noone", Spacing::Leading, 5, 1, 1.0, false),
            ("ddim_leading_4_eta0", Spacing::Leading, 4, 0, 0.0, true),
        ];
        for (name, spacing, n, off, eta, one) in cases {
            let c = cfg(spacing, off);
            assert_eq!(c.timesteps(n), usizes(get(&f, &format!("{name}.timesteps"))), "{name}");
            let d = DdimConfig { eta, set_alpha_to_one: one };
            let abar = c.alphas_cumprod();
            let final_abar = if one { 1.0 } else { abar[0] };
            assert!(close(final_abar, get(&f, &format!("{name}.final_alpha_cumprod"))[0], 2e-6));
            let steps = plan(&c, Sampler::Ddim(d), n);
            for (i, s) in steps.iter().enumerate() {
                assert_eq!(s.c_in, 1.0);
                if eta == 0.0 {
                    assert_eq!(s.coeffs.cz, 0.0);
                }
                let got = apply64(s.coeffs, x, eps, z);
                assert_all_close(&got, get(&f, &format!("{name}.step_{i}")), 5e-6, &format!("{name} step {i}"));
            }
        }
        // Trailing N = 3: the previous timestep of 666 is 333 (t - T/N), not the listed 332.
        assert_eq!(ddim_prev_timestep(666, 1000, 3), Some(333));
        assert_eq!(ddim_prev_timestep(199, 1000, 5), None);
    }

    #[test]
    fn ddim_coefficients_follow_the_formula() {
        // Independent check of the algebra at one step, eta = 0.7.
        let abar = ScheduleConfig::default().alphas_cumprod();
        let d = DdimConfig { eta: 0.7, set_alpha_to_one: true };
        let s = DdimStep::new(599, Some(399), &abar, &d);
        let (at, ap) = (abar[599], abar[399]);
        let sd = 0.7 * ((1.0 - ap) / (1.0 - at)).sqrt() * (1.0 - at / ap).sqrt();
        let (x, e, z) = (0.3_f64, -1.2_f64, 0.8_f64);
        let x0 = (x - (1.0 - at).sqrt() * e) / at.sqrt();
        let want = ap.sqrt() * x0 + (1.0 - ap - sd * sd).sqrt() * e + sd * z;
        let c = s.coeffs();
        let got = c.ca as f64 * x + c.ce as f64 * e + c.cz as f64 * z;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Last step with set_alpha_to_one: x_next = x0 exactly, no noise.
        let last = DdimStep::new(199, None, &abar, &d);
        assert_eq!(last.std_dev, 0.0);
        let c = last.coeffs();
        let x0 = (x - (1.0 - abar[199]).sqrt() * e) / abar[199].sqrt();
        assert!((c.ca as f64 * x + c.ce as f64 * e - x0).abs() < 1e-5);
    }

    #[test]
    fn img2img_matches_diffusers() {
        let f = fixture();
        let (x, z) = (get(&f, "x"), get(&f, "z"));
        let c = ScheduleConfig::default();
        for strength in [0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] {
            for (name, sampler) in [("euler_ancestral", Sampler::EulerAncestral), ("ddim", Sampler::Ddim(DdimConfig::default()))] {
                let key = format!("img2img.{name}.{strength:?}");
                let want_ts = usizes(get(&f, &format!("{key}.timesteps")));
                assert_eq!(img2img_timesteps(5, strength, &c), want_ts, "{key}");
                let run = img2img_plan(&c, sampler, 5, strength).unwrap();
                assert_eq!(run.iter().map(|s| s.timestep).collect::<Vec<_>>(), want_ts);
                assert_eq!(run[0].index, 5 - want_ts.len());
                let nc = run[0].add_noise;
                let got: Vec<f64> = (0..x.len()).map(|i| nc.a as f64 * x[i] + nc.b as f64 * z[i]).collect();
                assert_all_close(&got, get(&f, &format!("{key}.add_noise")), 5e-6, &key);
            }
        }
        // Strength quantisation with 5 steps (diffusers' img2img).
        let runs: Vec<usize> = [0.1, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5].iter().map(|&s| 5 - img2img_start(5, s)).collect();
        assert_eq!(runs, vec![0, 2, 2, 3, 3, 4, 5, 5]);
        assert!(img2img_plan(&c, Sampler::EulerAncestral, 5, 0.1).is_none());
    }

    #[test]
    fn euler_a_step_identities() {
        let abar = ScheduleConfig::default().alphas_cumprod();
        for s in euler_a_steps(&abar, &timesteps(1000, 5, Spacing::Trailing)) {
            // Ancestral split: sigma_down^2 + sigma_up^2 = sigma_next^2.
            let lhs = s.sigma_down.powi(2) + s.sigma_up.powi(2);
            assert!((lhs - s.sigma_next.powi(2)).abs() < 1e-12);
            assert!((s.c_in - 1.0 / (s.sigma * s.sigma + 1.0).sqrt()).abs() < 1e-15);
            let c = s.coeffs();
            assert_eq!((c.ca, c.ce, c.cz), (1.0, (s.sigma_down - s.sigma) as f32, s.sigma_up as f32));
        }
    }
}

mod reference {
    use dace::kernels::coeffs::{NoiseCoeffs, StepCoeffs};
    use dace::kernels::diffusion_ref::*;
    #[allow(unused_imports)]
    use dace::prior::scheduler::*;
    #[allow(unused_imports)]
    use dace::rng::{philox::*, SeedRng, Stream};

    fn keys() -> Vec<(SeedRng, NoiseKey)> {
        [
            (0u64, 0u64, Stream::AddNoise),
            (0x0123_4567_89AB_CDEF, 42, Stream::Ancestral(7)),
            (7, 3, Stream::Ancestral(0)),
            (u64::MAX, u64::MAX, Stream::VaeSample),
        ]
        .iter()
        .map(|&(s, i, st)| {
            let r = SeedRng::new(s, i, st);
            (r, noise_key(&r))
        })
        .collect()
    }

    /// Deterministic test data in [-2, 2).
    fn data(n: usize, salt: u32) -> Vec<f32> {
        let r = SeedRng::new(salt as u64, 99, Stream::Shuffle);
        (0..n).map(|i| 4.0 * r.uniform_at(i as u64) - 2.0).collect()
    }

    #[test]
    fn noise_equals_seed_rng() {
        for (rng, key) in keys() {
            for i in (0..103u64).chain([1 << 20, (1 << 32) + 5, u64::MAX - 2]) {
                assert_eq!(normal_at(key, i).to_bits(), rng.normal_at(i).to_bits(), "i = {i}");
            }
        }
        // FORMAT.md known answers, through the key quad.
        let key = noise_key(&SeedRng::new(0x0123_4567_89AB_CDEF, 42, Stream::Ancestral(7)));
        assert_eq!(key, [0x2f7c7ab8, 0x897c9951, 3, 7]);
        let want = [0.4776975, 0.5945772, -0.19818182, 0.17035033];
        for (i, w) in want.iter().enumerate() {
            assert!((normal_at(key, i as u64) - w).abs() < 1e-6);
        }
    }

    #[test]
    fn scheduler_step_matches_naive() {
        let ks = keys();
        for len in [1usize, 3, 4, 5, 64, 67] {
            let batch = ks.len();
            let (x, eps) = (data(len * batch, 1), data(len * batch, 2));
            for c in [StepCoeffs { ca: 1.0, ce: -12.84345, cz: 4.769509 }, StepCoeffs { ca: 2.825171, ce: -2.4769883, cz: 0.0 }] {
                let keyv: Vec<NoiseKey> = ks.iter().map(|k| k.1).collect();
                let mut out = vec![f32::NAN; len * batch];
                scheduler_step_batched(&x, &eps, c, &keyv, &mut out);
                for (p, (rng, key)) in ks.iter().enumerate() {
                    let mut single = vec![f32::NAN; len];
                    let r = p * len..(p + 1) * len;
                    scheduler_step(&x[r.clone()], &eps[r.clone()], c, *key, &mut single);
                    for (j, s) in single.iter().enumerate() {
                        let i = p * len + j;
                        let z = if c.cz == 0.0 { 0.0 } else { rng.normal_at(j as u64) };
                        let want = c.ca * x[i] + c.ce * eps[i] + c.cz * z;
                        assert_eq!(out[i].to_bits(), want.to_bits(), "len {len} p {p} j {j}");
                        assert_eq!(s.to_bits(), want.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn add_noise_matches_naive() {
        let ks = keys();
        for len in [1usize, 6, 16, 33] {
            let z0 = data(len * ks.len(), 3);
            let keyv: Vec<NoiseKey> = ks.iter().map(|k| k.1).collect();
            for (a, b) in [(1.0f32, 2.276464f32), (0.3, 0.95), (0.7, 0.0)] {
                let mut out = vec![f32::NAN; z0.len()];
                add_noise_batched(&z0, NoiseCoeffs { a, b }, &keyv, &mut out);
                for (p, (rng, key)) in ks.iter().enumerate() {
                    let r = p * len..(p + 1) * len;
                    let mut single = vec![f32::NAN; len];
                    add_noise(&z0[r.clone()], a, b, *key, &mut single);
                    for j in 0..len {
                        let n = if b == 0.0 { 0.0 } else { rng.normal_at(j as u64) };
                        let want = a * z0[p * len + j] + b * n;
                        assert_eq!(out[p * len + j].to_bits(), want.to_bits());
                        assert_eq!(single[j].to_bits(), want.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn latent_lerp_matches_naive() {
        let ks = keys();
        let keyv: Vec<NoiseKey> = ks.iter().map(|k| k.1).collect();
        let gamma = [0.0f32, 0.25, 0.8, 1.0];
        for len in [2usize, 5, 40] {
            let (z1, z2) = (data(len * 4, 4), data(len * 4, 5));
            for (a, b) in [(1.0f32, 1.1605788f32), (0.6, 0.8), (1.0, 0.0)] {
                let mut out = vec![f32::NAN; z1.len()];
                latent_lerp(&z1, &z2, &gamma, a, b, &keyv, &mut out);
                for (p, (rng, _)) in ks.iter().enumerate() {
                    for j in 0..len {
                        let i = p * len + j;
                        let n = if b == 0.0 { 0.0 } else { rng.normal_at(j as u64) };
                        let want = (gamma[p] * z1[i] + (1.0 - gamma[p]) * z2[i]) * a + b * n;
                        assert_eq!(out[i].to_bits(), want.to_bits(), "p {p} j {j}");
                    }
                }
                // gamma 1 and 0 select z1 and z2 exactly (before noise).
                if b == 0.0 && a == 1.0 {
                    assert_eq!(&out[..len], &z2[..len]);
                    assert_eq!(&out[3 * len..], &z1[3 * len..]);
                }
            }
        }
    }

    #[test]
    fn launch_geometry_and_params() {
        assert_eq!(kernel_threads(16384, 3), 3 * 4096);
        assert_eq!(kernel_threads(5, 2), 4);
        assert_eq!(workgroups(1), (1, 1));
        assert_eq!(workgroups(256 * 65_535), (65_535, 1));
        assert_eq!(workgroups(256 * 65_535 + 1), (65_535, 2));
        let w = step_params(StepCoeffs { ca: 1.0, ce: -0.5, cz: 0.25 }, 16384, 2);
        assert_eq!(w, [0x3f80_0000, 0xbf00_0000, 0x3e80_0000, 16384, 2, 0, 0, 0]);
        assert_eq!(add_noise_params(NoiseCoeffs { a: 1.0, b: 2.0 }, 8, 1), [0x3f80_0000, 0x4000_0000, 8, 1]);
        assert_eq!(lerp_params(1.0, 0.0, 8, 3), [0x3f80_0000, 0, 8, 3]);
    }

    /// Rust transcription of the shader's Box-Muller (`shaders/philox.wgsl`, `kernels/philox.cuh`):
    /// software `ln` and `sin`/`cos` built from f32 adds and multiplies only, because WGSL's
    /// built-ins are only specified to 2^-11 (sin, cos, inside [-pi, pi]) and 2^-21 absolute (log
    /// near 1). Kept here to prove the algorithm agrees with the libm-based CPU normals.
    mod shader_math {
        // The bits are authoritative; `shader_constants_match` checks that the decimal literals
        // in shaders/philox.wgsl and kernels/philox.cuh round to exactly these.
        pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 16 significant bits
        pub const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
        pub const PIO2_1: f32 = f32::from_bits(0x3fc9_0fd0); // 20 significant bits
        pub const PIO2_2: f32 = f32::from_bits(0x35aa_2210); // 20 significant bits
        pub const PIO2_3: f32 = f32::from_bits(0x2b51_8000);
        pub const TWO_OVER_PI: f32 = f32::from_bits(0x3f22_f983);
        pub const SQRT2: f32 = f32::from_bits(0x3fb5_04f3);

        /// ln(u) for a normal positive f32 u.
        pub fn ln(u: f32) -> f32 {
            let bits = u.to_bits();
            let mut e = ((bits >> 23) & 0xff) as i32 - 127;
            let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
            if m > SQRT2 {
                m *= 0.5;
                e += 1;
            }
            let f = m - 1.0; // exact
            let s = f / (2.0 + f);
            let s2 = s * s;
            // 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), |s| <= 0.1716
            let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
            let ef = e as f32;
            ef * LN2_HI + (2.0 * s * p + ef * LN2_LO)
        }

        /// (cos, sin) of theta in [0, 2pi + small].
        pub fn sincos(theta: f32) -> (f32, f32) {
            let k = (theta * TWO_OVER_PI + 0.5).floor();
            let y = ((theta - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
            let y2 = y * y;
            let s = y + y * y2 * (-1.0 / 6.0 + y2 * (1.0 / 120.0 + y2 * (-1.0 / 5040.0 + y2 * (1.0 / 362880.0))));
            let c = 1.0 + y2 * (-0.5 + y2 * (1.0 / 24.0 + y2 * (-1.0 / 720.0 + y2 * (1.0 / 40320.0 + y2 * (-1.0 / 3628800.0)))));
            match (k as i32) & 3 {
                0 => (c, s),
                1 => (-s, c),
                2 => (-c, -s),
                _ => (s, -c),
            }
        }

        pub fn box_muller(x0: u32, x1: u32) -> (f32, f32) {
            let r = (-2.0 * ln(super::u32_to_unit_open(x0))).sqrt();
            let theta = std::f32::consts::TAU * super::u32_to_unit_open(x1);
            let (c, s) = sincos(theta);
            (r * c, r * s)
        }
    }

    /// Every `NAME: f32 = <decimal>; // 0x<bits>` (WGSL) and `float NAME = <decimal>f; // 0x<bits>`
    /// (CUDA) constant of the shader sources parses to the bits in its comment, and those are the
    /// bits of the transcription above.
    #[test]
    fn shader_constants_match() {
        use shader_math::*;
        let want: [(&str, f32); 8] = [
            ("LN2_HI", LN2_HI),
            ("LN2_LO", LN2_LO),
            ("PIO2_1", PIO2_1),
            ("PIO2_2", PIO2_2),
            ("PIO2_3", PIO2_3),
            ("TWO_OVER_PI", TWO_OVER_PI),
            ("SQRT2", SQRT2),
            ("TWO_PI", std::f32::consts::TAU),
        ];
        for (file, src) in [("philox.wgsl", include_str!("../shaders/philox.wgsl")), ("philox.cuh", include_str!("../kernels/philox.cuh"))]
        {
            let mut seen = 0;
            for line in src.lines() {
                let Some((code, comment)) = line.split_once("//") else {
                    continue;
                };
                let Some((lhs, rhs)) = code.split_once('=') else {
                    continue;
                };
                let Some(hex) = comment.trim().strip_prefix("0x") else {
                    continue;
                };
                let name = lhs.trim().trim_end_matches(": f32").split_whitespace().last().unwrap();
                let name = name.trim_start_matches("PHILOX_");
                let lit = rhs.trim().trim_end_matches(';').trim_end_matches('f');
                let bits = u32::from_str_radix(hex.split_whitespace().next().unwrap(), 16).unwrap();
                assert_eq!(lit.parse::<f32>().unwrap().to_bits(), bits, "{file}: {name}");
                let (_, v) = want.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{file}: {name}?"));
                assert_eq!(v.to_bits(), bits, "{file}: {name}");
                seen += 1;
            }
            assert_eq!(seen, want.len(), "{file}: constants found");
        }
    }

    #[test]
    fn shader_ln_is_accurate_on_every_uniform() {
        // Every possible uniform value: (k + 0.5) * 2^-23, k in 0..2^23.
        let mut worst_rel = 0f64;
        let mut worst_r = 0f64;
        for k in 0..(1u32 << 23) {
            let u = u32_to_unit_open(k << 9);
            let got = shader_math::ln(u) as f64;
            let want = (u as f64).ln();
            worst_rel = worst_rel.max(((got - want) / want).abs());
            // What matters downstream: r = sqrt(-2 ln u).
            let r = (-2.0 * shader_math::ln(u)).sqrt() as f64;
            worst_r = worst_r.max((r - (-2.0 * want).sqrt()).abs());
        }
        eprintln!("shader ln: worst relative error {worst_rel:e}, worst r error {worst_r:e}");
        assert!(worst_rel < 4e-7, "ln relative error {worst_rel:e}");
        assert!(worst_r < 1e-6, "r absolute error {worst_r:e}");
    }

    #[test]
    fn shader_sincos_is_accurate_on_every_angle() {
        let mut worst = 0f64;
        for k in 0..(1u32 << 23) {
            let theta = std::f32::consts::TAU * u32_to_unit_open(k << 9);
            let (c, s) = shader_math::sincos(theta);
            let t = theta as f64;
            worst = worst.max((c as f64 - t.cos()).abs()).max((s as f64 - t.sin()).abs());
        }
        eprintln!("shader sincos: worst absolute error {worst:e}");
        assert!(worst < 2e-7, "sin/cos absolute error {worst:e}");
    }

    #[test]
    fn shader_normals_match_cpu_normals() {
        let mut worst = 0f32;
        for (rng, _) in keys() {
            for b in 0..20_000u64 {
                let w = [rng.u32_at(4 * b), rng.u32_at(4 * b + 1), rng.u32_at(4 * b + 2), rng.u32_at(4 * b + 3)];
                let (c0, s0) = shader_math::box_muller(w[0], w[1]);
                let (c1, s1) = shader_math::box_muller(w[2], w[3]);
                for (lane, v) in [c0, s0, c1, s1].iter().enumerate() {
                    worst = worst.max((v - rng.normal_at(4 * b + lane as u64)).abs());
                }
            }
        }
        eprintln!("shader normals vs CPU: worst absolute difference {worst:e}");
        assert!(worst < 1e-6, "shader normal vs CPU: {worst:e}");
    }
}

/// `resize_antialiased`, the resize of a prior's decoded images to the student's size, against
/// PyTorch's `interpolate(mode="bilinear", align_corners=False, antialias=True)`.
mod resize {
    use crate::common::nan_max;
    use dace::data::transform::{resize_antialiased, resize_bilinear};
    use serde_json::Value;

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    }

    fn sizes(v: &Value) -> Vec<usize> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
    }

    /// The fixture's cases: identity, upscaling, downscaling (2.4x, 2.86x, and 32 -> 14, the
    /// ratio of 512 -> 224), one axis up and the other down.
    #[test]
    fn antialiased_resize_matches_pytorch() {
        let fixture: Value = serde_json::from_str(include_str!("fixtures/resize.json")).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let (&[c, h, w], &[oh, ow]) = (&sizes(&case["shape"])[..], &sizes(&case["size"])[..]) else { panic!("{name}: shapes") };
            let (input, want) = (floats(&case["input"]), floats(&case["output"]));
            let got = resize_antialiased(&input, c, h, w, oh, ow);
            assert_eq!(got.len(), want.len(), "{name}");
            let diff = nan_max(got.iter().zip(&want).map(|(a, b)| (a - b).abs()));
            eprintln!("{name}: {c}x{h}x{w} -> {oh}x{ow}, max |dace - torch| = {diff:e}");
            if (h, w) == (oh, ow) {
                assert_eq!(got, input, "{name}: an unchanged size is a copy");
            }
            // The same weights as PyTorch's CPU kernel, accumulated without its fused multiply-adds
            // (measured: 0 for the identity, at most 6.0e-8 otherwise, an ulp or two).
            assert!(diff <= 2e-7, "{name}: max |dace - torch| = {diff:e}");
        }
    }

    /// Why the antialiased resize: shrinking a checkerboard averages it out (PyTorch: 0.0204),
    /// where plain bilinear picks pixels and keeps most of its contrast (0.735); a constant stays
    /// that constant (the weights sum to 1).
    #[test]
    fn shrinking_averages_instead_of_aliasing() {
        let board: Vec<f32> = (0..32 * 32).map(|i| if (i / 32 + i % 32) % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let smooth = nan_max(resize_antialiased(&board, 1, 32, 32, 14, 14).iter().map(|v| v.abs()));
        let mut plain = vec![0f32; 14 * 14];
        resize_bilinear(&board, 1, 32, 32, 14, 14, &mut plain);
        let aliased = nan_max(plain.iter().map(|v| v.abs()));
        assert!(smooth < 0.03 && aliased > 0.7, "antialiased {smooth}, plain {aliased}");
        let flat = resize_antialiased(&vec![0.3f32; 3 * 32 * 32], 3, 32, 32, 14, 14);
        assert!(nan_max(flat.iter().map(|v| (v - 0.3).abs())) < 1e-6);
    }
}

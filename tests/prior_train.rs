//! `dace prior train` on the embedded Fashion-MNIST subset with a tiny config: the diffusers
//! layout on disk, checkpoint/resume, refusal of mismatched settings, and loading and sampling.

use burn::backend::Autodiff;
use dace::device::CpuBackend;
use dace::prior::bundle::{self, Prior};
use dace::prior::train::{sample_classes, train_prior, PriorTrainConfig, Stage};
use dace::prior::{weights, UNetConfig, VaeConfig};

type B = CpuBackend;

fn tiny(vae_steps: usize, unet_steps: usize) -> PriorTrainConfig {
    PriorTrainConfig {
        vae_channels: vec![8, 16],
        unet_channels: vec![16, 32],
        class_dim: 16,
        vae_steps,
        unet_steps,
        batch_size: 8,
        checkpoint_every: 2,
        sample_steps: 2,
        ..PriorTrainConfig::default()
    }
}

#[test]
fn trains_in_stages_resumes_and_loads_as_a_diffusers_layout_prior() {
    let ds = dace::data::load_embedded().per_class_subset(20, 20);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prior");
    let device = Default::default();

    // Stop after the VAE stage (no UNet steps), then resume with a UNet budget.
    let state = train_prior::<Autodiff<B>>(tiny(4, 0), &ds, &out, false, &device).unwrap();
    assert_eq!((state.stage, state.vae_step, state.unet_step), (Stage::Unet, 4, 0));
    assert!(state.fingerprint.is_none(), "no fingerprint before the prior is complete");
    let err = Prior::<B>::load(&out, &device).err().expect("a prior without its UNet must not load").to_string();
    assert!(err.contains("unet/config.json"), "{err}");
    let err = Prior::<B>::load(dir.path(), &device).err().expect("not a prior").to_string();
    assert!(err.contains("model_index.json") && err.contains("not a dace prior"), "{err}");
    // Other architecture: refused, naming the checkpoint.
    let other = PriorTrainConfig { unet_channels: vec![16, 16], ..tiny(4, 4) };
    let err = train_prior::<Autodiff<B>>(other, &ds, &out, false, &device).unwrap_err().to_string();
    assert!(err.contains("other settings") && err.contains("train_state.json"), "{err}");
    // The finished VAE stage cannot be re-budgeted.
    let err = train_prior::<Autodiff<B>>(tiny(6, 4), &ds, &out, false, &device).unwrap_err().to_string();
    assert!(err.contains("--vae-steps"), "{err}");

    let state = train_prior::<Autodiff<B>>(tiny(4, 4), &ds, &out, false, &device).unwrap();
    assert_eq!(state.stage, Stage::Done);
    assert_eq!((state.vae_step, state.unet_step), (4, 4));
    assert_eq!(state.vae_history.len(), 2, "a checkpoint every 2 steps");
    assert!(state.scaling_factor.unwrap() > 0.0);
    for f in [
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "unet/config.json",
        "class_embedder/config.json",
        "model_index.json",
        "samples/unet_step000004.png",
        "samples/vae_step000004.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // The configs are diffusers configs dace's own checker accepts.
    VaeConfig::load(&out.join("vae").join(weights::CONFIG_FILE)).unwrap();
    UNetConfig::load(&out.join("unet").join(weights::CONFIG_FILE)).unwrap();

    // Resuming a finished run does no more steps and leaves the weights as they are.
    let fp = bundle::fingerprint(&out).unwrap();
    let again = train_prior::<Autodiff<B>>(tiny(4, 4), &ds, &out, false, &device).unwrap();
    assert_eq!(again.unet_step, 4);
    assert_eq!(bundle::fingerprint(&out).unwrap(), fp);
    assert_eq!(again.fingerprint.as_deref(), Some(fp.as_str()));

    let prior = Prior::<B>::load(&out, &device).unwrap();
    assert_eq!(prior.latent_shape(), [4, 14, 14]);
    let x = sample_classes(
        &prior.vae,
        &prior.unet,
        &prior.classes,
        &[0, 3, 9],
        prior.latent_shape(),
        prior.vae_config.scaling_factor,
        2,
        2.0,
        0,
        0,
        &device,
    );
    assert_eq!(x.dims(), [3, 1, 28, 28]);
    let v = x.clone().into_data().to_vec::<f32>().unwrap();
    assert!(v.iter().all(|p| p.is_finite()));
    // Same seed, same samples.
    let y = sample_classes(
        &prior.vae,
        &prior.unet,
        &prior.classes,
        &[0, 3, 9],
        prior.latent_shape(),
        prior.vae_config.scaling_factor,
        2,
        2.0,
        0,
        0,
        &device,
    );
    assert_eq!(x.into_data(), y.into_data());

    // A corrupted weight file is refused with its name.
    let w = out.join("unet").join(weights::WEIGHTS_FILE);
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = Prior::<B>::load(&out, &device).err().expect("truncated weights must not load").to_string();
    assert!(err.contains("unet/diffusion_pytorch_model.safetensors"), "{err}");
}

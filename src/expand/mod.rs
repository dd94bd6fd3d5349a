//! Diffusion-augmented coreset expansion (paper §3.2–3.4): the expander and the regenerator.
//!
//! One expansion is a pure function of (prior, patch set, settings, seed, item): upsample the
//! patch to the size the prior works at, VAE-encode (a posterior sample), optionally mix the
//! latent with a same-class partner's, noise it to strength `rho`, denoise, decode, resize to the
//! student's size on the host (when the prior works at another), quantise to u8. Every
//! random draw comes from the item's named Philox streams (docs/FORMAT.md), so the student side
//! regenerates the exact images the teacher labelled, on any device. The settings themselves are
//! the package format's ([`crate::package::settings`]).

use burn::prelude::*;

use crate::data::transform::{resize_antialiased, resize_bilinear};
use crate::error::{DaceError, Result};
use crate::kernels::diffusion::{latent_lerp, DiffusionKernels};
use crate::kernels::DaceBackend;
use crate::package::{ExpandConfig, Manifest, Mode, Resolutions};
use crate::prior::bundle::Prior;
use crate::prior::pipeline::{self, keys, Guidance, NoiseId};
use crate::prior::scheduler::{self, DenoiseStep, ScheduleConfig};
use crate::rng::{SeedRng, Stream};

/// `[c, h, w]` u8 patches upsampled to `[c, oh, ow]` in `[-1, 1]` (bilinear, half-pixel centres).
pub fn upsample_patches(patches: &[u8], [c, ph, pw]: [usize; 3], [oh, ow]: [usize; 2]) -> Vec<f32> {
    let plen = c * ph * pw;
    let mut out = vec![0f32; patches.len() / plen.max(1) * c * oh * ow];
    for (p, dst) in patches.chunks(plen).zip(out.chunks_mut(c * oh * ow)) {
        let src: Vec<f32> = p.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        resize_bilinear(&src, c, ph, pw, oh, ow, dst);
    }
    out
}

/// `[-1, 1]` -> u8, round half away from zero (NaN is refused by the caller).
pub fn quantize(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Regenerates expansions of a fixed patch set with a loaded prior.
pub struct Expander<'a, B: DaceBackend + DiffusionKernels> {
    prior: Option<&'a Prior<B>>,
    config: ExpandConfig,
    steps: Vec<DenoiseStep>,
    init_sigma: f64,
    /// The u8 patches, `patch_shape` each, upsampled to the prior's size one batch at a time (at
    /// 512x512 an upsampled copy of every patch would take 3 MB each).
    patches: Vec<u8>,
    patch_shape: [usize; 3],
    classes: Vec<u32>,
    by_class: Vec<Vec<usize>>,
    /// `[c, h, w]` of the images the prior works on.
    shape: [usize; 3],
    /// The student's `[h, w]`, which the decoded images are resized to.
    image_size: [usize; 2],
    batch: usize,
    device: B::Device,
}

impl<'a, B: DaceBackend + DiffusionKernels> Expander<'a, B> {
    /// `patches`: u8 `[c, ph, pw]` back to back (`ph x pw` = `sizes.patch_size`), one class per
    /// patch; the expansions are made at `sizes.prior_size` and delivered at `sizes.image_size`.
    /// `prior` may be `None` only for [`Mode::Upsample`], whose `prior_size` is `image_size`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prior: Option<&'a Prior<B>>,
        config: ExpandConfig,
        patches: &[u8],
        channels: usize,
        sizes: Resolutions,
        classes: Vec<u32>,
        batch: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let steps = config.plan()?;
        let (c, [ph, pw], [h, w]) = (channels, sizes.patch_size, sizes.prior_size);
        if patches.len() != classes.len() * c * ph * pw {
            return Err(DaceError::Invalid(format!("{} patch bytes for {} patches of {c}x{ph}x{pw}", patches.len(), classes.len())));
        }
        if c * ph * pw * h * w == 0 || sizes.image_size.contains(&0) {
            return Err(DaceError::Invalid(format!("expansion sizes {sizes:?} of {c} channels: every size must be at least 1")));
        }
        let num_classes = classes.iter().map(|&k| k as usize + 1).max().unwrap_or(0);
        if config.mode == Mode::Upsample && sizes.prior_size != sizes.image_size {
            return Err(DaceError::Invalid(format!(
                "plain upsampling has no prior to work at {:?}: its patches go straight to the image size {:?}",
                sizes.prior_size, sizes.image_size
            )));
        }
        if config.mode != Mode::Upsample {
            let Some(p) = prior else {
                return Err(DaceError::Invalid(format!("expansion mode {:?} needs a prior", config.mode)));
            };
            check_prior_fits(p, c, sizes.prior_size)?;
            let loaded = p.unet.dtype();
            if loaded != config.unet_dtype.float() {
                return Err(DaceError::Invalid(format!(
                    "the prior's UNet is loaded in {loaded:?}, but these expansions are made with it in {}: load it with `Prior::with_unet_dtype`",
                    config.unet_dtype.name()
                )));
            }
            if num_classes > p.index.classes.len() {
                return Err(DaceError::Invalid(format!(
                    "patch class {} is outside the prior's {} classes",
                    num_classes - 1,
                    p.index.classes.len()
                )));
            }
        }
        let mut by_class = vec![Vec::new(); num_classes];
        for (i, &k) in classes.iter().enumerate() {
            by_class[k as usize].push(i);
        }
        let init_sigma = scheduler::init_noise_sigma(&ScheduleConfig::default(), config.sampler(), config.steps.max(1));
        Ok(Expander {
            prior,
            config,
            steps,
            init_sigma,
            patches: patches.to_vec(),
            patch_shape: [c, ph, pw],
            classes,
            by_class,
            shape: [c, h, w],
            image_size: sizes.image_size,
            batch: batch.max(1),
            device: device.clone(),
        })
    }

    /// The expander of a package's (or a distillation's) manifest and patches.
    pub fn for_manifest(prior: Option<&'a Prior<B>>, m: &Manifest, patches: &[u8], batch: usize, device: &B::Device) -> Result<Self> {
        Self::new(prior, m.expansion.clone(), patches, m.channels, m.resolutions(), m.items.clone(), batch, device)
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    pub fn config(&self) -> &ExpandConfig {
        &self.config
    }

    /// Values of one delivered (student-size) image.
    pub fn image_len(&self) -> usize {
        self.shape[0] * self.image_size[0] * self.image_size[1]
    }

    /// Values of one image at the prior's size (what [`Expander::expand_tensor`] makes).
    fn work_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The mixup partner and gamma of `item` under `seed`: a uniform other patch of its class
    /// (stream `MixupPartner`) and `g = a + (b - a) u` (stream `MixupGamma`). `None` without
    /// mixup or when the class has one patch.
    pub fn mixup_choice(&self, item: usize, seed: u64) -> Option<(usize, f32)> {
        let [a, b] = self.config.mixup?;
        let same = &self.by_class[self.classes[item] as usize];
        if same.len() < 2 {
            return None;
        }
        let pick = SeedRng::new(seed, item as u64, Stream::MixupPartner).below_at(0, (same.len() - 1) as u32) as usize;
        // Uniform over the class's other patches: skip the item itself.
        let own = same.iter().position(|&j| j == item).expect("item in its class");
        let partner = same[if pick >= own { pick + 1 } else { pick }];
        let g = a + (b - a) * SeedRng::new(seed, item as u64, Stream::MixupGamma).uniform_at(0);
        Some((partner, g))
    }

    /// The patches of `items` upsampled to the prior's size, as one batch.
    fn upsampled(&self, items: &[usize]) -> Tensor<B, 4> {
        let len: usize = self.patch_shape.iter().product();
        let bytes: Vec<u8> = items.iter().flat_map(|&i| self.patches[i * len..(i + 1) * len].iter().copied()).collect();
        let [c, h, w] = self.shape;
        let data = upsample_patches(&bytes, self.patch_shape, [h, w]);
        Tensor::from_data(TensorData::new(data, [items.len(), c, h, w]), &self.device)
    }

    /// Expansions of `items` under `seed` as one batch on the device, `[-1, 1]` before rounding
    /// to u8, at the prior's size (for callers that read results back asynchronously, like the
    /// browser demo: [`Expander::to_image_size`] then brings them to the student's size).
    pub fn expand_tensor(&self, items: &[usize], seed: u64) -> Tensor<B, 4> {
        let x = self.upsampled(items);
        let Some(prior) = self.prior.filter(|_| self.config.mode != Mode::Upsample) else { return x };
        let ids: Vec<NoiseId> = items.iter().map(|&i| NoiseId { seed, item: i as u64 }).collect();
        let class_ids: Vec<usize> = items.iter().map(|&i| self.classes[i] as usize).collect();
        let ctx = prior.cond(&class_ids, &self.device);
        let g = Guidance { uncond: prior.cond(&vec![prior.classes.null_class(); items.len()], &self.device), scale: self.config.guidance };
        let guidance = (self.config.guidance != 1.0).then_some(&g);
        let sf = prior.vae_config.scaling_factor;
        let z = match self.config.mode {
            Mode::Upsample => unreachable!("handled above"),
            Mode::Generate => {
                let [_, h, w] = self.shape;
                pipeline::sample_latents(&prior.unet, prior.latent_shape_at([h, w]), &ctx, guidance, &self.steps, self.init_sigma, &ids)
            }
            Mode::Img2img => {
                let z1 = pipeline::encode_latents(&prior.vae, x, sf, &ids);
                let choices: Vec<Option<(usize, f32)>> = items.iter().map(|&i| self.mixup_choice(i, seed)).collect();
                if self.config.mixup.is_some() {
                    // The partner's latent is its own posterior sample under the same seed; items
                    // without a partner mix with themselves (g = 1).
                    let partners: Vec<usize> = items.iter().zip(&choices).map(|(&i, ch)| ch.map_or(i, |c| c.0)).collect();
                    let gammas: Vec<f32> = choices.iter().map(|ch| ch.map_or(1.0, |c| c.1)).collect();
                    let pids: Vec<NoiseId> = partners.iter().map(|&p| NoiseId { seed, item: p as u64 }).collect();
                    let z2 = pipeline::encode_latents(&prior.vae, self.upsampled(&partners), sf, &pids);
                    let first = self.steps[0];
                    let z = latent_lerp(z1, z2, &gammas, first.add_noise, &keys(&ids, Stream::AddNoise));
                    pipeline::run_steps(&prior.unet, z, &ctx, guidance, &self.steps, &ids)
                } else {
                    pipeline::denoise(&prior.unet, z1, &ctx, guidance, &self.steps, &ids)
                }
            }
        };
        prior.vae.decode(z.div_scalar(sf))
    }

    /// A batch of [`Expander::expand_tensor`]'s values, read back, at the student's size: each
    /// image resized by [`resize_antialiased`] on the host (one function for every device and the
    /// browser); returned as it is when the prior works at the student's size.
    pub fn to_image_size(&self, pixels: Vec<f32>) -> Vec<f32> {
        let [c, h, w] = self.shape;
        let [oh, ow] = self.image_size;
        if [h, w] == [oh, ow] {
            return pixels;
        }
        pixels.chunks(self.work_len()).flat_map(|image| resize_antialiased(image, c, h, w, oh, ow)).collect()
    }

    /// u8 CHW expansions of `items` under `seed`, back to back, in batches of the configured size.
    /// Batch composition does not change an item's noise; it may change the last bits of floats on
    /// some backends, so regenerate with the same batch size for bit-identical results.
    pub fn expand(&self, items: &[usize], seed: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(items.len() * self.image_len());
        for chunk in items.chunks(self.batch) {
            let v: Vec<f32> =
                self.expand_tensor(chunk, seed).into_data().to_vec().map_err(|e| DaceError::Invalid(format!("expansion output: {e:?}")))?;
            if let Some(pos) = v.iter().position(|x| !x.is_finite()) {
                let item = chunk[pos / self.work_len()];
                return Err(DaceError::Invalid(format!("the prior produced non-finite pixels for item {item} under seed {seed}")));
            }
            out.extend(self.to_image_size(v).iter().map(|&p| quantize(p)));
        }
        Ok(out)
    }

    /// Every item's expansion under `seed`.
    pub fn expand_all(&self, seed: u64) -> Result<Vec<u8>> {
        let items: Vec<usize> = (0..self.len()).collect();
        self.expand(&items, seed)
    }
}

/// Refuses a prior that cannot make `c`-channel images at `size`: other channels, or a size its
/// VAE cannot encode and decode back (not a multiple of its downsampling factor).
fn check_prior_fits<B: DaceBackend>(prior: &Prior<B>, c: usize, size: [usize; 2]) -> Result<()> {
    let pc = prior.index.image_shape[0];
    if pc != c {
        return Err(DaceError::Invalid(format!("the prior works on {pc}-channel images, the patches have {c} channels")));
    }
    let f = prior.vae_config.downscale();
    if size.iter().any(|s| s % f != 0) {
        return Err(DaceError::Invalid(format!(
            "the prior cannot work at {}x{}: not a multiple of its VAE's downsampling factor {f}",
            size[0], size[1]
        )));
    }
    Ok(())
}

/// Each epoch's images regenerated from its seed, kept in memory (never on disk) so that later
/// epochs reusing a seed, and further students of the same package, do not pay for them again.
/// The memory is bounded by a budget ([`Regenerator::with_cache_bytes`]): seeds are cached while
/// they fit and never evicted. Epochs visit the seeds in a cycle, where evicting the least
/// recently used seed would evict each one just before its reuse and never hit; keeping the
/// first ones makes `budget / all seeds' bytes` of the later epochs hits.
pub struct Regenerator<'a, B: DaceBackend + DiffusionKernels> {
    expander: Expander<'a, B>,
    /// Expanders of the same package on further devices: an epoch's batches are spread over all.
    more: Vec<Expander<'a, B>>,
    cache: Vec<Option<std::sync::Arc<Vec<u8>>>>,
    budget: usize,
    cached: usize,
    /// Time spent regenerating and the number of images regenerated.
    pub seconds: f64,
    pub images: usize,
    /// Epochs served from the cache.
    pub hits: usize,
}

impl<'a, B: DaceBackend + DiffusionKernels> Regenerator<'a, B> {
    /// A regenerator caching every seed (see [`Regenerator::with_cache_bytes`]).
    pub fn new(expander: Expander<'a, B>, seeds: usize) -> Self {
        Regenerator {
            expander,
            more: Vec::new(),
            cache: vec![None; seeds],
            budget: usize::MAX,
            cached: 0,
            seconds: 0.0,
            images: 0,
            hits: 0,
        }
    }

    /// Spreads each epoch's batches over `more` devices besides the first expander's: contiguous
    /// runs of whole batches, one per device, so every batch is the one a single device makes and
    /// the images are the same bytes where the devices compute alike.
    pub fn with_devices(mut self, more: Vec<Expander<'a, B>>) -> Self {
        self.more = more;
        self
    }

    /// Devices the epochs are made on.
    pub fn devices(&self) -> usize {
        1 + self.more.len()
    }

    /// Caches at most `bytes` of images (0: none).
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
    }

    /// Bytes of images held in the cache.
    pub fn cached_bytes(&self) -> usize {
        self.cached
    }

    pub fn expander(&self) -> &Expander<'a, B> {
        &self.expander
    }

    /// Keeps `images` as seed number `s`'s if they fit in the budget.
    fn store(&mut self, s: usize, images: &std::sync::Arc<Vec<u8>>) {
        let fits = self.cached.checked_add(images.len()).is_some_and(|total| total <= self.budget);
        if let Some(slot @ None) = self.cache.get_mut(s) {
            if fits {
                *slot = Some(images.clone());
                self.cached += images.len();
            }
        }
    }

    /// Stores images made elsewhere (by `distill` in the same process) as seed number `s`'s.
    pub fn prefill(&mut self, s: usize, images: std::sync::Arc<Vec<u8>>) {
        self.store(s, &images);
    }

    /// Every item's expansion under `seed`, made on every device at once (one thread each).
    fn expand_spread(&self, seed: u64) -> Result<Vec<u8>> {
        if self.more.is_empty() {
            return self.expander.expand_all(seed);
        }
        let expanders: Vec<&Expander<'a, B>> = std::iter::once(&self.expander).chain(&self.more).collect();
        let (items, batch) = (self.expander.len(), self.expander.batch);
        let per_device = items.div_ceil(batch).div_ceil(expanders.len()) * batch;
        std::thread::scope(|scope| {
            let parts: Vec<_> = expanders
                .iter()
                .enumerate()
                .map(|(d, e)| {
                    let range: Vec<usize> = ((d * per_device).min(items)..((d + 1) * per_device).min(items)).collect();
                    scope.spawn(move || e.expand(&range, seed))
                })
                .collect();
            let mut out = Vec::with_capacity(items * self.expander.image_len());
            for part in parts {
                out.extend(part.join().map_err(|_| DaceError::Invalid("a device's expansion thread panicked".into()))??);
            }
            Ok(out)
        })
    }

    /// Every item's expansion under seed number `s` (= `seed`).
    pub fn epoch(&mut self, s: usize, seed: u64) -> Result<std::sync::Arc<Vec<u8>>> {
        if let Some(Some(images)) = self.cache.get(s) {
            self.hits += 1;
            return Ok(images.clone());
        }
        let t = std::time::Instant::now();
        let images = std::sync::Arc::new(self.expand_spread(seed)?);
        self.seconds += t.elapsed().as_secs_f64();
        self.images += self.expander.len();
        self.store(s, &images);
        Ok(images)
    }
}

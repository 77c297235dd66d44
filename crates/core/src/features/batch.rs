//! Clean and naive features of several images at once: one VAE pass and
//! one UNet pass over a batch of distinct images (each with its own
//! prompt), where [`super::extract::extract`] runs one image per pass.
//! Noisy ensembles already fill their passes with members and are not
//! batched across images.
//!
//! Each image's maps are those of [`super::extract::extract`] up to the
//! order of floating-point sums inside the batched kernels (the tests
//! compare them); the batch is cut to what fits in memory
//! ([`super::memory`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor};

use super::extract::{
    ExtractError, ExtractSettings, Extracted, Mode, memory_plan, to_feature_map, unet_for,
};
use super::preprocess::{LoadedImage, resolve_size, to_model_tensor};
use crate::model::layers::Grad;
use crate::model::weights::Backbone;

/// Whether `s` can be batched across images: clean or naive features of
/// the posterior mean.
pub fn batchable(s: &ExtractSettings) -> bool {
    s.mode != Mode::Noisy && !s.vae_sample
}

/// The features of every `(image, settings)` in `items`, in order, through
/// batched passes of at most `batch` images. The settings may differ in
/// their prompt only, the images must resolve to one model size, and the
/// mode must be [`batchable`]; anything else is refused
/// ([`ExtractError::Invalid`]).
pub fn extract_batch(
    bb: &Backbone,
    items: &[(&LoadedImage, &ExtractSettings)],
    batch: usize,
    cancel: Option<&AtomicBool>,
) -> Result<Vec<Extracted>, ExtractError> {
    let Some((first_img, first)) = items.first() else {
        return Ok(Vec::new());
    };
    first.validate()?;
    if !batchable(first) {
        return Err(ExtractError::Invalid(
            "only clean and naive features of the posterior mean are batched across images".into(),
        ));
    }
    let side = bb.config.image_size() as u32;
    let size = resolve_size(first.size, side, first_img.width, first_img.height);
    for (img, s) in items {
        let mut same = (*s).clone();
        same.prompt.clone_from(&first.prompt);
        if same != **first {
            return Err(ExtractError::Invalid(
                "a batch of images takes one set of settings (the prompt may differ)".into(),
            ));
        }
        if resolve_size(s.size, side, img.width, img.height) != size {
            return Err(ExtractError::Invalid(format!(
                "{} resolves to another model size than {}: batch images of one size",
                img.source, first_img.source
            )));
        }
    }
    // What fits: the memory rule for this many images per pass.
    let mut probe = (*first).clone();
    probe.mode = Mode::Noisy;
    probe.ensemble = items.len();
    probe.max_batch = Some(batch.max(1));
    let per_pass = memory_plan(bb, size, &probe)?.per_pass.max(1);
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(per_pass) {
        out.extend(pass(bb, chunk, size, cancel)?);
    }
    Ok(out)
}

/// One VAE pass and one UNet pass over `items`.
fn pass(
    bb: &Backbone,
    items: &[(&LoadedImage, &ExtractSettings)],
    (w, h): (u32, u32),
    cancel: Option<&AtomicBool>,
) -> Result<Vec<Extracted>, ExtractError> {
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let (dev, dtype) = (&bb.device, bb.dtype);
    let s = items[0].1;
    let n = items.len();
    let mut pixels = Vec::with_capacity(n);
    let mut geometry = Vec::with_capacity(n);
    for (img, s) in items {
        let (p, g) = to_model_tensor(img, w, h, s.fit, dev)?;
        pixels.push(p.to_dtype(dtype)?);
        geometry.push(g);
    }
    if cancelled() {
        return Err(ExtractError::Cancelled);
    }
    let post = bb.vae.encode(&Tensor::cat(&pixels, 0)?)?;
    let x0 = (post.mean.clone() * bb.vae.scaling_factor())?;
    let same_prompt = items.iter().all(|(_, x)| x.prompt == s.prompt);
    let ctx = if same_prompt {
        bb.text.embed(&s.prompt, dev)?.to_dtype(dtype)?
    } else {
        let each = items
            .iter()
            .map(|(_, x)| -> Result<Tensor, ExtractError> {
                Ok(bb.text.embed(&x.prompt, dev)?.to_dtype(dtype)?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::cat(&each, 0)?
    };
    let (unet, t, label, naive_clean) = unet_for(bb, s);
    let tt = Tensor::full(t as f32, n, dev)?.to_dtype(DType::F32)?;
    let f = unet.forward_cancellable(&x0, &tt, &ctx, &s.layers, Grad::Off, &cancelled)?;
    let mut out = Vec::with_capacity(n);
    for (i, geometry) in geometry.into_iter().enumerate() {
        let mut maps = BTreeMap::new();
        for (k, v) in &f {
            let one = v.narrow(0, i, 1)?.to_dtype(DType::F32)?;
            maps.insert(*k, to_feature_map(&one)?);
        }
        out.push(Extracted {
            maps,
            geometry,
            label: label.clone(),
            t_used: t,
            naive_clean,
            notes: Vec::new(),
        });
    }
    Ok(out)
}

//! The feature sources the evaluation runs on real models: diffusion
//! features ([`DiffusionSource`]) and DINOv2 / fused features
//! ([`PairedSource`]). The CLI's `eval` and the app's benchmark view use
//! these same types, so both compute the same numbers for the same
//! settings.

use std::collections::{BTreeMap, BTreeSet};

use super::{FeatureSource, SourceError};
use crate::features::batch::{batchable, extract_batch};
use crate::features::cache::{FeatureCache, cache_key};
use crate::features::extract::{ExtractError, ExtractSettings};
use crate::features::fusion::FusionSettings;
use crate::features::preprocess::{Geometry, LoadedImage, resolve_size};
use crate::features::source::{Models, SourceKind, extract_pair};
use crate::matching::FeatureMap;
use crate::model::weights::Backbone;

/// One image of a batched pass: its cache key, the image, its settings.
type Member<'a> = (String, &'a LoadedImage, ExtractSettings);

/// The diffusion extractor as an eval [`FeatureSource`]: one layer (the
/// first of `settings.layers`), `{category}` in the prompt replaced per
/// pair (`object` when no category is known).
pub struct DiffusionSource<'a> {
    /// The backbone.
    pub bb: &'a Backbone,
    /// Extracted features by image, settings and weights.
    pub cache: FeatureCache,
    /// Mode, t, ensemble, seed, layers, prompt, size, fit.
    pub settings: ExtractSettings,
}

impl DiffusionSource<'_> {
    fn run(
        &mut self,
        img: &LoadedImage,
        prompt: String,
    ) -> Result<(FeatureMap, Geometry), ExtractError> {
        let mut s = self.settings.clone();
        s.prompt = prompt;
        let e = self
            .cache
            .get_or_extract(self.bb, img, &s, None, &mut |_| {})?;
        let key = s.layers[0];
        Ok((e.map(key)?.clone(), e.geometry))
    }
}

impl FeatureSource for DiffusionSource<'_> {
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
        let p = self.settings.prompt.replace("{category}", "object");
        Ok(self.run(img, p)?)
    }

    fn features_in_category(
        &mut self,
        img: &LoadedImage,
        category: &str,
    ) -> Result<(FeatureMap, Geometry), SourceError> {
        let p = self.settings.prompt.replace("{category}", category);
        Ok(self.run(img, p)?)
    }

    /// Clean and naive features of the images not cached yet, in batched
    /// VAE and UNet passes ([`crate::features::batch`]), grouped by model
    /// size; noisy ensembles fill their passes with members instead.
    fn prefetch(
        &mut self,
        images: &[(&LoadedImage, &str)],
        batch: usize,
    ) -> Result<(), SourceError> {
        if batch < 2 || !batchable(&self.settings) {
            return Ok(());
        }
        let side = self.bb.config.image_size() as u32;
        let mut groups: BTreeMap<(u32, u32), Vec<Member<'_>>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (img, category) in images {
            let mut s = self.settings.clone();
            s.prompt = s.prompt.replace("{category}", category);
            let key = cache_key(self.bb, img, &s);
            if !seen.insert(key.clone()) || self.cache.get(&key).is_some() {
                continue;
            }
            let size = resolve_size(s.size, side, img.width, img.height);
            groups.entry(size).or_default().push((key, img, s));
        }
        for group in groups.values() {
            for chunk in group.chunks(batch) {
                if chunk.len() < 2 {
                    // One image: the ordinary path computes it when asked.
                    continue;
                }
                let items: Vec<(&LoadedImage, &ExtractSettings)> =
                    chunk.iter().map(|(_, img, s)| (*img, s)).collect();
                let done = extract_batch(self.bb, &items, batch, None)?;
                for ((key, _, _), e) in chunk.iter().zip(done) {
                    self.cache.insert(key, e);
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        format!(
            "{} | mode {} t {} ensemble {} seed {} layer {} prompt {:?} size {:?} fit {:?}",
            self.bb.describe(),
            s.mode,
            s.t,
            s.ensemble,
            s.seed,
            s.layers[0],
            s.prompt,
            s.size,
            s.fit
        )
    }
}

/// DINOv2 or fused features as an eval [`FeatureSource`]: DINOv2 per
/// image, fused per pair (its PCA is joint).
pub struct PairedSource<'a> {
    /// [`SourceKind::Dino`] or [`SourceKind::Fused`].
    pub kind: SourceKind,
    /// The loaded models.
    pub models: Models<'a>,
    /// What the models are, for reports.
    pub models_described: String,
    /// Extracted features.
    pub cache: FeatureCache,
    /// The diffusion side's settings (fused) and the fit.
    pub settings: ExtractSettings,
    /// DINOv2 and fusion settings.
    pub fusion: FusionSettings,
}

impl PairedSource<'_> {
    fn run(
        &mut self,
        a: &LoadedImage,
        b: &LoadedImage,
        category: &str,
    ) -> Result<[(FeatureMap, Geometry); 2], ExtractError> {
        let mut s = self.settings.clone();
        s.prompt = s.prompt.replace("{category}", category);
        let [x, y] = extract_pair(
            self.kind.with_mode(s.mode),
            self.models,
            &self.cache,
            a,
            b,
            &s,
            &self.fusion,
            None,
            &mut |_| {},
        )?;
        Ok([(x.map, x.geometry), (y.map, y.geometry)])
    }
}

impl FeatureSource for PairedSource<'_> {
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
        self.features_in_category(img, "object")
    }

    fn features_in_category(
        &mut self,
        img: &LoadedImage,
        category: &str,
    ) -> Result<(FeatureMap, Geometry), SourceError> {
        let [x, _] = self.run(img, img, category)?;
        Ok(x)
    }

    fn pair_features(
        &mut self,
        src: &LoadedImage,
        trg: &LoadedImage,
        category: &str,
    ) -> Option<Result<[(FeatureMap, Geometry); 2], SourceError>> {
        (self.kind == SourceKind::Fused)
            .then(|| self.run(src, trg, category).map_err(SourceError::from))
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        let f = &self.fusion;
        let dino = format!(
            "DINOv2 {} layer {} size {}",
            f.dino.model,
            f.dino.layer.map_or("last".to_string(), |l| l.to_string()),
            f.dino.size
        );
        match self.kind {
            SourceKind::Fused => format!(
                "fused | {} | mode {} t {} ensemble {} seed {} layers {:?} PCA {:?} weight {} | {dino} | size {:?} fit {:?}",
                self.models_described,
                s.mode,
                s.t,
                s.ensemble,
                s.seed,
                f.layers,
                f.pca_dims,
                f.sd_weight,
                s.size,
                s.fit
            ),
            _ => format!("dino | {dino} | fit {:?}", s.fit),
        }
    }
}

//! The model lane's extractions: a pair's diffusion features
//! ([`Request::Extract`](super::Request::Extract) and the gallery's
//! `ExtractTarget`), those of the previous student, and DINOv2 or fused
//! features (`ExtractSource`). Each carries one [`ExtractJob`]; prepared
//! pairs are kept for instant reuse.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::{LaneState, LoadProgress, PREPARED_KEEP, stage_progress};
use crate::features::cache::{FeatureCache, cache_key};
use crate::features::extract::{ExtractSettings, Mode, Stage};
use crate::features::fusion::FusionSettings;
use crate::features::pair::{PairFeatures, Side};
use crate::features::preprocess::{LoadedImage, native_cap_note};
use crate::features::source::{Models, Source, extract_pair, source_cache_key};
use crate::model::dino::{DinoModel, DinoSpec};
use crate::worker::errors::{JobError, UserError, dino_error, no_backbone};
use crate::worker::handle::Outbox;
use crate::worker::protocol::{Event, ExtractJob, Progress, RequestId, SOURCE_LAYER};

impl LaneState {
    /// A prepared pair kept under `key`, made the newest.
    fn prepared_hit(&mut self, key: &str) -> Option<Arc<PairFeatures>> {
        let pos = self.prepared.iter().position(|(k, _)| k == key)?;
        let entry = self.prepared.remove(pos)?;
        let features = entry.1.clone();
        self.prepared.push_back(entry);
        Some(features)
    }

    /// Keeps a prepared pair under `key` (the newest [`PREPARED_KEEP`]).
    fn keep_prepared(&mut self, key: String, features: Arc<PairFeatures>) {
        self.prepared.push_back((key, features));
        while self.prepared.len() > PREPARED_KEEP {
            self.prepared.pop_front();
        }
    }

    pub(super) fn extract(
        &mut self,
        job: ExtractJob,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let ExtractJob {
            id,
            backbone,
            images,
            settings,
            thumb_side,
        } = job;
        let (bb, _) = self.backbone_and_cache(backbone)?;
        settings.validate()?;
        let key = format!(
            "{}|{}|{}|{thumb_side}",
            cache_key(bb, &images[0], &settings),
            cache_key(bb, &images[1], &settings),
            settings.size
        );
        if let Some(features) = self.prepared_hit(&key) {
            out.send(Event::Features { id, features });
            return Ok(());
        }
        let (bb, cache) = self.backbone_and_cache(backbone)?;
        let mut extracted = Vec::with_capacity(2);
        let mut secs = [None, None];
        for side in Side::BOTH {
            let img = &images[side.index()];
            out.progress(id, Progress::Preprocessing { side });
            let t0 = Instant::now();
            // A cache hit reports no stage.
            let mut ran = false;
            let e = cache.get_or_extract(bb, img, &settings, Some(cancel), &mut |stage| {
                ran = true;
                out.progress(id, stage_progress(side, stage));
            })?;
            secs[side.index()] = ran.then(|| t0.elapsed().as_secs_f32());
            extracted.push(e);
        }
        let notes = run_notes(&images, &settings, cache);
        let mut features = PairFeatures::prepare(
            settings,
            [
                (&images[0].hash, &*extracted[0]),
                (&images[1].hash, &*extracted[1]),
            ],
            thumb_side,
            Some(cancel),
            &mut |done, total| out.progress(id, Progress::Preparing { done, total }),
        )?;
        features.extract_secs = secs;
        features.notes = notes;
        let features = Arc::new(features);
        self.keep_prepared(key, features.clone());
        out.send(Event::Features { id, features });
        Ok(())
    }

    /// Loads DINOv2 `name` (on the backbone's device and dtype) unless it
    /// is loaded; returns its index in `self.dino`.
    pub(super) fn ensure_dino(
        &mut self,
        id: RequestId,
        name: &str,
        out: &Outbox,
    ) -> Result<usize, JobError> {
        let name = name.trim();
        let Some((_, bb)) = &self.backbone else {
            return Err(no_backbone());
        };
        // Kept per name, on the backbone's device and dtype (a backbone
        // loaded on another device loads DINOv2 again there).
        if let Some(i) = self.dino.iter().position(|(n, m)| {
            n == name && m.net.device().same_device(&bb.device) && m.net.dtype() == bb.dtype
        }) {
            return Ok(i);
        }
        let spec = DinoSpec::new(name, bb.device.clone(), bb.dtype);
        // One DINOv2 at a time: the old one's memory goes first.
        self.dino.clear();
        out.progress(
            id,
            Progress::Loading {
                part: format!("DINOv2 {name}"),
            },
        );
        let progress = LoadProgress::new(id, "DINOv2 ", out);
        let m = DinoModel::load(&spec, &|ev| progress.report(ev))
            .map_err(|e| JobError::User(dino_error(name, &e)))?;
        self.dino.push((name.to_string(), m));
        Ok(0)
    }

    /// Features of a [`Source`] (DINOv2, fused), prepared as one layer
    /// ([`SOURCE_LAYER`]).
    pub(super) fn extract_source(
        &mut self,
        job: ExtractJob,
        source: Source,
        fusion: FusionSettings,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let ExtractJob {
            id,
            backbone,
            images,
            settings,
            thumb_side,
        } = job;
        self.backbone_and_cache(backbone)?;
        settings.validate()?;
        if source.needs_dino() {
            fusion.validate()?;
        }
        let dino = if source.needs_dino() {
            Some(self.ensure_dino(id, &fusion.dino.model, out)?)
        } else {
            None
        };
        let (bb, _) = self.backbone_and_cache(backbone)?;
        let models = Models {
            sd: Some(bb),
            dino: dino.and_then(|i| self.dino.get(i)).map(|(_, m)| m),
        };
        let key = format!(
            "{}|{thumb_side}",
            source_cache_key(
                source,
                models,
                &[&images[0], &images[1]],
                &settings,
                &fusion
            )
        );
        if let Some(features) = self.prepared_hit(&key) {
            out.send(Event::Features { id, features });
            return Ok(());
        }
        let (bb, cache) = self.backbone_and_cache(backbone)?;
        let models = Models {
            sd: Some(bb),
            dino: dino.and_then(|i| self.dino.get(i)).map(|(_, m)| m),
        };
        out.progress(id, Progress::Preprocessing { side: Side::A });
        // Stages restart per image: the second encode starts side B.
        let mut encodes = 0u32;
        let pair = extract_pair(
            source,
            models,
            cache,
            &images[0],
            &images[1],
            &settings,
            &fusion,
            Some(cancel),
            &mut |stage| {
                if matches!(stage, Stage::Encoding) {
                    encodes += 1;
                }
                let side = if encodes >= 2 { Side::B } else { Side::A };
                out.progress(id, stage_progress(side, stage));
            },
        )?;
        let [a, b] = pair.map(|m| m.into_extracted(SOURCE_LAYER));
        let mut s2 = settings;
        if let Source::Sd(m) | Source::Fused(m) = source {
            s2.mode = m;
        }
        s2.layers = vec![SOURCE_LAYER];
        let features = PairFeatures::prepare(
            s2,
            [(&images[0].hash, &a), (&images[1].hash, &b)],
            thumb_side,
            Some(cancel),
            &mut |done, total| out.progress(id, Progress::Preparing { done, total }),
        )?;
        let features = Arc::new(features);
        self.keep_prepared(key, features.clone());
        out.send(Event::Features { id, features });
        Ok(())
    }

    /// Clean features of the student the last fine-tune replaced: the
    /// students are swapped for the one extraction (the cache keys name the
    /// student, so nothing is mixed up).
    pub(super) fn extract_previous(
        &mut self,
        mut job: ExtractJob,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let Some(previous) = self.previous_student.take() else {
            return Err(JobError::User(UserError {
                message: "no fine-tune has replaced a student yet".into(),
                hint: "Run a fine-tune (Fine-tune panel) first".into(),
            }));
        };
        let Some((_, bb)) = self.backbone.as_mut() else {
            self.previous_student = Some(previous);
            return Err(no_backbone());
        };
        let current = std::mem::replace(&mut bb.student, previous);
        job.settings.mode = Mode::Clean;
        let result = self.extract(job, cancel, out);
        if let Some((_, bb)) = self.backbone.as_mut() {
            self.previous_student = Some(std::mem::replace(&mut bb.student, current));
        }
        result
    }
}

/// What the status area should say about an extraction of `images`: the
/// `native` size cap where it applied, and the cache's notes (fewer
/// ensemble members per pass to fit in memory, a damaged disk entry).
fn run_notes(
    images: &[Arc<LoadedImage>; 2],
    s: &ExtractSettings,
    cache: &FeatureCache,
) -> Vec<String> {
    let mut notes: Vec<String> = images
        .iter()
        .filter_map(|i| {
            native_cap_note(s.size, i.width, i.height).map(|n| format!("{}: {n}", i.source))
        })
        .collect();
    notes.dedup();
    notes.extend(cache.take_notes());
    notes
}

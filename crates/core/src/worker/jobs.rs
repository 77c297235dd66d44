//! The job bodies: what each lane does with a request. The model lane's
//! [`LaneState`] owns the backbone, the feature cache and the recently
//! prepared pairs; the light lane's holds nothing.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::errors::{
    JobError, UserError, backbone_error, dino_error, internal, no_backbone, train_error,
};
use super::handle::Outbox;
use super::protocol::{
    BackboneChoice, BackboneInfo, Event, ImageSource, Lane, PcaColours, Progress, Request,
    RequestId, SOURCE_LAYER, TrainData, TrainSummary,
};
use super::sweep;
use crate::features::cache::{FeatureCache, cache_key};
use crate::features::extract::{ExtractSettings, Mode, Stage};
use crate::features::fusion::FusionSettings;
use crate::features::pair::{LayerViews, PairFeatures, Side};
use crate::features::preprocess::{LoadedImage, decode_image, load_image, native_cap_note};
use crate::features::source::{Models, Source, extract_pair, source_cache_key};
use crate::matching::{PcaMode, PcaOptions, pca_rgb};
use crate::model::device::{DeviceChoice, default_dtype, parse_dtype};
use crate::model::dino::{DinoModel, DinoSpec};
use crate::model::weights::{Backbone, BackboneSpec, LoadEvent, Student, StudentSource};
use crate::model::{FeatureKey, ModelError};
use crate::train::{TrainConfig, TrainEvent, train};
use crate::util::next_generation;

/// Feature memory kept by the model lane's cache (extracted maps).
const CACHE_BYTES: usize = 1 << 30;
/// Prepared feature pairs kept for instant reuse (e.g. sweeping t back).
const PREPARED_KEEP: usize = 8;
/// Download progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

/// An extraction as [`Request::Extract`] asks for it.
pub(super) struct ExtractJob {
    pub id: RequestId,
    /// The id of the backbone that must run it.
    pub backbone: RequestId,
    pub images: [Arc<LoadedImage>; 2],
    pub settings: ExtractSettings,
    /// Longest side of the layer-strip thumbnails, pixels.
    pub thumb_side: u32,
}

pub(super) struct LaneState {
    backbone: Option<(RequestId, Backbone)>,
    /// The student the last fine-tune replaced (`Some(None)`: there was
    /// none, clean mode ran the base UNet).
    previous_student: Option<Option<Student>>,
    /// What the loaded backbone was loaded as.
    choice: Option<BackboneChoice>,
    cache: Option<FeatureCache>,
    prepared: VecDeque<(String, Arc<PairFeatures>)>,
    /// DINOv2 models loaded for [`Request::ExtractSource`], by the name
    /// asked for (kept across backbones: they do not depend on them).
    dino: Vec<(String, DinoModel)>,
}

impl LaneState {
    pub(super) fn new(lane: Lane) -> Self {
        LaneState {
            backbone: None,
            previous_student: None,
            choice: None,
            cache: (lane == Lane::Model).then(|| FeatureCache::new(CACHE_BYTES, None)),
            prepared: VecDeque::new(),
            dino: Vec::new(),
        }
    }

    pub(super) fn handle(&mut self, req: Request, cancel: &AtomicBool, out: &Outbox) {
        let id = req.id();
        let job = req.job();
        let result = match req {
            Request::LoadBackbone { id, choice } => self.load_backbone(id, choice, out),
            Request::LoadImage { id, side, source } => load_side(id, side, source, out),
            Request::LoadTarget { id, source, .. } => load_image_as(
                id,
                Side::B,
                source,
                "the gallery keeps its other targets; add another file".into(),
                out,
            ),
            Request::Extract {
                id,
                backbone,
                images,
                settings,
                thumb_side,
                previous_student,
            } => {
                let job = ExtractJob {
                    id,
                    backbone,
                    images,
                    settings,
                    thumb_side,
                };
                if previous_student {
                    self.extract_previous(job, cancel, out)
                } else {
                    self.extract(job, cancel, out)
                }
            }
            Request::ExtractTarget {
                id,
                backbone,
                images,
                settings,
                thumb_side,
                ..
            } => {
                let job = ExtractJob {
                    id,
                    backbone,
                    images,
                    settings,
                    thumb_side,
                };
                self.extract(job, cancel, out)
            }
            Request::ExtractSource {
                id,
                backbone,
                images,
                settings,
                source,
                fusion,
                thumb_side,
            } => {
                let job = ExtractJob {
                    id,
                    backbone,
                    images,
                    settings,
                    thumb_side,
                };
                self.extract_source(job, source, fusion, cancel, out)
            }
            Request::Train {
                id,
                backbone,
                config,
                data,
            } => self.train(id, backbone, config, data, cancel, out),
            Request::Pca {
                id,
                features,
                layer,
                joint,
            } => pca(id, &features, layer, joint, out),
            Request::SweepStep {
                id,
                backbone,
                images,
                settings,
                layer,
                query,
                t,
            } => self.sweep_step(
                id,
                backbone,
                &images,
                &settings,
                (layer, query, t),
                cancel,
                out,
            ),
            Request::VarianceStep {
                id,
                backbone,
                image,
                settings,
                t,
            } => self.variance_step(id, backbone, &image, &settings, t, cancel, out),
            #[cfg(any(test, feature = "test-hooks"))]
            Request::Crash { .. } => panic!("crash requested"),
        };
        match result {
            Ok(()) => {}
            Err(JobError::Cancelled) => out.send(Event::Cancelled { id, job }),
            Err(JobError::User(error)) => {
                tracing::warn!("{job} failed: {error}");
                out.send(Event::Failed { id, job, error });
            }
        }
    }

    fn load_backbone(
        &mut self,
        id: RequestId,
        choice: BackboneChoice,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let user = |e: ModelError| JobError::User(backbone_error(&e));
        let spec = match backbone_spec(&choice) {
            Ok(spec) => spec,
            Err(e) => {
                // Nothing was dropped yet: a loaded backbone runs on.
                let error = backbone_error(&e);
                let Some((running, bb)) = &self.backbone else {
                    return Err(JobError::User(error));
                };
                tracing::warn!("loading {} failed: {error}", choice.model);
                let previous = self.previous_student.as_ref().map(|p| match p {
                    Some(s) => s.source.clone(),
                    None => "none (clean mode ran the base UNet)".into(),
                });
                let info = backbone_info(bb, self.choice.clone().unwrap_or_default(), previous);
                out.send(Event::BackboneKept {
                    id,
                    error,
                    running: *running,
                    info: Arc::new(info),
                });
                return Ok(());
            }
        };
        // The old backbone's memory goes first: two SD UNets may not fit.
        self.backbone = None;
        self.previous_student = None;
        // Features of a student file that was overwritten since (a second
        // fine-tune into the same folder) must not come back from the
        // cache under the same name.
        if self.cache.is_some() {
            self.cache = Some(FeatureCache::new(CACHE_BYTES, None));
        }
        self.prepared.clear();
        let last = Mutex::new(Instant::now() - PROGRESS_EVERY);
        let bb = Backbone::load(&spec, &|ev| {
            let progress = match ev {
                LoadEvent::Downloading { file, done, total } => {
                    let mut last = match last.lock() {
                        Ok(l) => l,
                        Err(p) => p.into_inner(),
                    };
                    if done < total && last.elapsed() < PROGRESS_EVERY {
                        return;
                    }
                    *last = Instant::now();
                    Progress::Downloading { file, done, total }
                }
                LoadEvent::Loading { part } => Progress::Loading { part: part.into() },
            };
            out.progress(id, progress);
        })
        .map_err(user)?;
        let info = backbone_info(&bb, choice.clone(), None);
        self.backbone = Some((id, bb));
        self.choice = Some(choice);
        out.send(Event::BackboneReady {
            id,
            info: Arc::new(info),
        });
        Ok(())
    }

    fn extract(
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
        let Some((bb_id, bb)) = &self.backbone else {
            return Err(no_backbone());
        };
        if *bb_id != backbone {
            return Err(JobError::User(UserError {
                message: "the backbone changed before these features were extracted".into(),
                hint: String::new(),
            }));
        }
        let cache = self
            .cache
            .as_ref()
            .ok_or_else(|| JobError::User(internal("no feature cache on this lane")))?;
        settings.validate()?;
        let key = format!(
            "{}|{}|{}|{thumb_side}",
            cache_key(bb, &images[0], &settings),
            cache_key(bb, &images[1], &settings),
            settings.size
        );
        if let Some(pos) = self.prepared.iter().position(|(k, _)| *k == key)
            && let Some(entry) = self.prepared.remove(pos)
        {
            let features = entry.1.clone();
            self.prepared.push_back(entry);
            out.send(Event::Features { id, features });
            return Ok(());
        }
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
                let progress = match stage {
                    Stage::Encoding => Progress::Encoding { side },
                    Stage::Text => Progress::Text { side },
                    Stage::Unet { done, total } => Progress::Unet { side, done, total },
                };
                out.progress(id, progress);
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
        self.prepared.push_back((key, features.clone()));
        while self.prepared.len() > PREPARED_KEEP {
            self.prepared.pop_front();
        }
        out.send(Event::Features { id, features });
        Ok(())
    }
}

impl LaneState {
    /// Loads DINOv2 `name` (on the backbone's device and dtype) unless it
    /// is loaded; returns its index in `self.dino`.
    fn ensure_dino(&mut self, id: RequestId, name: &str, out: &Outbox) -> Result<usize, JobError> {
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
        let last = Mutex::new(Instant::now() - PROGRESS_EVERY);
        let m = DinoModel::load(&spec, &|ev| {
            let progress = match ev {
                LoadEvent::Downloading { file, done, total } => {
                    let mut last = match last.lock() {
                        Ok(l) => l,
                        Err(p) => p.into_inner(),
                    };
                    if done < total && last.elapsed() < PROGRESS_EVERY {
                        return;
                    }
                    *last = Instant::now();
                    Progress::Downloading { file, done, total }
                }
                LoadEvent::Loading { part } => Progress::Loading {
                    part: format!("DINOv2 {part}"),
                },
            };
            out.progress(id, progress);
        })
        .map_err(|e| JobError::User(dino_error(name, &e)))?;
        self.dino.push((name.to_string(), m));
        Ok(0)
    }

    /// Features of a [`Source`] (DINOv2, fused), prepared as one layer
    /// ([`SOURCE_LAYER`]).
    fn extract_source(
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
        match &self.backbone {
            None => return Err(no_backbone()),
            Some((bb_id, _)) if *bb_id != backbone => {
                return Err(JobError::User(UserError {
                    message: "the backbone changed before these features were extracted".into(),
                    hint: String::new(),
                }));
            }
            Some(_) => {}
        }
        settings.validate()?;
        if source.needs_dino() {
            fusion.validate()?;
        }
        let dino = if source.needs_dino() {
            Some(self.ensure_dino(id, &fusion.dino.model, out)?)
        } else {
            None
        };
        let (Some((_, bb)), Some(cache)) = (&self.backbone, &self.cache) else {
            return Err(JobError::User(internal(
                "no backbone or feature cache on this lane",
            )));
        };
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
        if let Some(pos) = self.prepared.iter().position(|(k, _)| *k == key)
            && let Some(entry) = self.prepared.remove(pos)
        {
            let features = entry.1.clone();
            self.prepared.push_back(entry);
            out.send(Event::Features { id, features });
            return Ok(());
        }
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
                let progress = match stage {
                    Stage::Encoding => Progress::Encoding { side },
                    Stage::Text => Progress::Text { side },
                    Stage::Unet { done, total } => Progress::Unet { side, done, total },
                };
                out.progress(id, progress);
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
        self.prepared.push_back((key, features.clone()));
        while self.prepared.len() > PREPARED_KEEP {
            self.prepared.pop_front();
        }
        out.send(Event::Features { id, features });
        Ok(())
    }

    /// Clean features of the student the last fine-tune replaced: the
    /// students are swapped for the one extraction (the cache keys name the
    /// student, so nothing is mixed up).
    fn extract_previous(
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

    /// Runs a fine-tune on the loaded backbone and switches its student to
    /// the result.
    fn train(
        &mut self,
        id: RequestId,
        backbone: RequestId,
        config: TrainConfig,
        data: TrainData,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let Some((bb_id, bb)) = self.backbone.as_mut() else {
            return Err(no_backbone());
        };
        if *bb_id != backbone {
            return Err(JobError::User(UserError {
                message: "the backbone changed before the fine-tune started".into(),
                hint: "Press Start again".into(),
            }));
        }
        out.progress(id, Progress::TrainSetup);
        let (data, notes) = data.build().map_err(train_error)?;
        let images = data.len();
        let outcome = train(bb, &config, &data, cancel, &mut |event| {
            if let TrainEvent::Step(r) = &event {
                out.progress(
                    id,
                    Progress::Training {
                        step: r.step,
                        total: r.total_steps,
                        loss: r.loss,
                        eta_secs: r.eta_secs,
                    },
                );
            }
            out.send(Event::Training { id, event });
        })
        .map_err(train_error)?;
        let mut summary = TrainSummary {
            step: outcome.step,
            total_steps: outcome.total_steps,
            cancelled: outcome.cancelled,
            student_file: outcome.checkpoint.as_ref().map(|c| c.student.clone()),
            state_file: outcome.checkpoint.as_ref().map(|c| c.state.clone()),
            run_dir: Some(outcome.run_dir.clone()),
            timestep: outcome.timestep,
            images,
            notes,
        };
        if outcome.cancelled || outcome.checkpoint.is_none() {
            out.send(Event::Trained {
                id,
                summary,
                info: None,
            });
            return Ok(());
        }
        out.progress(id, Progress::Switching);
        let mut student = outcome.load_student(bb).map_err(train_error)?;
        // A name no earlier run shares: feature caches key on it.
        student.source = format!(
            "{} (fine-tuned here: run {}, step {})",
            summary
                .student_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            next_generation(),
            outcome.step
        );
        let old = bb.student.replace(student);
        let previous = match &old {
            Some(s) => s.source.clone(),
            None => "none (clean mode ran the base UNet)".into(),
        };
        *bb_id = id;
        // Loading this choice again gives this backbone (the new student).
        let mut choice = self.choice.clone().unwrap_or_default();
        choice.student = summary
            .student_file
            .as_ref()
            .map(|p| p.display().to_string());
        self.choice = Some(choice.clone());
        let info = backbone_info(bb, choice, Some(previous));
        self.previous_student = Some(old);
        summary.notes.retain(|n| !n.is_empty());
        out.send(Event::Trained {
            id,
            summary,
            info: Some(Arc::new(info)),
        });
        Ok(())
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

impl LaneState {
    /// The loaded backbone when it is `backbone`, and the feature cache.
    fn backbone_and_cache(
        &self,
        backbone: RequestId,
    ) -> Result<(&Backbone, &FeatureCache), JobError> {
        let Some((bb_id, bb)) = &self.backbone else {
            return Err(no_backbone());
        };
        if *bb_id != backbone {
            return Err(JobError::User(UserError {
                message: "the backbone changed before these features were extracted".into(),
                hint: String::new(),
            }));
        }
        let cache = self
            .cache
            .as_ref()
            .ok_or_else(|| JobError::User(internal("no feature cache on this lane")))?;
        Ok((bb, cache))
    }

    /// One timestep of the sweep: [`sweep::sweep_step`].
    #[allow(clippy::too_many_arguments)]
    fn sweep_step(
        &self,
        id: RequestId,
        backbone: RequestId,
        images: &[Arc<LoadedImage>; 2],
        settings: &ExtractSettings,
        (layer, query, t): (FeatureKey, (Side, f32, f32), f64),
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let (bb, cache) = self.backbone_and_cache(backbone)?;
        out.progress(id, Progress::Preprocessing { side: Side::A });
        let (point, _) = sweep::sweep_step(
            bb,
            cache,
            [&images[0], &images[1]],
            settings,
            layer,
            query,
            t,
            Some(cancel),
            &mut |side, stage| out.progress(id, stage_progress(side, stage)),
        )?;
        out.send(Event::SweepPoint { id, point });
        Ok(())
    }

    /// One timestep of the variance analysis: [`sweep::variance_step`].
    #[allow(clippy::too_many_arguments)]
    fn variance_step(
        &self,
        id: RequestId,
        backbone: RequestId,
        image: &LoadedImage,
        settings: &ExtractSettings,
        t: f64,
        cancel: &AtomicBool,
        out: &Outbox,
    ) -> Result<(), JobError> {
        let (bb, cache) = self.backbone_and_cache(backbone)?;
        out.progress(id, Progress::Preprocessing { side: Side::A });
        let point = sweep::variance_step(bb, cache, image, settings, t, Some(cancel), &mut |st| {
            out.progress(id, stage_progress(Side::A, st))
        })?;
        out.send(Event::VariancePoint {
            id,
            point: Arc::new(point),
        });
        Ok(())
    }
}

/// An extraction stage of `side` as progress.
fn stage_progress(side: Side, stage: Stage) -> Progress {
    match stage {
        Stage::Encoding => Progress::Encoding { side },
        Stage::Text => Progress::Text { side },
        Stage::Unet { done, total } => Progress::Unet { side, done, total },
    }
}

/// Describes a loaded backbone for the UI.
/// The spec of `choice`, with what can be checked before anything is
/// loaded (device, dtype, that the model names something that exists,
/// the student's form) checked.
fn backbone_spec(choice: &BackboneChoice) -> Result<BackboneSpec, ModelError> {
    let device = choice.device.parse::<DeviceChoice>()?.open()?;
    let dtype = match choice.dtype.as_deref().map(str::trim) {
        None | Some("") | Some("auto") => default_dtype(&device),
        Some(d) => parse_dtype(d)?,
    };
    let mut spec = BackboneSpec::new(choice.model.trim(), device, dtype);
    spec.student = choice
        .student
        .as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    spec.resolve()?;
    if let Some(s) = spec.student.as_deref().filter(|s| *s != "none") {
        StudentSource::parse(s)?;
    }
    Ok(spec)
}

fn backbone_info(
    bb: &Backbone,
    choice: BackboneChoice,
    previous_student: Option<String>,
) -> BackboneInfo {
    BackboneInfo {
        choice,
        description: bb.describe(),
        weights_id: bb.weights_id(),
        image_size: bb.config.image_size() as u32,
        has_student: bb.student.is_some(),
        student_t: bb.student.as_ref().and_then(|s| s.timestep),
        channels: FeatureKey::ALL
            .iter()
            .map(|k| (*k, k.channels(&bb.config.unet)))
            .collect(),
        device: format!("{:?}", bb.device.location()),
        dtype: format!("{:?}", bb.dtype).to_lowercase(),
        cuda: bb.device.is_cuda(),
        previous_student,
    }
}

fn load_side(id: RequestId, side: Side, source: ImageSource, out: &Outbox) -> Result<(), JobError> {
    let hint = format!(
        "{side} is unchanged; open another file (PNG, JPEG, WebP, BMP, TIFF, …) or drop one on {side}"
    );
    load_image_as(id, side, source, hint, out)
}

/// Decodes an image and answers [`Event::ImageLoaded`] for `side`; an
/// error carries `hint`.
fn load_image_as(
    id: RequestId,
    side: Side,
    source: ImageSource,
    hint: String,
    out: &Outbox,
) -> Result<(), JobError> {
    out.progress(id, Progress::Decoding { side });
    let label = source.label();
    let path = source.path();
    let image_error = |message: String| {
        JobError::User(UserError {
            message,
            hint: hint.clone(),
        })
    };
    let loaded = match &source {
        ImageSource::Path(p) => load_image(p).map_err(|e| image_error(e.to_string()))?,
        ImageSource::Bytes { label, bytes } => {
            decode_image(bytes, label).map_err(|e| image_error(e.to_string()))?
        }
        ImageSource::Dropped(f) => {
            let bytes = f
                .bytes()
                .map_err(|e| image_error(format!("cannot read {label}: {e}")))?;
            decode_image(&bytes, &label).map_err(|e| image_error(e.to_string()))?
        }
    };
    out.send(Event::ImageLoaded {
        id,
        side,
        image: Arc::new(loaded),
        path,
    });
    Ok(())
}

fn pca(
    id: RequestId,
    features: &PairFeatures,
    layer: FeatureKey,
    joint: bool,
    out: &Outbox,
) -> Result<(), JobError> {
    out.progress(id, Progress::Pca);
    let (Some(a), Some(b)) = (
        features.layer(Side::A, layer),
        features.layer(Side::B, layer),
    ) else {
        return Err(JobError::User(UserError {
            message: format!("layer {layer} was not extracted"),
            hint: String::new(),
        }));
    };
    let opts = PcaOptions {
        mode: if joint {
            PcaMode::Joint
        } else {
            PcaMode::PerImage
        },
        ..PcaOptions::default()
    };
    let mut rgb = pca_rgb(&[a.full.target.map(), b.full.target.map()], &opts)?.into_iter();
    let (Some(ra), Some(rb)) = (rgb.next(), rgb.next()) else {
        return Err(JobError::User(internal("PCA returned fewer than two maps")));
    };
    let uv = |v: &LayerViews| v.full_mapping().content_uv();
    out.send(Event::Pca {
        id,
        pca: Arc::new(PcaColours {
            generation: next_generation(),
            features: features.generation,
            layer,
            joint,
            rgb: [Arc::new(ra), Arc::new(rb)],
            uv: [uv(a), uv(b)],
        }),
    });
    Ok(())
}

//! The job bodies: what each lane does with a request. The model lane's
//! [`LaneState`] owns the backbone, the feature cache and the recently
//! prepared pairs; the light lane's holds nothing.

mod bench;
mod extract;

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::errors::{JobError, UserError, backbone_error, internal, no_backbone, train_error};
use super::handle::Outbox;
use super::protocol::{
    BackboneChoice, BackboneInfo, Event, ImageSource, Lane, PcaColours, Progress, Request,
    RequestId, TrainData, TrainSummary,
};
use super::sweep;
use crate::features::cache::FeatureCache;
use crate::features::extract::{ExtractSettings, Stage};
use crate::features::pair::{LayerViews, PairFeatures, Side};
use crate::features::preprocess::{LoadedImage, decode_image, load_image};
use crate::matching::{PcaMode, PcaOptions, pca_rgb};
use crate::model::device::{DeviceChoice, default_dtype, parse_dtype};
use crate::model::dino::DinoModel;
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

/// A model load's events as progress of request `id`: downloads at most
/// every [`PROGRESS_EVERY`] (and at their end), part names after `prefix`.
struct LoadProgress<'a> {
    id: RequestId,
    prefix: &'static str,
    out: &'a Outbox,
    last: Mutex<Instant>,
}

impl<'a> LoadProgress<'a> {
    fn new(id: RequestId, prefix: &'static str, out: &'a Outbox) -> Self {
        LoadProgress {
            id,
            prefix,
            out,
            last: Mutex::new(Instant::now() - PROGRESS_EVERY),
        }
    }

    fn report(&self, ev: LoadEvent) {
        let progress = match ev {
            LoadEvent::Downloading { file, done, total } => {
                let mut last = match self.last.lock() {
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
                part: format!("{}{part}", self.prefix),
            },
        };
        self.out.progress(self.id, progress);
    }
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
                job,
                previous_student: true,
            } => self.extract_previous(job, cancel, out),
            Request::Extract { job, .. } | Request::ExtractTarget { job, .. } => {
                self.extract(job, cancel, out)
            }
            Request::ExtractSource {
                job,
                source,
                fusion,
            } => self.extract_source(job, source, fusion, cancel, out),
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
            Request::BenchOpen { id, source } => bench::bench_open(id, &source, out),
            Request::BenchPair {
                id,
                backbone,
                dataset,
                index,
                mode,
                strip,
            } => self.bench_pair((id, backbone), &dataset, (index, strip), &mode, cancel, out),
            Request::BenchHeatmap {
                id,
                backbone,
                dataset,
                index,
                mode,
                kp,
            } => self.bench_heatmap((id, backbone), &dataset, (index, kp), &mode, cancel, out),
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
        let progress = LoadProgress::new(id, "", out);
        let bb = Backbone::load(&spec, &|ev| progress.report(ev)).map_err(user)?;
        let info = backbone_info(&bb, choice.clone(), None);
        self.backbone = Some((id, bb));
        self.choice = Some(choice);
        out.send(Event::BackboneReady {
            id,
            info: Arc::new(info),
        });
        Ok(())
    }
}

impl LaneState {
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

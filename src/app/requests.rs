//! Requests to the worker: images, the backbone, features per column, PCA
//! colours; cancelling and restarting. Which request is awaited under which
//! key lives in the state structs ([`super::jobs::Tracked`]).

use std::sync::Arc;

use super::column::Column;
use super::jobs::{PcaKey, Tracked};
use super::keys::{DinoKey, ExtractKey, FusionKey, PairKey, SourceSettings};
use super::link::WorkerLink;
use super::provenance::{Provenance, SlotKey};
use super::settings::Settings;
use super::state::{BackboneState, FeatureSlot, FeatureState, ImagesState, Level, answer_layer};
use super::{CleanDiftApp, THUMB_SIDE, View, spawn_worker};
use crate::features::extract::{DEFAULT_T, ExtractSettings, Mode};
use crate::features::fusion::FusionSettings;
use crate::features::preprocess::{Fit, LoadedImage};
use crate::features::source::Source;
use crate::model::FeatureKey;
use crate::worker::{
    ExtractJob, ImageSource, Job, Request, RequestId, Side, UserError, WorkerHandle,
};

impl CleanDiftApp {
    // -- requests ----------------------------------------------------------

    pub(super) fn send(&mut self, req: Request) -> bool {
        send_to(&mut self.worker, &mut self.messages.worker_dead, req)
    }

    /// Decodes an image for `side` (on the worker's light lane).
    pub fn load_image(&mut self, side: Side, source: ImageSource) {
        // A typed relative path is made absolute now: the settings keep it,
        // and the app may start from another folder next time.
        let source = match source {
            ImageSource::Path(p) => ImageSource::Path(super::settings_file::stored_path(&p)),
            other => other,
        };
        let id = self.worker.next_id();
        if self.send(Request::LoadImage { id, side, source }) {
            self.images.pending[side.index()] = Some(id);
        }
    }

    /// Loads the backbone the settings describe.
    pub fn load_backbone(&mut self) {
        let choice = self.settings.backbone_choice();
        if choice.model.is_empty() {
            // Nothing is sent: a backbone running (or loading) goes on.
            self.backbone_not_loaded(
                choice,
                UserError {
                    message: "no folder given for the local model".into(),
                    hint: "Type the path of a diffusers folder under Model, or choose tiny-sd21 (offline)"
                        .into(),
                },
            );
            return;
        }
        // Everything in flight belongs to the old backbone: a fine-tune
        // too (its student could not be switched in any more, and the load
        // would wait behind it).
        if self.is_training() {
            self.cancel_training();
            self.message(
                Level::Info,
                "Cancelling the fine-tune to load another backbone".into(),
                "Its last checkpoint is kept".into(),
            );
        }
        for id in self.features.take_pending() {
            self.worker.cancel(id);
        }
        for id in self.sweep.take_pending() {
            self.worker.cancel(id);
        }
        for id in self.gallery.take_pending() {
            self.worker.cancel(id);
        }
        self.features.unblock_features();
        self.sweep.unblock();
        self.gallery.unblock();
        if let BackboneState::Loading { id, .. } = &self.backbone {
            self.worker.cancel(*id);
        }
        let id = self.worker.next_id();
        if self.send(Request::LoadBackbone {
            id,
            choice: choice.clone(),
        }) {
            self.backbone = BackboneState::Loading { id, choice };
        }
    }

    /// Cancels every job in flight; nothing is requested again by itself
    /// until a setting changes.
    pub fn cancel_all(&mut self) {
        self.cancel_training();
        let ids: Vec<RequestId> = self.progress.keys().copied().collect();
        let mut cancelled = Vec::new();
        for (id, job) in self.features.block_pending() {
            self.worker.cancel(id);
            cancelled.push(job);
        }
        for (id, job) in self.sweep.block_pending() {
            self.worker.cancel(id);
            cancelled.push(job);
        }
        let gallery = self.gallery.block_pending();
        for (id, _) in &gallery {
            self.worker.cancel(*id);
        }
        if !gallery.is_empty() {
            self.message(
                Level::Info,
                format!("Cancelled: gallery features of {} pair(s)", gallery.len()),
                "Change a setting or press Extract to run them again".into(),
            );
        }
        if let BackboneState::Loading { id, choice, .. } = &self.backbone {
            self.worker.cancel(*id);
            self.backbone = BackboneState::Failed {
                choice: choice.clone(),
                error: UserError {
                    message: "loading was cancelled".into(),
                    hint: "Press Load to try again".into(),
                },
            };
            cancelled.push(Job::Backbone);
        }
        for id in ids {
            self.worker.cancel(id);
        }
        self.progress.clear();
        for job in cancelled {
            self.message_on(
                super::Topic::Job(job),
                Level::Info,
                format!("Cancelled: {job}"),
                "Change a setting or press Extract to run it again".into(),
            );
        }
    }

    /// Replaces a dead worker and asks again for what was shown.
    pub fn restart_worker(&mut self) {
        self.fail_running_training();
        self.worker = spawn_worker(&self.ctx);
        self.messages.worker_dead = None;
        self.progress.clear();
        self.features.slots.clear();
        self.features.pca_request = Tracked::default();
        self.sweep.take_pending();
        self.sweep.unblock();
        self.images.pending = [None, None];
        // Decodes in flight died with the worker: those targets go.
        self.gallery.targets.retain(|t| t.image.is_some());
        self.gallery.clear_features();
        self.message(
            Level::Info,
            "Worker restarted; loading the backbone again".into(),
            String::new(),
        );
        self.load_backbone();
    }

    /// The worker, for tests that need to poke it.
    #[doc(hidden)]
    pub fn worker_mut(&mut self) -> &mut WorkerHandle {
        self.worker.handle_mut()
    }

    /// Swaps A and B (images, features and the query side).
    pub fn swap(&mut self) {
        self.images.slots.swap(0, 1);
        self.images.pending.swap(0, 1);
        self.settings.image_paths.swap(0, 1);
        if let Some(q) = &mut self.view.query {
            q.side = q.side.other();
        }
        // Features are per (A, B): ask again (the cache makes it quick).
        for id in self.features.take_pending() {
            self.worker.cancel(id);
        }
        for slot in self.features.slots.values_mut() {
            slot.ready = None;
        }
        self.features.unblock_features();
        self.features.clear_derived();
    }

    // -- features ----------------------------------------------------------

    /// The modes the current view needs.
    pub fn needed_modes(&self) -> Vec<Mode> {
        needed_modes(&self.settings)
    }

    /// Whether compare mode shows the previous student's column.
    pub fn shows_previous(&self) -> bool {
        shows_previous(&self.settings, &self.backbone)
    }

    /// The columns shown side by side in compare mode: clean, then (after
    /// a fine-tune) the previous student's clean, noisy, and naive.
    pub fn compare_modes(&self) -> Vec<Column> {
        compare_modes(&self.settings, &self.backbone)
    }

    /// The DINOv2 and fused columns compare mode shows (as enabled).
    pub fn source_columns(&self) -> Vec<Column> {
        source_columns(&self.settings)
    }

    /// What the PCA view shows: the main mode's diffusion features, DINOv2
    /// or fused features (with the main mode's diffusion part).
    pub fn pca_column(&self) -> Column {
        self.settings.pca_column()
    }

    /// The DINOv2 model the DINOv2 and fused columns use with the loaded
    /// backbone.
    pub fn dino_model(&self) -> String {
        dino_model(&self.settings, &self.backbone)
    }

    /// The fusion settings the DINOv2 and fused columns are requested with
    /// (the panel's, with [`Self::dino_model`]).
    pub fn fusion_settings(&self) -> FusionSettings {
        fusion_settings(&self.settings, &self.backbone)
    }

    /// Extraction settings of `mode` (values that do not matter for the mode
    /// normalised away, so e.g. moving t never re-extracts clean features).
    pub fn extract_settings(&self, mode: Mode) -> ExtractSettings {
        extract_settings(&self.settings, mode)
    }

    /// Asks for the features the view needs (once per settings).
    pub(super) fn request_features(&mut self) {
        if self.messages.worker_dead.is_some() {
            return;
        }
        let BackboneState::Ready { id: bb, .. } = &self.backbone else {
            return;
        };
        let bb = *bb;
        if self.is_training() {
            // The model lane is busy; the student changes when it ends.
            return;
        }
        let mut columns: Vec<Column> = self.needed_modes().into_iter().map(Column::from).collect();
        if self.shows_previous() {
            columns.push(Column::PREVIOUS);
        }
        columns.extend(self.source_columns());
        let fusion = self.fusion_settings();
        let fusion_error = self.settings.fusion.validate().err();
        if fusion_error.is_none() {
            self.messages.resolve(super::Topic::Fusion);
        }
        for col in columns {
            if col.feature_source().is_some()
                && let Some(e) = &fusion_error
            {
                // Nothing is sent until the values are fixed; the message
                // stands until then (the same words are not repeated).
                self.refuse_fusion(e);
                continue;
            }
            let Some((key, images, settings)) =
                feature_key(&self.settings, &self.backbone, &self.images, col)
            else {
                continue;
            };
            let slot = self.features.slots.entry(col.key()).or_default();
            let fusion = &fusion;
            ask_slot(
                &mut self.worker,
                &mut self.messages.worker_dead,
                slot,
                key,
                |id| {
                    let job = ExtractJob {
                        id,
                        backbone: bb,
                        images,
                        settings,
                        thumb_side: THUMB_SIDE,
                    };
                    match col.feature_source() {
                        Some(source) => Request::ExtractSource {
                            job,
                            source,
                            fusion: fusion.clone(),
                        },
                        None => Request::Extract {
                            job,
                            previous_student: col.previous,
                        },
                    }
                },
            );
        }
    }

    /// Says (once, until the words change) why the fused and DINOv2
    /// columns are not requested; [`Self::request_features`] calls it.
    fn refuse_fusion(&mut self, why: &str) {
        let standing = self
            .messages
            .list
            .iter()
            .any(|m| m.active && m.topic == super::Topic::Fusion && m.text == why);
        if !standing {
            self.message_on(
                super::Topic::Fusion,
                Level::Error,
                why.to_string(),
                "Change the value in the Fusion section, or press \"Reset to published\"".into(),
            );
        }
    }

    /// Runs the features of `mode` again even after a cancel or an error.
    pub fn retry_features(&mut self) {
        self.features.unblock();
        self.gallery.unblock();
    }

    /// The features of `mode` (or column) match the current settings and
    /// images.
    pub fn features_current(&self, col: impl Into<Column>) -> bool {
        features_current(
            &self.settings,
            &self.backbone,
            &self.images,
            &self.features,
            col.into(),
        )
    }

    pub(super) fn request_pca(&mut self) {
        if self.settings.view != View::Pca || self.messages.worker_dead.is_some() {
            return;
        }
        let Some(f) = self.features_of(self.pca_column()).cloned() else {
            return;
        };
        let Some(layer) = answer_layer(&f, self.settings.features.layer) else {
            return;
        };
        let key = PcaKey {
            features: f.generation,
            layer,
            joint: self.settings.pca.joint,
        };
        let have = self.features.pca.as_ref().is_some_and(|p| {
            PcaKey {
                features: p.features,
                layer: p.layer,
                joint: p.joint,
            } == key
        });
        if have || !self.features.pca_request.wants(&key) {
            return;
        }
        if let Some(old) = self.features.pca_request.take() {
            self.worker.cancel(old);
        }
        let id = self.worker.next_id();
        if self.send(Request::Pca {
            id,
            features: f,
            layer: key.layer,
            joint: key.joint,
        }) {
            self.features.pca_request.start(id, key);
        }
    }
}

/// Sends `req`; a worker that is gone is recorded in `worker_dead`.
fn send_to(worker: &mut WorkerLink, worker_dead: &mut Option<String>, req: Request) -> bool {
    match worker.send(req) {
        Ok(()) => true,
        Err(e) => {
            worker_dead.get_or_insert_with(|| e.to_string());
            false
        }
    }
}

/// Asks for the features of `key` into `slot` (the main pair's columns and
/// the gallery's targets alike) unless they are shown, in flight or
/// blocked: an older request of the slot is cancelled, the new one
/// (`request` makes it for its id) is recorded in the slot.
pub(super) fn ask_slot(
    worker: &mut WorkerLink,
    worker_dead: &mut Option<String>,
    slot: &mut FeatureSlot,
    key: SlotKey,
    request: impl FnOnce(RequestId) -> Request,
) {
    let done = slot.ready.as_ref().is_some_and(|(k, _)| *k == key);
    if done || !slot.request.wants(&key) {
        return;
    }
    if let Some(old) = slot.request.take() {
        worker.cancel(old);
    }
    let id = worker.next_id();
    if send_to(worker, worker_dead, request(id)) {
        slot.request.start(id, key);
    }
}

/// The modes the current view needs.
fn needed_modes(s: &Settings) -> Vec<Mode> {
    match s.view {
        View::Compare => {
            let mut m = vec![Mode::Clean, Mode::Noisy];
            if s.compare.naive || s.features.mode == Mode::Naive {
                m.push(Mode::Naive);
            }
            m
        }
        // The sweep's references: the clean student and naive clean.
        View::Sweep => vec![Mode::Clean, Mode::Naive],
        // The gallery asks for its own pairs (A with each target).
        View::Gallery => Vec::new(),
        // The benchmark scores its own pairs.
        View::Benchmark => Vec::new(),
        _ => vec![s.features.mode],
    }
}

/// Whether compare mode shows the previous student's column.
fn shows_previous(s: &Settings, backbone: &BackboneState) -> bool {
    s.view == View::Compare
        && s.compare.previous
        && backbone
            .info()
            .is_some_and(|i| i.previous_student.is_some())
}

/// The columns shown side by side in compare mode.
pub(super) fn compare_modes(s: &Settings, backbone: &BackboneState) -> Vec<Column> {
    let mut m = vec![Column::from(Mode::Clean)];
    if shows_previous(s, backbone) {
        m.push(Column::PREVIOUS);
    }
    m.push(Mode::Noisy.into());
    if s.compare.naive {
        m.push(Mode::Naive.into());
    }
    m.extend(source_columns(s));
    m
}

/// The DINOv2 and fused columns the view shows (as enabled).
fn source_columns(s: &Settings) -> Vec<Column> {
    let mut m = Vec::new();
    if s.view == View::Pca && s.pca.source != super::ColumnSource::Sd {
        m.push(s.pca_column());
    }
    if s.view != View::Compare {
        return m;
    }
    if s.compare.dino {
        m.push(Column::DINO);
    }
    if s.compare.fused {
        m.push(Column::fused(s.features.mode));
    }
    m
}

/// The DINOv2 model of the DINOv2 and fused columns with the loaded backbone.
fn dino_model(s: &Settings, backbone: &BackboneState) -> String {
    let model = match backbone {
        BackboneState::Ready { info, .. } => info.choice.model.clone(),
        _ => s.backbone_choice().model,
    };
    s.dino_model_for(&model)
}

/// The fusion settings of the DINOv2 and fused columns.
pub(super) fn fusion_settings(s: &Settings, backbone: &BackboneState) -> FusionSettings {
    s.fusion.to_settings(&dino_model(s, backbone))
}

/// Extraction settings of `mode`, normalised.
pub(super) fn extract_settings(s: &Settings, mode: Mode) -> ExtractSettings {
    ExtractSettings {
        mode,
        t: if mode == Mode::Clean {
            DEFAULT_T
        } else {
            s.features.t.round().clamp(0.0, 999.0)
        },
        ensemble: if mode == Mode::Noisy {
            s.features.ensemble.max(1)
        } else {
            1
        },
        seed: if mode == Mode::Noisy {
            s.features.seed
        } else {
            0
        },
        prompt: s.features.prompt.clone(),
        layers: FeatureKey::ALL.to_vec(),
        size: s.features.size.spec(),
        fit: if s.features.letterbox {
            Fit::Letterbox
        } else {
            Fit::Stretch
        },
        vae_sample: false,
        // The measured rule (features::extract::ensemble_batch): the batch
        // fastest per member on the CPU, 8 on a GPU; cancel answers within
        // one UNet block whatever the batch.
        max_batch: None,
    }
}

/// What a column's features are made for (a typed key), from which
/// images and with which settings; `None` before a backbone and both images.
pub(super) fn feature_key(
    s: &Settings,
    backbone: &BackboneState,
    images: &ImagesState,
    col: Column,
) -> Option<(SlotKey, [Arc<LoadedImage>; 2], ExtractSettings)> {
    let (Some(a), Some(b)) = (images.get(Side::A), images.get(Side::B)) else {
        return None;
    };
    pair_key(s, backbone, &a.image, &b.image, col)
}

/// What a column's features of the pair (`a`, `b`) are made for (a key
/// with the provenance of the same inputs) and with which
/// settings; `None` before a backbone.
pub(super) fn pair_key(
    s: &Settings,
    backbone: &BackboneState,
    a: &Arc<LoadedImage>,
    b: &Arc<LoadedImage>,
    col: Column,
) -> Option<(SlotKey, [Arc<LoadedImage>; 2], ExtractSettings)> {
    let BackboneState::Ready { id, info, .. } = backbone else {
        return None;
    };
    let es = extract_settings(s, col.mode);
    let source = col.feature_source().map(|src| {
        let f = fusion_settings(s, backbone);
        let settings = match src {
            Source::Dino => SourceSettings::Dino(DinoKey::from(&f.dino)),
            _ => SourceSettings::Fusion(FusionKey::from(&f)),
        };
        (src, settings, f)
    });
    // The provenance records the source's settings as the exports write
    // them.
    let fusion = source.as_ref().and_then(|(src, _, f)| match src {
        Source::Dino => serde_json::to_value(&f.dino).ok(),
        _ => serde_json::to_value(f).ok(),
    });
    let key = PairKey {
        backbone: *id,
        previous: col.previous,
        source: source.map(|(src, settings, _)| (src, settings)),
        images: [a.hash, b.hash],
        settings: ExtractKey::from(&es),
    };
    let provenance = Provenance::for_pair(*id, info, [a.as_ref(), b.as_ref()], col, &es, fusion);
    Some((SlotKey::new(key, provenance), [a.clone(), b.clone()], es))
}

/// Whether the column's shown features match the current settings and images.
pub(super) fn features_current(
    s: &Settings,
    backbone: &BackboneState,
    images: &ImagesState,
    features: &FeatureState,
    col: Column,
) -> bool {
    feature_key(s, backbone, images, col).is_some_and(|(key, ..)| features.is_current(col, &key))
}

//! Worker events, each routed by the job its request carries
//! ([`super::link::WorkerLink`]) to the part of the app that asked: the
//! images, the backbone, the main pair's features and PCA, the gallery,
//! the sweep series, the fine-tune. Each part checks the id against the
//! requests it recorded (a superseded one is dropped there).

use std::sync::Arc;

use super::CleanDiftApp;
use super::link::{Owner, Routed};
use super::state::{BackboneState, Level, Topic};
use crate::worker::{BackboneInfo, Event, Job, RequestId, UserError};

impl CleanDiftApp {
    /// Applies the worker's events and the dialogs' answers.
    pub(super) fn drain_events(&mut self) {
        while let Some(routed) = self.worker.try_recv() {
            self.route(routed);
        }
        if !self.worker.is_alive() && self.messages.worker_dead.is_none() {
            self.messages.worker_dead = Some("the background worker stopped".into());
            self.fail_running_training();
        }
        while let Ok(d) = self.dialogs.channel.1.try_recv() {
            self.handle_dialog(d);
        }
        self.drain_screenshots();
    }

    /// Hands an event to the part of the app whose request it answers.
    fn route(&mut self, routed: Routed) {
        let owner = routed.owner();
        let Routed { job, event } = routed;
        if let Event::Died { message } = event {
            self.messages.worker_dead = Some(message);
            self.progress.clear();
            self.fail_running_training();
            return;
        }
        if let Some(id) = event.id()
            && !matches!(event, Event::Progress { .. } | Event::Training { .. })
        {
            self.progress.remove(&id);
        }
        // Not a request of this app's link (a test's, a dead worker's).
        let (Some(job), Some(owner)) = (job, owner) else {
            return;
        };
        if let Event::Progress { id, progress } = event {
            if self.awaits(owner, id) {
                self.progress.insert(id, (job, progress));
            }
            return;
        }
        match owner {
            Owner::Images => self.on_image_event(job, event),
            Owner::Backbone => self.on_backbone_event(event),
            Owner::Features => self.on_features_event(job, event),
            Owner::Gallery => self.on_gallery_event(job, event),
            Owner::Sweep => self.on_sweep_event(job, event),
            Owner::Train => self.on_train_event(event),
            Owner::Benchmark => self.on_bench_event(job, event),
        }
    }

    /// Whether `owner` still waits for request `id` (its progress shows).
    fn awaits(&self, owner: Owner, id: RequestId) -> bool {
        match owner {
            Owner::Images => self.images.side_of(id).is_some(),
            Owner::Backbone => {
                matches!(self.backbone, BackboneState::Loading { id: b, .. } if b == id)
            }
            Owner::Features => self.features.awaits(id),
            Owner::Gallery => self.gallery.awaits(id),
            Owner::Sweep => self.sweep.awaits(id),
            Owner::Train => self.is_train_id(id),
            Owner::Benchmark => self.bench.awaits(id),
        }
    }

    /// Image A or B: decoded, or it could not be.
    fn on_image_event(&mut self, job: Job, event: Event) {
        let Job::Image(side) = job else {
            return;
        };
        match event {
            Event::ImageLoaded {
                id, image, path, ..
            } if self.images.pending[side.index()] == Some(id) => {
                self.images.pending[side.index()] = None;
                self.messages.resolve(Topic::Job(job));
                self.set_image(side, image, path);
            }
            Event::Failed { id, error, .. } if self.images.pending[side.index()] == Some(id) => {
                self.images.pending[side.index()] = None;
                self.message_on(
                    Topic::Job(job),
                    Level::Error,
                    error.message.clone(),
                    error.hint.clone(),
                );
                // An empty side stays empty and says why (never a silent
                // stand-in); a loaded one keeps its image.
                if self.images.get(side).is_none() {
                    self.images.errors[side.index()] = Some(error.message.clone());
                }
            }
            _ => {}
        }
    }

    /// The backbone: loaded, kept after a failed load, or failed.
    fn on_backbone_event(&mut self, event: Event) {
        match event {
            Event::BackboneReady { id, info } => {
                if matches!(self.backbone, BackboneState::Loading { id: b, .. } if b == id) {
                    self.message_on(
                        Topic::Job(Job::Backbone),
                        Level::Info,
                        format!("Loaded {} on {}", info.description, info.device),
                        String::new(),
                    );
                    self.set_backbone_ready(id, info);
                }
            }
            Event::BackboneKept {
                id,
                error,
                running,
                info,
            } => self.on_backbone_kept(id, error, running, info),
            Event::Failed { id, job, error } => {
                if let BackboneState::Loading { id: b, choice } = &self.backbone
                    && *b == id
                {
                    let choice = choice.clone();
                    self.message_on(
                        Topic::Job(job),
                        Level::Error,
                        format!("Cannot load {}: {}", choice.model, error.message),
                        error.hint.clone(),
                    );
                    self.backbone = BackboneState::Failed { choice, error };
                    // No backbone runs: what the old one computed goes.
                    self.features.slots.clear();
                    self.features.clear_derived();
                    self.gallery.clear_features();
                }
            }
            _ => {}
        }
    }

    /// A column's features or the PCA colours: arrived, failed or
    /// cancelled.
    fn on_features_event(&mut self, job: Job, event: Event) {
        match event {
            Event::Features { id, features } => {
                let Some(col) = self
                    .features
                    .slots
                    .iter()
                    .find(|(_, s)| s.request.awaits(id))
                    .map(|(k, _)| *k)
                else {
                    return;
                };
                let Some(slot) = self.features.slots.get_mut(&col) else {
                    return;
                };
                let Some(key) = slot.request.finish(id) else {
                    return;
                };
                slot.ready = Some((key.ran(&features), features.clone()));
                slot.request.unblock();
                if features.extract_secs.iter().any(Option::is_some) {
                    self.features.last_extraction = Some((features.mode, features.extract_secs));
                }
                self.messages.resolve(Topic::Job(col.job()));
                for n in &features.notes {
                    self.messages.push_on(
                        Topic::Job(col.job()),
                        Level::Info,
                        n.clone(),
                        String::new(),
                    );
                }
            }
            Event::Pca { id, pca } => {
                let Some(_) = self.features.pca_request.finish(id) else {
                    return;
                };
                self.features.pca = Some(pca);
                self.messages.resolve(Topic::Job(Job::Pca));
            }
            Event::Failed { id, job, error } => {
                let awaited = self.features.block(id);
                let text = if job == Job::Pca {
                    format!("PCA: {}", error.message)
                } else {
                    format!("{job}: {}", error.message)
                };
                if awaited {
                    self.message_on(Topic::Job(job), Level::Error, text, error.hint);
                }
            }
            Event::Cancelled { id, .. } => {
                let awaited = self.features.block(id);
                self.said_cancelled(awaited, job);
            }
            _ => {}
        }
    }

    /// A gallery target's image or features.
    fn on_gallery_event(&mut self, job: Job, event: Event) {
        match event {
            Event::ImageLoaded {
                id, image, path, ..
            } => {
                if let Job::TargetImage(uid) = job {
                    self.gallery_image(uid, id, image, path);
                }
            }
            Event::Features { id, features } => {
                if let Job::TargetFeatures(uid, mode) = job {
                    self.gallery_features((uid, mode), id, &features);
                }
            }
            Event::Failed { id, error, .. } => self.gallery_failed(id, job, Some(error)),
            Event::Cancelled { id, .. } => self.gallery_failed(id, job, None),
            _ => {}
        }
    }

    /// A step of the sweep view's series.
    fn on_sweep_event(&mut self, job: Job, event: Event) {
        match event {
            Event::SweepPoint { id, point } => self.on_sweep_point(id, point),
            Event::VariancePoint { id, point } => self.on_variance_point(id, point),
            Event::Failed { id, error, .. } => {
                self.on_sweep_failed(id, job, error.message, error.hint);
            }
            Event::Cancelled { id, .. } => {
                let awaited = self.sweep.block(id);
                self.said_cancelled(awaited, job);
            }
            _ => {}
        }
    }

    /// The fine-tune's steps, end, failure or cancel.
    fn on_train_event(&mut self, event: Event) {
        match event {
            Event::Training { id, event } => self.on_training(id, event),
            Event::Trained { id, summary, info } => self.on_trained(id, summary, info),
            Event::Cancelled { id, .. } => self.on_train_cancelled(id),
            Event::Failed { id, error, .. } => self.on_train_failed(id, error),
            _ => {}
        }
    }

    /// A job the app waited for (`awaited`) was cancelled: it is not asked
    /// for again by itself, and the status line says so.
    fn said_cancelled(&mut self, awaited: bool, job: Job) {
        if !awaited {
            return;
        }
        self.message_on(
            Topic::Job(job),
            Level::Info,
            format!("Cancelled: {job}"),
            "Change a setting or press Extract to run it again".into(),
        );
    }

    /// The backbone `id` is ready (loaded, or given a new student): every
    /// feature and everything derived from them is asked for again.
    pub(super) fn set_backbone_ready(&mut self, id: RequestId, info: Arc<BackboneInfo>) {
        self.backbone = BackboneState::Ready {
            id,
            info,
            failed_load: None,
        };
        self.features.slots.clear();
        self.features.clear_derived();
        self.gallery.clear_features();
    }

    /// Loading `id` failed before the worker dropped the backbone
    /// `running`: that one runs on and is named as running; what waited
    /// for the load is asked of it again (`request_features` and the
    /// other request loops, next frame).
    fn on_backbone_kept(
        &mut self,
        id: RequestId,
        error: UserError,
        running: RequestId,
        info: Arc<BackboneInfo>,
    ) {
        let BackboneState::Loading { id: b, choice } = &self.backbone else {
            return;
        };
        if *b != id {
            return;
        }
        let choice = choice.clone();
        self.message_on(
            Topic::Job(Job::Backbone),
            Level::Error,
            format!(
                "Cannot load {}: {}. Still running: {}",
                choice.model, error.message, info.description
            ),
            error.hint.clone(),
        );
        let same = self.features_backbone() == Some(running);
        self.backbone = BackboneState::Ready {
            id: running,
            info,
            failed_load: Some(Box::new((choice, error))),
        };
        if !same {
            self.features.slots.clear();
            self.features.clear_derived();
            self.gallery.clear_features();
        }
    }

    /// A load that was not even sent (`choice` names no model): a running
    /// backbone runs on (and says the load failed), a load in flight goes
    /// on; else the backbone state is the failure.
    pub(super) fn backbone_not_loaded(
        &mut self,
        choice: crate::worker::BackboneChoice,
        error: UserError,
    ) {
        let what = if choice.model.is_empty() {
            "the local model"
        } else {
            choice.model.as_str()
        };
        self.message_on(
            Topic::Job(Job::Backbone),
            Level::Error,
            format!("Cannot load {what}: {}", error.message),
            error.hint.clone(),
        );
        match &mut self.backbone {
            BackboneState::Ready { failed_load, .. } => {
                *failed_load = Some(Box::new((choice, error)));
            }
            BackboneState::Loading { .. } => {}
            _ => self.backbone = BackboneState::Failed { choice, error },
        }
    }

    /// The backbone the shown features were computed on, if any.
    fn features_backbone(&self) -> Option<RequestId> {
        self.features
            .slots
            .values()
            .find_map(|s| s.ready.as_ref())
            .map(|(k, _)| k.provenance.backbone.load)
    }
}

//! The sweep view's state and requests (issue 14): the timestep sweep of the
//! committed click (one [`Request::SweepStep`] per t, so the plot fills in
//! as the worker answers, cancellable between steps) and the variance of
//! image A's features against t (one [`Request::VarianceStep`] per t); their
//! series as CSV, JSON and charts ([`crate::plot`]) for the exports.
//!
//! Each series is kept for a key (backbone, images, settings, layer and
//! click): a new key cancels the step in flight and starts over; points of
//! the same key stay (a wider range only asks for the missing t). The
//! worker caches features per t, so a sweep asked for again costs no UNet
//! pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::jobs::Tracked;
use super::keys::{ExtractKey, SweepKey, VarianceKey};
use super::requests::extract_settings;
use super::settings::{Settings, SweepTab};
use super::state::{BackboneState, Level, Topic};
use super::{CleanDiftApp, View};
use crate::features::extract::{ExtractSettings, Mode};
use crate::worker::{Job, Request, RequestId, Side, SweepPoint, VariancePoint};

/// One series filled in one t at a time.
pub struct Series<K, P> {
    /// What the points are for.
    pub(super) key: Option<K>,
    /// The points by t.
    pub(super) points: BTreeMap<u32, P>,
    /// The step in flight: (key, t).
    pub(super) request: Tracked<(K, u32)>,
    /// The last failure's message.
    pub(super) error: Option<String>,
}

impl<K, P> Default for Series<K, P> {
    fn default() -> Self {
        Series {
            key: None,
            points: BTreeMap::new(),
            request: Tracked::default(),
            error: None,
        }
    }
}

impl<K: Clone + PartialEq, P> Series<K, P> {
    /// Makes `key` the series' key: a new one drops the points and returns
    /// the step in flight (to cancel).
    fn retarget(&mut self, key: &K) -> Option<RequestId> {
        if self.key.as_ref() == Some(key) {
            return None;
        }
        self.key = Some(key.clone());
        self.points.clear();
        self.error = None;
        self.request.unblock();
        self.request.take()
    }

    /// The first of `ts` without a point.
    fn next_t(&self, ts: &[u32]) -> Option<u32> {
        ts.iter().copied().find(|t| !self.points.contains_key(t))
    }

    /// The points of `ts` that are there, in order.
    pub fn shown(&self, ts: &[u32]) -> Vec<(u32, &P)> {
        ts.iter()
            .filter_map(|t| self.points.get(t).map(|p| (*t, p)))
            .collect()
    }

    /// Whether a step is in flight.
    pub fn is_pending(&self) -> bool {
        self.request.is_pending()
    }

    /// Whether the series stopped (cancelled or failed) before its end.
    pub fn is_blocked(&self) -> bool {
        self.request.is_blocked()
    }

    /// A step answered: its point when it is for the current key.
    fn finish(&mut self, id: RequestId, point: P) -> bool {
        match self.request.finish(id) {
            Some((key, t)) if self.key.as_ref() == Some(&key) => {
                self.points.insert(t, point);
                self.error = None;
                true
            }
            _ => false,
        }
    }
}

/// The sweep view's two series and where the plot drew its points.
#[derive(Default)]
pub struct SweepState {
    pub(super) matches: Series<SweepKey, SweepPoint>,
    pub(super) variance: Series<VarianceKey, Arc<VariancePoint>>,
    /// The match plot's points on screen last frame (t, position).
    pub(super) plot_points: Vec<(u32, egui::Pos2)>,
}

impl SweepState {
    pub(super) fn awaits(&self, id: RequestId) -> bool {
        self.matches.request.awaits(id) || self.variance.request.awaits(id)
    }

    pub(super) fn is_pending(&self) -> bool {
        self.matches.is_pending() || self.variance.is_pending()
    }

    /// Step `id` failed or was cancelled: the series stops there until a
    /// setting changes or Run is pressed. Returns whether it was awaited.
    pub(super) fn block(&mut self, id: RequestId) -> bool {
        self.matches.request.block(id) | self.variance.request.block(id)
    }

    /// Stops both series (cancel all): the ids in flight.
    pub(super) fn block_pending(&mut self) -> Vec<(RequestId, Job)> {
        let mut out = Vec::new();
        if let Some(id) = self.matches.request.block_pending() {
            out.push((id, Job::Sweep));
        }
        if let Some(id) = self.variance.request.block_pending() {
            out.push((id, Job::Variance));
        }
        out
    }

    /// Forgets the steps in flight (to cancel them, or after a restart).
    pub(super) fn take_pending(&mut self) -> Vec<RequestId> {
        [self.matches.request.take(), self.variance.request.take()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Lets stopped series go on.
    pub(super) fn unblock(&mut self) {
        self.matches.request.unblock();
        self.variance.request.unblock();
    }
}

/// The noisy settings of the match sweep (t set per step).
pub(super) fn sweep_settings(s: &Settings) -> ExtractSettings {
    let mut es = extract_settings(s, Mode::Noisy);
    es.t = 0.0;
    es.ensemble = s.sweep.ensemble.max(1);
    es.layers = vec![s.features.layer];
    es
}

/// The noisy settings of the variance analysis (t set per step).
pub(super) fn variance_settings(s: &Settings) -> ExtractSettings {
    let mut es = extract_settings(s, Mode::Noisy);
    es.t = 0.0;
    es.ensemble = s.sweep.var_ensemble.max(1);
    es.layers = s.sweep.var_layers.clone();
    es
}

impl CleanDiftApp {
    /// Asks for the next step of the sweep view's shown series (one at a
    /// time); leaving the view stops them (their points stay).
    pub(super) fn request_sweep(&mut self) {
        if self.messages.worker_dead.is_some() {
            return;
        }
        let BackboneState::Ready { id: bb, .. } = &self.backbone else {
            return;
        };
        let bb = *bb;
        let active = self.settings.view == View::Sweep && !self.is_training();
        let tab = self.settings.sweep.tab;
        let images = match (self.images.get(Side::A), self.images.get(Side::B)) {
            (Some(a), Some(b)) => Some([a.image.clone(), b.image.clone()]),
            _ => None,
        };

        // The match sweep of the committed click.
        let want = match (active && tab == SweepTab::Matches, &images, self.view.query) {
            (true, Some(imgs), Some(q)) => {
                let es = sweep_settings(&self.settings);
                let key = SweepKey {
                    backbone: bb,
                    images: [imgs[0].hash, imgs[1].hash],
                    settings: ExtractKey::from(&es),
                    layer: self.settings.features.layer,
                    query: (q.side, q.x.to_bits(), q.y.to_bits()),
                };
                Some((key, es, imgs.clone(), q))
            }
            _ => None,
        };
        match want {
            None => {
                if let Some(id) = self.sweep.matches.request.take() {
                    self.worker.cancel(id);
                }
            }
            Some((key, es, imgs, q)) => {
                if let Some(old) = self.sweep.matches.retarget(&key) {
                    self.worker.cancel(old);
                }
                let ts = self.settings.sweep.ts();
                let next = self.sweep.matches.next_t(&ts);
                if let Some(t) = next
                    && !self.sweep.matches.is_pending()
                    && self.sweep.matches.request.wants(&(key.clone(), t))
                {
                    let id = self.worker.next_id();
                    let req = Request::SweepStep {
                        id,
                        backbone: bb,
                        images: imgs,
                        settings: es,
                        layer: self.settings.features.layer,
                        query: (q.side, q.x, q.y),
                        t: f64::from(t),
                    };
                    if self.send(req) {
                        self.sweep.matches.request.start(id, (key, t));
                    }
                }
            }
        }

        // The variance of image A's features.
        let want = match (active && tab == SweepTab::Variance, &images) {
            (true, Some(imgs)) => {
                let es = variance_settings(&self.settings);
                let key = VarianceKey {
                    backbone: bb,
                    image: imgs[0].hash,
                    settings: ExtractKey::from(&es),
                };
                Some((key, es, imgs[0].clone()))
            }
            _ => None,
        };
        match want {
            None => {
                if let Some(id) = self.sweep.variance.request.take() {
                    self.worker.cancel(id);
                }
            }
            Some((key, es, image)) => {
                if let Some(old) = self.sweep.variance.retarget(&key) {
                    self.worker.cancel(old);
                }
                let ts = self.settings.sweep.var_ts();
                let next = self.sweep.variance.next_t(&ts);
                if let Some(t) = next
                    && !self.sweep.variance.is_pending()
                    && self.sweep.variance.request.wants(&(key.clone(), t))
                {
                    let id = self.worker.next_id();
                    let req = Request::VarianceStep {
                        id,
                        backbone: bb,
                        image,
                        settings: es,
                        t: f64::from(t),
                    };
                    if self.send(req) {
                        self.sweep.variance.request.start(id, (key, t));
                    }
                }
            }
        }
    }

    /// A sweep step answered.
    pub(super) fn on_sweep_point(&mut self, id: RequestId, point: SweepPoint) {
        if self.sweep.matches.finish(id, point) {
            self.messages.resolve(Topic::Job(Job::Sweep));
        }
    }

    /// A variance step answered.
    pub(super) fn on_variance_point(&mut self, id: RequestId, point: Arc<VariancePoint>) {
        if self.sweep.variance.finish(id, point) {
            self.messages.resolve(Topic::Job(Job::Variance));
        }
    }

    /// A sweep or variance step failed: the series stops with the reason.
    pub(super) fn on_sweep_failed(
        &mut self,
        id: RequestId,
        job: Job,
        message: String,
        hint: String,
    ) {
        if self.sweep.block(id) {
            let series = match job {
                Job::Variance => &mut self.sweep.variance.error,
                _ => &mut self.sweep.matches.error,
            };
            *series = Some(message.clone());
            self.message_on(
                Topic::Job(job),
                Level::Error,
                format!("{job}: {message}"),
                hint,
            );
        }
    }

    /// Stops the sweep view's series (the Cancel button); Run goes on.
    pub fn cancel_sweep(&mut self) {
        for (id, job) in self.sweep.block_pending() {
            self.worker.cancel(id);
            self.message_on(
                Topic::Job(job),
                Level::Info,
                format!("Cancelled: {job}"),
                "Press Run (Sweep panel) or change a setting to go on".into(),
            );
        }
    }

    /// Lets a cancelled or failed sweep go on (the Run button).
    pub fn run_sweep(&mut self) {
        self.sweep.unblock();
        self.sweep.matches.error = None;
        self.sweep.variance.error = None;
    }

    /// The match sweep's points in the current range (t, point).
    pub fn sweep_points(&self) -> Vec<(u32, SweepPoint)> {
        let ts = self.settings.sweep.ts();
        self.sweep
            .matches
            .shown(&ts)
            .into_iter()
            .map(|(t, p)| (t, *p))
            .collect()
    }

    /// The variance analysis' points in the current range.
    pub fn variance_points(&self) -> Vec<(u32, Arc<VariancePoint>)> {
        let ts = self.settings.sweep.var_ts();
        self.sweep
            .variance
            .shown(&ts)
            .into_iter()
            .map(|(t, p)| (t, p.clone()))
            .collect()
    }

    /// Whether a sweep or variance step is in flight.
    pub fn sweep_pending(&self) -> bool {
        self.sweep.is_pending()
    }

    /// Where the match plot drew its points last frame (t, screen
    /// position): tests click them.
    pub fn sweep_plot_points(&self) -> &[(u32, egui::Pos2)] {
        &self.sweep.plot_points
    }

    /// The sweep series with the references (clean student, naive clean)
    /// for exports.
    pub fn sweep_series(&mut self) -> anyhow::Result<SweepSeries> {
        use anyhow::Context as _;
        let q = self
            .view
            .query
            .context("no query point: click in an image first")?;
        let points = self.sweep_points();
        anyhow::ensure!(
            !points.is_empty(),
            "no sweep points yet: wait for the first timestep"
        );
        let clean = self.answer(Mode::Clean, q);
        let has_student = self.backbone_info().is_some_and(|i| i.has_student);
        let naive = if has_student {
            self.answer(Mode::Naive, q)
        } else {
            None
        };
        // Exported in original pixels (through any downscale on loading).
        let px = |s: Side| super::original::PixelScale::of_slot(self.image(s));
        let (src, tgt) = (px(q.side), px(q.side.other()));
        let reference = |m: Mode, a: Option<Arc<super::query::Answer>>| {
            a.map(|a| Reference {
                features: self
                    .features_of(m)
                    .map(|f| f.label.clone())
                    .unwrap_or_default(),
                x: a.best.x * tgt.x,
                y: a.best.y * tgt.y,
                cosine: a.best.score,
            })
        };
        let clean_ref = reference(Mode::Clean, clean);
        let naive_ref = reference(Mode::Naive, naive);
        let rows = points
            .iter()
            .map(|(_, p)| {
                let (x, y) = tgt.point(p.x, p.y);
                SweepRow {
                    t: p.t,
                    x,
                    y,
                    cosine: p.cosine,
                    distance_px: clean_ref
                        .as_ref()
                        .map(|c| ((x - c.x).powi(2) + (y - c.y).powi(2)).sqrt()),
                }
            })
            .collect();
        let target = q.side.other();
        Ok(SweepSeries {
            app: format!("cleandift {}", env!("CARGO_PKG_VERSION")),
            backbone: self.backbone_info().map(|i| i.description.clone()),
            layer: self.settings.features.layer.name().to_string(),
            query: src.query(q),
            target: target.name().to_string(),
            ensemble: self.settings.sweep.ensemble,
            seed: self.settings.features.seed,
            main_t: self.settings.features.t,
            coordinates: "original image pixels of the target image",
            clean: clean_ref,
            naive: naive_ref,
            rows,
        })
    }

    /// The variance series of the shown layers for exports.
    pub fn variance_series(&self) -> anyhow::Result<VarianceSeries> {
        let points = self.variance_points();
        anyhow::ensure!(
            !points.is_empty(),
            "no variance points yet: wait for the first timestep"
        );
        let mut layers: BTreeMap<String, Vec<VarianceRow>> = BTreeMap::new();
        for (_, p) in &points {
            for (k, fit) in &p.fits {
                layers
                    .entry(k.name().to_string())
                    .or_default()
                    .push(VarianceRow {
                        t: p.t,
                        fit: fit.clone(),
                    });
            }
        }
        Ok(VarianceSeries {
            app: format!("cleandift {}", env!("CARGO_PKG_VERSION")),
            backbone: self.backbone_info().map(|i| i.description.clone()),
            image: self
                .image(Side::A)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            ensemble: self.settings.sweep.var_ensemble,
            seed: self.settings.features.seed,
            regression: "per layer and t: least squares F_t ~ a*F_0 + b*F_999 + c (scalars a, b; per-channel c); fractions of the variance of F_t: x0 = a*Sxz/Szz, eps = b*Syz/Szz, residual = |R|^2/Szz (see cleandift analyze variance)",
            layers,
        })
    }
}

pub use super::sweep_export::{
    Reference, SweepFiles, SweepRow, SweepSeries, VARIANCE_COLORS, VarianceRow, VarianceSeries,
};

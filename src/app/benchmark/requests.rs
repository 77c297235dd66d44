//! The benchmark's requests and events: the dataset opened on the light
//! lane, then one (pair, mode) scored per request on the model lane (the
//! selected pair first, then dataset order), the selected pair's layer
//! strip, stepping through pairs, cancel and run.

use std::sync::Arc;

use egui::TextureOptions;

use super::{BenchColumn, BenchKey, PairTextures, pair_pck};
use crate::app::column::Column;
use crate::app::requests::{extract_settings, fusion_settings};
use crate::app::state::{BackboneState, Level, Topic};
use crate::app::{CleanDiftApp, View};
use crate::eval::Split;
use crate::features::extract::Mode;
use crate::features::preprocess::LoadedImage;
use crate::features::source::Source;
use crate::worker::bench::{BenchMode, BenchOutcome, BenchSource};
use crate::worker::{Event, Job, Request};

impl CleanDiftApp {
    /// The benchmark view's state (tests, exports).
    pub fn benchmark(&self) -> &super::BenchmarkState {
        &self.bench
    }

    /// The dataset the settings name, if they name one that parses.
    pub fn bench_source(&self) -> Option<BenchSource> {
        let b = &self.settings.benchmark;
        if b.dataset.trim().is_empty() {
            return None;
        }
        let split = b.split.parse::<Split>().unwrap_or_default();
        BenchSource::parse(&b.dataset, split).ok()
    }

    /// The benchmark's modes as compare shows them (clean, noisy, naive,
    /// DINOv2 and fused as enabled; not the previous student), each with
    /// the inputs its outcomes are computed from. Empty before a backbone.
    pub fn bench_columns(&self) -> Vec<BenchColumn> {
        let BackboneState::Ready { id, info, .. } = &self.backbone else {
            return Vec::new();
        };
        let Some(dataset) = self.bench_source() else {
            return Vec::new();
        };
        let s = &self.settings;
        let mut cols = vec![Column::from(Mode::Clean), Column::from(Mode::Noisy)];
        if s.compare.naive {
            cols.push(Mode::Naive.into());
        }
        if s.compare.dino {
            cols.push(Column::DINO);
        }
        if s.compare.fused {
            cols.push(Column::fused(s.features.mode));
        }
        let fusion = fusion_settings(s, &self.backbone);
        cols.into_iter()
            .map(|column| {
                // What `eval --layers <layer>` builds for the same options.
                let mut settings = extract_settings(s, column.mode);
                settings.layers = vec![s.features.layer];
                let source = column.feature_source().unwrap_or(Source::Sd(column.mode));
                BenchColumn {
                    column,
                    key: BenchKey {
                        dataset: dataset.clone(),
                        backbone: *id,
                        weights_id: info.weights_id.clone(),
                        mode: BenchMode {
                            source,
                            settings,
                            fusion: fusion.clone(),
                        },
                    },
                }
            })
            .collect()
    }

    /// The column whose layer strip is shown: the main mode's, else clean.
    pub fn bench_strip_column(&self, cols: &[BenchColumn]) -> Option<BenchColumn> {
        let sd = |c: &&BenchColumn| matches!(c.key.mode.source, Source::Sd(_));
        cols.iter()
            .filter(sd)
            .find(|c| c.column.mode == self.settings.features.mode)
            .or_else(|| cols.iter().find(sd))
            .cloned()
    }

    /// Opens `spec` (`spair:DIR` or `warp:DIR`) in the benchmark view.
    pub fn open_dataset(&mut self, spec: &str) {
        self.settings.benchmark.dataset = spec.trim().to_string();
        self.settings.view = View::Benchmark;
        self.bench.paused = false;
        self.bench.open_error = None;
    }

    /// Asks for what the benchmark view lacks: the dataset, then the
    /// selected pair's outcomes and strip, then the next pair not done.
    pub(crate) fn request_benchmark(&mut self) {
        if self.settings.view != View::Benchmark || self.messages.worker_dead.is_some() {
            return;
        }
        let Some(source) = self.bench_source() else {
            return;
        };
        if self
            .bench
            .opened
            .as_ref()
            .is_none_or(|o| o.source != source)
        {
            if self.bench.opened.is_some() {
                self.bench.clear_dataset();
            }
            let failed = self
                .bench
                .open_error
                .as_ref()
                .is_some_and(|(s, _)| *s == source);
            if !failed && self.bench.open_request.pending_key() != Some(&source) {
                if let Some(old) = self.bench.open_request.take() {
                    self.worker.cancel(old);
                }
                let id = self.worker.next_id();
                if self.send(Request::BenchOpen {
                    id,
                    source: source.clone(),
                }) {
                    self.bench.open_request.start(id, source);
                }
            }
            return;
        }
        let cols = self.bench_columns();
        // A pair in flight for inputs no longer current is cancelled.
        for tracked in [&mut self.bench.pair_request, &mut self.bench.strip_request] {
            if let Some((key, _)) = tracked.pending_key()
                && !cols.iter().any(|c| c.key == *key)
                && let Some(id) = tracked.take()
            {
                self.worker.cancel(id);
            }
        }
        if let Some((key, _, _)) = self.bench.heat_request.pending_key()
            && !cols.iter().any(|c| c.key == *key)
            && let Some(id) = self.bench.heat_request.take()
        {
            self.worker.cancel(id);
        }
        let Some(opened) = self.bench.opened.clone() else {
            return;
        };
        // The selected keypoint's heatmap in each scored mode (asked for
        // also while the run is stopped: a person clicked for it).
        if !self.bench.heat_request.is_pending()
            && let (Some(index), Some(kp)) = (self.bench.selected, self.bench.selected_kp)
            && let Some(col) = cols.iter().find(|c| {
                matches!(
                    self.bench.outcome(&c.key, index),
                    Some(BenchOutcome::Scored(_))
                ) && self.bench.heat(&c.key, index, kp).is_none()
                    && self.bench.heat_request.wants(&(c.key.clone(), index, kp))
            })
        {
            let id = self.worker.next_id();
            let req = Request::BenchHeatmap {
                id,
                backbone: col.key.backbone,
                dataset: opened.dataset.clone(),
                index,
                mode: Box::new(col.key.mode.clone()),
                kp,
            };
            if self.send(req) {
                self.bench
                    .heat_request
                    .start(id, (col.key.clone(), index, kp));
            }
        }
        if self.bench.paused || cols.is_empty() {
            return;
        }
        let n = opened.entries.len();
        let first = self.bench.selected.unwrap_or(0).min(n.saturating_sub(1));
        // The selected pair's pictures went out of the kept set: scoring it
        // again (its features are cached, its records come out the same)
        // brings them back.
        if !self.bench.pair_request.is_pending()
            && let Some(index) = self.bench.selected
            && self.bench.textures_of(index).is_none()
            && let Some(col) = cols.first()
            && self.bench.outcome(&col.key, index).is_some()
            && self.bench.pair_request.wants(&(col.key.clone(), index))
        {
            self.send_bench(&opened, index, col.key.clone(), false);
        }
        if !self.bench.pair_request.is_pending() {
            let next = (0..n)
                .map(|k| (first + k) % n)
                .flat_map(|i| cols.iter().map(move |c| (i, c)))
                .find(|(i, c)| {
                    self.bench.outcome(&c.key, *i).is_none()
                        && self.bench.pair_request.wants(&(c.key.clone(), *i))
                });
            if let Some((index, col)) = next {
                self.send_bench(&opened, index, col.key.clone(), false);
            }
        }
        if !self.bench.strip_request.is_pending()
            && let Some(index) = self.bench.selected
            && let Some(col) = self.bench_strip_column(&cols)
            && self.bench.strip(&col.key, index).is_none()
            && self.bench.strip_request.wants(&(col.key.clone(), index))
            // The strip waits for the pair's own outcomes.
            && cols.iter().all(|c| self.bench.outcome(&c.key, index).is_some())
        {
            self.send_bench(&opened, index, col.key, true);
        }
    }

    fn send_bench(
        &mut self,
        opened: &Arc<crate::worker::bench::BenchOpened>,
        index: usize,
        key: BenchKey,
        strip: bool,
    ) {
        let id = self.worker.next_id();
        let req = Request::BenchPair {
            id,
            backbone: key.backbone,
            dataset: opened.dataset.clone(),
            index,
            mode: Box::new(key.mode.clone()),
            strip,
        };
        if self.send(req) {
            let tracked = if strip {
                &mut self.bench.strip_request
            } else {
                &mut self.bench.pair_request
            };
            tracked.start(id, (key, index));
        }
    }

    /// The benchmark's events: the dataset, a pair's outcomes, failures.
    pub(crate) fn on_bench_event(&mut self, job: Job, event: Event) {
        match event {
            Event::BenchOpened { id, opened } => {
                if self.bench.open_request.finish(id).is_none() {
                    return;
                }
                self.messages.resolve(Topic::Job(job));
                if let Some(first) = opened.notes.first() {
                    self.message(
                        Level::Warn,
                        format!(
                            "{} pair(s) of {} will be skipped (first: {first})",
                            opened.notes.len(),
                            opened.source.spec()
                        ),
                        "Restore the missing images; the totals count the other pairs".into(),
                    );
                }
                self.bench.selected = (!opened.entries.is_empty()).then_some(0);
                self.bench.opened = Some(opened);
            }
            Event::BenchPair {
                id,
                index,
                images,
                outcomes,
            } => {
                let strip = job == (Job::Bench { strip: true });
                let tracked = if strip {
                    &mut self.bench.strip_request
                } else {
                    &mut self.bench.pair_request
                };
                let Some((key, _)) = tracked.finish(id) else {
                    return;
                };
                tracked.unblock();
                if let Some(imgs) = images
                    && self.bench.textures_of(index).is_none()
                {
                    let t = pair_textures(&self.ctx, index, &imgs);
                    self.bench.keep_textures(index, t);
                }
                if strip {
                    self.bench
                        .strips
                        .retain(|(k, i, _)| !(*k == key && *i == index));
                    if self.bench.strips.len() >= 32 {
                        self.bench.strips.remove(0);
                    }
                    self.bench.strips.push((key, index, outcomes));
                } else if let Some((_, o)) = outcomes.first() {
                    self.bench.results_mut(&key).pairs.insert(index, o.clone());
                }
            }
            Event::BenchHeatmap { id, heat } => {
                let Some((key, index, kp)) = self.bench.heat_request.finish(id) else {
                    return;
                };
                self.bench.heat_request.unblock();
                self.bench
                    .keep_heat(super::KeypointHeat::new(key, index, kp, heat));
            }
            Event::Failed { id, error, .. } => {
                // A pair that cannot be scored (an impossible annotation:
                // `eval` refuses the whole run) is listed as failed with
                // the reason and not asked for again; the others go on.
                if let Some((key, index)) = self.bench.pair_request.finish(id) {
                    let why = format!("failed: {}", error.message);
                    self.bench
                        .results_mut(&key)
                        .pairs
                        .insert(index, BenchOutcome::Skipped(why));
                    self.message_on(
                        Topic::Job(job),
                        Level::Error,
                        format!("{job}: {}", error.message),
                        error.hint,
                    );
                    return;
                }
                let awaited = self.bench.open_request.block(id)
                    || self.bench.strip_request.block(id)
                    || self.bench.heat_request.block(id);
                if !awaited {
                    return;
                }
                if job == Job::BenchOpen
                    && let Some(source) = self.bench_source()
                {
                    self.bench.open_error = Some((source, error.message.clone()));
                }
                self.message_on(
                    Topic::Job(job),
                    Level::Error,
                    format!("{job}: {}", error.message),
                    error.hint,
                );
            }
            Event::Cancelled { id, .. } => {
                if self.bench.heat_request.block(id) {
                    return;
                }
                let awaited = self.bench.open_request.block(id)
                    || self.bench.pair_request.block(id)
                    || self.bench.strip_request.block(id);
                if awaited {
                    self.bench.paused = true;
                }
            }
            _ => {}
        }
    }

    /// Stops the benchmark's requests (the pairs done stay).
    pub fn cancel_benchmark(&mut self) {
        self.bench.paused = true;
        for id in [
            self.bench.pair_request.take(),
            self.bench.strip_request.take(),
            self.bench.heat_request.take(),
        ]
        .into_iter()
        .flatten()
        {
            self.worker.cancel(id);
        }
    }

    /// Lets a stopped benchmark go on.
    pub fn run_benchmark(&mut self) {
        self.bench.paused = false;
        self.bench.pair_request.unblock();
        self.bench.strip_request.unblock();
        self.bench.heat_request.unblock();
    }

    /// The pair list as shown: dataset indices after the filters, in the
    /// chosen order.
    pub fn bench_list(&self) -> Vec<usize> {
        let Some(opened) = &self.bench.opened else {
            return Vec::new();
        };
        let cols = self.bench_columns();
        super::list_order(&self.settings.benchmark, opened, &self.bench, &cols)
    }

    /// Selects pair `index` (dataset index).
    pub fn select_pair(&mut self, index: usize) {
        if self.bench.selected != Some(index) {
            self.bench.selected = Some(index);
            self.bench.selected_kp = None;
        }
    }

    /// Steps `by` pairs through the list as shown.
    pub fn step_pair(&mut self, by: isize) {
        let list = self.bench_list();
        if list.is_empty() {
            return;
        }
        let at = self
            .bench
            .selected
            .and_then(|s| list.iter().position(|i| *i == s));
        let next = match at {
            None => 0,
            Some(p) => (p as isize + by).clamp(0, list.len() as isize - 1) as usize,
        };
        self.select_pair(list[next]);
    }

    /// Selects the next pair in the list (after the selected one, wrapping)
    /// where `loser`'s PCK is below the other's (clean against noisy, at
    /// the alpha shown). Returns whether one was found.
    pub fn next_loss(&mut self, loser: Mode) -> bool {
        let list = self.bench_list();
        let cols = self.bench_columns();
        let alpha = self.settings.benchmark.alpha;
        let key_of = |m: Mode| {
            cols.iter()
                .find(|c| c.key.mode.source == Source::Sd(m))
                .map(|c| c.key.clone())
        };
        let (Some(clean), Some(noisy)) = (key_of(Mode::Clean), key_of(Mode::Noisy)) else {
            return false;
        };
        let pck = |key: &BenchKey, i: usize| {
            self.bench
                .results(key)
                .and_then(|r| r.record(i))
                .and_then(|r| pair_pck(r, alpha))
        };
        let at = self
            .bench
            .selected
            .and_then(|s| list.iter().position(|i| *i == s))
            .map_or(0, |p| p + 1);
        let n = list.len();
        let found = (0..n).map(|k| list[(at + k) % n]).find(|&i| {
            let (Some(c), Some(nz)) = (pck(&clean, i), pck(&noisy, i)) else {
                return false;
            };
            match loser {
                Mode::Noisy => nz < c,
                _ => c < nz,
            }
        });
        if let Some(i) = found {
            self.select_pair(i);
        }
        found.is_some()
    }
}

/// The pair's pictures as textures (downscaled to at most 1024 px).
fn pair_textures(ctx: &egui::Context, index: usize, imgs: &[Arc<LoadedImage>; 2]) -> PairTextures {
    let tex = |img: &LoadedImage, side: &str| {
        let max = 1024u32;
        let shown = if img.width.max(img.height) > max {
            let s = max as f32 / img.width.max(img.height) as f32;
            let (w, h) = (
                ((img.width as f32 * s) as u32).clamp(1, max),
                ((img.height as f32 * s) as u32).clamp(1, max),
            );
            std::borrow::Cow::Owned(image::imageops::thumbnail(&img.rgb, w, h))
        } else {
            std::borrow::Cow::Borrowed(&img.rgb)
        };
        let color = egui::ColorImage::from_rgb(
            [shown.width() as usize, shown.height() as usize],
            shown.as_raw(),
        );
        ctx.load_texture(
            format!("bench-{index}-{side}"),
            color,
            TextureOptions::LINEAR,
        )
    };
    PairTextures {
        src: tex(&imgs[0], "src"),
        trg: tex(&imgs[1], "trg"),
        src_size: [imgs[0].width as f32, imgs[0].height as f32],
        trg_size: [imgs[1].width as f32, imgs[1].height as f32],
        images: imgs.clone(),
    }
}

/// What an outcome says in a list cell.
pub fn outcome_text(o: Option<&BenchOutcome>, alpha: usize) -> String {
    match o {
        None => "…".into(),
        Some(BenchOutcome::Skipped(_)) => "skipped".into(),
        Some(BenchOutcome::Scored(r)) => {
            pair_pck(r, alpha).map_or_else(|| "—".into(), |p| format!("{:.1}", 100.0 * p))
        }
    }
}

//! The gallery: one query image (A) against up to [`MAX_TARGETS`] target
//! images. Each target is decoded on the worker's light lane and extracted
//! as the pair (A, target) through the same [`crate::worker::Request`]
//! path and feature cache as the main pair, so A is extracted once per
//! (mode, t, …) and each target once; a target's answer to a click is
//! exactly what the correspondence view would show for the pair (A,
//! target). Targets fill in as their features arrive; cancel stops them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::answers::AnswerCache;
use super::column::Column;
use super::file_browser::Filter;
use super::query::{Answer, QueryOptions, QueryPoint};
use super::requests::{ask_slot, pair_key};
use super::settings::Settings;
use super::state::{FeatureSlot, ImageSlot, Level, Topic, answer_layer};
use super::{CleanDiftApp, THUMB_SIDE, View};
use crate::features::extract::Mode;
use crate::features::preprocess::LoadedImage;
use crate::model::FeatureKey;
use crate::worker::{
    ExtractJob, ImageSource, Job, PairFeatures, Request, RequestId, Side, UserError,
};

/// The most target images the gallery holds.
pub const MAX_TARGETS: usize = 8;

/// The three extraction modes in slot order.
const MODES: [Mode; 3] = [Mode::Clean, Mode::Noisy, Mode::Naive];

fn mode_index(m: Mode) -> usize {
    match m {
        Mode::Clean => 0,
        Mode::Noisy => 1,
        Mode::Naive => 2,
    }
}

/// One target image: its decode, its picture and its features per mode.
pub struct Target {
    /// The app's own number for it (never reused; names its jobs).
    pub uid: u32,
    /// A short name (the file name).
    pub name: String,
    /// The file, when it came from one.
    pub path: Option<PathBuf>,
    /// The decoded image, once loaded.
    pub image: Option<ImageSlot>,
    /// The decode in flight.
    pub(super) pending: Option<RequestId>,
    /// Features of (A, this target) per mode (clean, noisy, naive).
    pub(super) slots: [FeatureSlot; 3],
}

impl Target {
    /// The features of (A, this target) in `mode` being shown, if any.
    pub fn features(&self, mode: Mode) -> Option<&Arc<PairFeatures>> {
        self.slots[mode_index(mode)].ready()
    }

    /// The feature slot of `mode`.
    pub fn slot(&self, mode: Mode) -> &FeatureSlot {
        &self.slots[mode_index(mode)]
    }

    /// Whether the image is still being decoded.
    pub fn is_loading(&self) -> bool {
        self.pending.is_some()
    }
}

/// The gallery's targets and the answers derived from them.
#[derive(Default)]
pub struct GalleryState {
    pub(super) targets: Vec<Target>,
    next_uid: u32,
    answers: AnswerCache,
}

impl GalleryState {
    /// The targets, in the order they were added.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Room left for targets.
    pub fn free(&self) -> usize {
        MAX_TARGETS.saturating_sub(self.targets.len())
    }

    fn index_of_request(&self, id: RequestId) -> Option<(usize, Option<Mode>)> {
        self.targets.iter().enumerate().find_map(|(i, t)| {
            if t.pending == Some(id) {
                return Some((i, None));
            }
            MODES
                .iter()
                .find(|m| t.slots[mode_index(**m)].request.awaits(id))
                .map(|m| (i, Some(*m)))
        })
    }

    /// Whether `id` is a decode or an extraction of the gallery in flight.
    pub(super) fn awaits(&self, id: RequestId) -> bool {
        self.index_of_request(id).is_some()
    }

    /// Whether a decode or an extraction is in flight.
    pub(super) fn is_pending(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.pending.is_some() || t.slots.iter().any(FeatureSlot::is_pending))
    }

    /// Whether an extraction the gallery needs failed or was cancelled.
    pub(super) fn is_blocked(&self, modes: &[Mode]) -> bool {
        self.targets
            .iter()
            .any(|t| modes.iter().any(|m| t.slot(*m).is_blocked()))
    }

    /// Forgets every extraction in flight (to cancel them) and returns
    /// their ids.
    pub(super) fn take_pending(&mut self) -> Vec<RequestId> {
        self.targets
            .iter_mut()
            .flat_map(|t| t.slots.iter_mut().filter_map(|s| s.request.take()))
            .collect()
    }

    /// Blocks every extraction in flight (cancel all): their ids and jobs.
    pub(super) fn block_pending(&mut self) -> Vec<(RequestId, Job)> {
        let mut out = Vec::new();
        for t in &mut self.targets {
            for m in MODES {
                if let Some(id) = t.slots[mode_index(m)].request.block_pending() {
                    out.push((id, Job::TargetFeatures(t.uid, m)));
                }
            }
        }
        out
    }

    /// Lets failed or cancelled extractions be asked for again.
    pub(super) fn unblock(&mut self) {
        for t in &mut self.targets {
            for s in &mut t.slots {
                s.request.unblock();
            }
        }
    }

    /// Drops every target's features (a new backbone, a worker restart).
    pub(super) fn clear_features(&mut self) {
        for t in &mut self.targets {
            t.slots = Default::default();
        }
        self.answers.clear();
    }

    /// The answer of `q` (a point of A) in target `index` in `mode` on the
    /// current layer (computed on demand, cached): the best match only.
    pub fn answer(
        &mut self,
        layer: FeatureKey,
        tolerance_cells: f32,
        index: usize,
        mode: Mode,
        q: QueryPoint,
    ) -> Option<Arc<Answer>> {
        if q.side != Side::A {
            return None;
        }
        let f = self.targets.get(index)?.features(mode)?.clone();
        let layer = answer_layer(&f, layer)?;
        let opts = QueryOptions {
            k: 1,
            tolerance_cells,
        };
        self.answers.get(&f, layer, q, &opts)
    }
}

/// The images of a folder the gallery can show: files passing the image
/// filter, sorted by name.
pub fn folder_images(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && Filter::Images.accepts(p))
        .collect();
    out.sort();
    Ok(out)
}

fn short_name(source: &ImageSource) -> String {
    let label = source.label();
    Path::new(&label)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(label)
}

impl CleanDiftApp {
    /// The gallery (targets, their features).
    pub fn gallery(&self) -> &GalleryState {
        &self.gallery
    }

    /// The modes the gallery shows per target: clean and noisy when
    /// [`Settings::gallery_both`] is set, else the main mode.
    pub fn gallery_modes(&self) -> Vec<Mode> {
        gallery_modes(&self.settings)
    }

    /// Adds target images (decoded on the worker); those beyond
    /// [`MAX_TARGETS`] are skipped with a message that says how many.
    pub fn add_targets(&mut self, sources: Vec<ImageSource>) {
        let free = self.gallery.free();
        let total = sources.len();
        for source in sources.into_iter().take(free) {
            let uid = self.gallery.next_uid;
            self.gallery.next_uid += 1;
            let id = self.worker.next_id();
            let name = short_name(&source);
            let path = source.path();
            if self.send(Request::LoadTarget {
                id,
                target: uid,
                source,
            }) {
                self.gallery.targets.push(Target {
                    uid,
                    name,
                    path,
                    image: None,
                    pending: Some(id),
                    slots: Default::default(),
                });
            }
        }
        if total > free {
            self.message(
                Level::Warn,
                format!(
                    "The gallery holds {MAX_TARGETS} targets: added {}, skipped {}",
                    free.min(total),
                    total - free
                ),
                "Remove targets (Gallery section) to make room".into(),
            );
        }
    }

    /// Adds the images of `dir` (sorted by name) as targets, as many as
    /// there is room for; the message says how many were skipped.
    pub fn add_target_folder(&mut self, dir: &Path) {
        let files = match folder_images(dir) {
            Ok(f) => f,
            Err(e) => {
                self.message(
                    Level::Error,
                    format!("Gallery: cannot read the folder {}: {e}", dir.display()),
                    "Choose another folder".into(),
                );
                return;
            }
        };
        if files.is_empty() {
            self.message(
                Level::Warn,
                format!("Gallery: {} holds no images", dir.display()),
                "Choose a folder with PNG, JPEG, WebP, BMP or TIFF files".into(),
            );
            return;
        }
        let free = self.gallery.free();
        let n = files.len();
        let taken = n.min(free);
        let sources = files
            .into_iter()
            .take(free)
            .map(ImageSource::Path)
            .collect();
        self.add_targets(sources);
        self.message(
            if taken < n { Level::Warn } else { Level::Info },
            format!(
                "Gallery: {n} image(s) in {}: added the first {taken} (sorted by name), skipped {}",
                dir.display(),
                n - taken
            ),
            if taken < n {
                format!("The gallery holds {MAX_TARGETS} targets")
            } else {
                String::new()
            },
        );
    }

    /// Removes the target `uid` (its jobs are cancelled).
    pub fn remove_target(&mut self, uid: u32) {
        if let Some(i) = self.gallery.targets.iter().position(|t| t.uid == uid) {
            let t = self.gallery.targets.remove(i);
            self.cancel_target(t);
        }
    }

    /// Removes every target.
    pub fn clear_targets(&mut self) {
        for t in std::mem::take(&mut self.gallery.targets) {
            self.cancel_target(t);
        }
        self.gallery.answers.clear();
    }

    fn cancel_target(&mut self, mut t: Target) {
        if let Some(id) = t.pending.take() {
            self.worker.cancel(id);
            self.progress.remove(&id);
        }
        for s in &mut t.slots {
            if let Some(id) = s.request.take() {
                self.worker.cancel(id);
                self.progress.remove(&id);
            }
        }
    }

    /// The committed query's answer in target `index` and `mode` (tests,
    /// export).
    pub fn gallery_answer(&mut self, index: usize, mode: Mode) -> Option<Arc<Answer>> {
        let q = self.view.query?;
        let s = &self.settings;
        self.gallery
            .answer(s.features.layer, s.matching.tolerance_cells, index, mode, q)
    }

    /// Whether target `index`'s features in `mode` match the current
    /// settings and images.
    pub fn gallery_current(&self, index: usize, mode: Mode) -> bool {
        let Some(t) = self.gallery.targets.get(index) else {
            return false;
        };
        let (Some(a), Some(img)) = (self.images.get(Side::A), &t.image) else {
            return false;
        };
        let slot = t.slot(mode);
        pair_key(
            &self.settings,
            &self.backbone,
            &a.image,
            &img.image,
            Column::from(mode),
        )
        .is_some_and(|(key, ..)| slot.ready.as_ref().is_some_and(|(k, _)| *k == key))
    }

    /// Asks for the features of (A, target) the gallery shows (once per
    /// settings), while the gallery view is shown.
    pub(super) fn request_gallery(&mut self) {
        if self.settings.view != View::Gallery || self.messages.worker_dead.is_some() {
            return;
        }
        let super::BackboneState::Ready { id: bb, .. } = &self.backbone else {
            return;
        };
        let bb = *bb;
        if self.is_training() {
            return;
        }
        let Some(a) = self.images.get(Side::A).map(|s| s.image.clone()) else {
            return;
        };
        let modes = self.gallery_modes();
        // Target by target (each in every mode), in the order added.
        for i in 0..self.gallery.targets.len() {
            let (uid, img) = {
                let t = &self.gallery.targets[i];
                let Some(img) = t.image.as_ref().map(|s| s.image.clone()) else {
                    continue;
                };
                (t.uid, img)
            };
            for &mode in &modes {
                let Some((key, images, settings)) =
                    pair_key(&self.settings, &self.backbone, &a, &img, mode.into())
                else {
                    continue;
                };
                let slot = &mut self.gallery.targets[i].slots[mode_index(mode)];
                ask_slot(
                    &mut self.worker,
                    &mut self.messages.worker_dead,
                    slot,
                    key,
                    |id| Request::ExtractTarget {
                        job: ExtractJob {
                            id,
                            backbone: bb,
                            images,
                            settings,
                            thumb_side: THUMB_SIDE,
                        },
                        target: uid,
                    },
                );
            }
        }
    }

    /// The image of target `uid` (request `id`) arrived.
    pub(super) fn gallery_image(
        &mut self,
        uid: u32,
        id: RequestId,
        image: Arc<LoadedImage>,
        path: Option<PathBuf>,
    ) {
        let Some(i) = self
            .gallery
            .targets
            .iter()
            .position(|t| t.uid == uid && t.pending == Some(id))
        else {
            return;
        };
        let slot = self.image_slot(&format!("target-{uid}"), image, path);
        let t = &mut self.gallery.targets[i];
        t.pending = None;
        t.name = slot.name.clone();
        t.image = Some(slot);
    }

    /// Features of (A, target `uid`) in `mode` (request `id`) arrived.
    pub(super) fn gallery_features(
        &mut self,
        (uid, mode): (u32, Mode),
        id: RequestId,
        features: &Arc<PairFeatures>,
    ) {
        let Some(t) = self.gallery.targets.iter_mut().find(|t| t.uid == uid) else {
            return;
        };
        let slot = &mut t.slots[mode_index(mode)];
        let Some(key) = slot.request.finish(id) else {
            return;
        };
        slot.ready = Some((key.ran(features), features.clone()));
        slot.request.unblock();
        self.messages
            .resolve(Topic::Job(Job::TargetFeatures(uid, mode)));
    }

    /// A gallery job failed (`error`) or was cancelled (`None`). A target
    /// whose image cannot be opened leaves the gallery with a message that
    /// names the file; the others go on.
    pub(super) fn gallery_failed(&mut self, id: RequestId, job: Job, error: Option<UserError>) {
        let Some((i, mode)) = self.gallery.index_of_request(id) else {
            return;
        };
        match mode {
            None => {
                let t = self.gallery.targets.remove(i);
                let what = t
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| t.name.clone());
                match error {
                    Some(e) => {
                        // Image errors name the file already.
                        let text = if e.message.contains(&t.name) {
                            format!("Gallery: {}", e.message)
                        } else {
                            format!("Gallery: cannot open {what}: {}", e.message)
                        };
                        self.message_on(Topic::Job(job), Level::Error, text, e.hint)
                    }
                    None => self.message(
                        Level::Info,
                        format!("Gallery: loading {what} was cancelled"),
                        String::new(),
                    ),
                }
            }
            Some(m) => {
                let t = &mut self.gallery.targets[i];
                t.slots[mode_index(m)].request.block(id);
                let name = t.name.clone();
                match error {
                    Some(e) => self.message_on(
                        Topic::Job(job),
                        Level::Error,
                        format!("Gallery {name}: {m} features: {}", e.message),
                        e.hint,
                    ),
                    None => self.message_on(
                        Topic::Job(job),
                        Level::Info,
                        format!("Cancelled: gallery {name}, {m} features"),
                        "Change a setting or press Extract to run it again".into(),
                    ),
                }
            }
        }
    }
}

/// The modes the gallery shows per target.
pub(super) fn gallery_modes(s: &Settings) -> Vec<Mode> {
    if s.gallery.both {
        vec![Mode::Clean, Mode::Noisy]
    } else {
        vec![s.features.mode]
    }
}

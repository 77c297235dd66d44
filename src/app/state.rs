//! The app's state, one struct per view or panel (egui-demo style): each UI
//! function gets the parts it draws, never the whole app.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use egui::TextureHandle;

use super::answers::AnswerCache;
use super::column::{Column, ModeKey};
use super::jobs::{PcaKey, Tracked};
use super::overlay::Overlay;
use super::provenance::{DrawnAnswer, SlotKey};
use super::query::{self, Answer, QueryOptions, QueryPoint, StripTile};
use super::settings::MatchSettings;
use crate::features::extract::Mode;
use crate::features::preprocess::LoadedImage;
use crate::model::FeatureKey;
use crate::worker::{
    BackboneChoice, BackboneInfo, Job, PairFeatures, PcaColours, RequestId, Side, UserError,
};

/// A loaded image with its texture.
pub struct ImageSlot {
    pub image: Arc<LoadedImage>,
    pub texture: TextureHandle,
    /// The file, when it came from one.
    pub path: Option<PathBuf>,
    /// A short name (file name or sample name).
    pub name: String,
}

/// The backbone's state.
pub enum BackboneState {
    None,
    Loading {
        id: RequestId,
        choice: BackboneChoice,
    },
    Ready {
        id: RequestId,
        info: Arc<BackboneInfo>,
        /// A later load that failed early, while this backbone ran on
        /// (`Event::BackboneKept`).
        failed_load: Option<Box<(BackboneChoice, UserError)>>,
    },
    Failed {
        choice: BackboneChoice,
        error: UserError,
    },
}

impl BackboneState {
    /// The loaded backbone.
    pub fn info(&self) -> Option<&Arc<BackboneInfo>> {
        match self {
            BackboneState::Ready { info, .. } => Some(info),
            _ => None,
        }
    }
}

/// Features of one mode: what is wanted, in flight, and shown.
#[derive(Default)]
pub struct FeatureSlot {
    /// The extraction in flight, keyed by its inputs.
    pub(super) request: Tracked<SlotKey>,
    /// The features shown and the inputs they were computed from.
    pub(super) ready: Option<(SlotKey, Arc<PairFeatures>)>,
}

impl FeatureSlot {
    /// The features shown (maybe of older settings while newer ones come).
    pub fn ready(&self) -> Option<&Arc<PairFeatures>> {
        self.ready.as_ref().map(|(_, f)| f)
    }

    /// Whether newer features are being extracted.
    pub fn is_pending(&self) -> bool {
        self.request.is_pending()
    }

    /// Whether the last extraction failed or was cancelled.
    pub fn is_blocked(&self) -> bool {
        self.request.is_blocked()
    }
}

/// Severity of a status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// A line of the status area.
#[derive(Debug, Clone)]
pub struct StatusMessage {
    pub level: Level,
    pub text: String,
    /// What to do, for warnings and errors.
    pub hint: String,
    pub at: Instant,
    /// What it is about: a later success or message on the same topic
    /// retires it from the status line (it stays in the log).
    pub topic: Topic,
    /// Still the word on its topic (not retired, not dismissed).
    pub active: bool,
    /// A folder the message is about (exports): an "Open folder" button.
    pub folder: Option<std::path::PathBuf>,
    /// The status line has shown it: a warning then gives way to the next
    /// message (the log keeps it).
    pub shown: bool,
}

/// What a status message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Anything without a lifecycle of its own.
    General,
    /// A kind of job: opening an image into a side, loading the backbone,
    /// one column's features, PCA, the fine-tune.
    Job(Job),
    /// Saving and exporting.
    Export,
    /// The Fusion section's values (refused until fixed).
    Fusion,
}

/// The layer strip is cached by (features, query point, side).
type StripKey = (u64, [u32; 2], Side);

/// The layer a query answers on: `wanted`, or the only layer of
/// single-layer features (DINOv2, fused).
pub(super) fn answer_layer(f: &PairFeatures, wanted: FeatureKey) -> Option<FeatureKey> {
    let layers = f.layers();
    if layers.contains(&wanted) {
        Some(wanted)
    } else {
        layers.first().copied()
    }
}

/// The images A and B: loaded, and the decode awaited per side.
#[derive(Default)]
pub struct ImagesState {
    pub(super) slots: [Option<ImageSlot>; 2],
    pub(super) pending: [Option<RequestId>; 2],
    /// Why an empty side has no image (its last decode failed).
    pub(super) errors: [Option<String>; 2],
    /// `--query X,Y` in original pixels of A, placed (through A's downscale
    /// on loading, if any) when A arrives.
    pub(super) launch_query: Option<(f32, f32)>,
}

impl ImagesState {
    /// The image of a side, if loaded.
    pub fn get(&self, side: Side) -> Option<&ImageSlot> {
        self.slots[side.index()].as_ref()
    }

    /// Width and height of a side's image, if loaded.
    pub fn size(&self, side: Side) -> Option<(u32, u32)> {
        self.get(side).map(|s| (s.image.width, s.image.height))
    }

    /// The side the decode `id` is for, if it is awaited.
    pub(super) fn side_of(&self, id: RequestId) -> Option<Side> {
        Side::BOTH
            .into_iter()
            .find(|s| self.pending[s.index()] == Some(id))
    }

    /// What an empty side shows instead of a picture.
    pub fn placeholder(&self, side: Side) -> String {
        match &self.errors[side.index()] {
            Some(e) => format!(
                "{side}: {e}\n\nOpen another image (File > Open image {side}…) or drop one here"
            ),
            None => format!("Loading {side}…"),
        }
    }

    pub(super) fn is_pending(&self) -> bool {
        self.pending.iter().any(Option::is_some)
    }
}

/// Features per column, PCA colours, and what is derived from them within
/// the frame (query answers, the layer strip).
#[derive(Default)]
pub struct FeatureState {
    pub(super) slots: BTreeMap<ModeKey, FeatureSlot>,
    pub(super) pca_request: Tracked<PcaKey>,
    pub(super) pca: Option<Arc<PcaColours>>,
    answers: AnswerCache,
    strip: Option<(StripKey, Arc<Vec<StripTile>>)>,
    /// The mode and A's and B's wall times (seconds; `None`: from the
    /// cache) of the last features the worker extracted for a column.
    pub(super) last_extraction: Option<(Mode, [Option<f32>; 2])>,
}

impl FeatureState {
    /// The last extraction's wall time per image, as the Features section
    /// shows it: `"Last extraction (noisy): A 12.3 s · B 11.9 s"`.
    pub fn last_extraction_text(&self) -> Option<String> {
        let (mode, secs) = self.last_extraction?;
        let side = |name: &str, s: Option<f32>| match s {
            Some(s) => format!("{name} {s:.1} s"),
            None => format!("{name} cached"),
        };
        Some(format!(
            "Last extraction ({mode}): {} · {}",
            side("A", secs[0]),
            side("B", secs[1])
        ))
    }

    /// The features of a column being shown, if any.
    pub fn features_of(&self, col: impl Into<Column>) -> Option<&Arc<PairFeatures>> {
        self.slots.get(&col.into().key()).and_then(|s| s.ready())
    }

    /// The feature slot of a column.
    pub fn slot(&self, col: impl Into<Column>) -> Option<&FeatureSlot> {
        self.slots.get(&col.into().key())
    }

    /// Whether the column's shown features were made for `key`.
    pub(super) fn is_current(&self, col: Column, key: &SlotKey) -> bool {
        self.slots
            .get(&col.key())
            .and_then(|s| s.ready.as_ref())
            .is_some_and(|(k, _)| k == key)
    }

    /// Whether an extraction or PCA is in flight.
    pub(super) fn is_pending(&self) -> bool {
        self.slots.values().any(|s| s.is_pending()) || self.pca_request.is_pending()
    }

    /// Whether `id` is an extraction or PCA in flight.
    pub(super) fn awaits(&self, id: RequestId) -> bool {
        self.slots.values().any(|s| s.request.awaits(id)) || self.pca_request.awaits(id)
    }

    /// Forgets every extraction in flight (to cancel them) and returns their
    /// ids.
    pub(super) fn take_pending(&mut self) -> Vec<RequestId> {
        self.slots
            .values_mut()
            .filter_map(|s| s.request.take())
            .collect()
    }

    /// Request `id` (features or PCA) failed or was cancelled: its key is
    /// not asked for again by itself. Returns whether the app waited for it.
    pub(super) fn block(&mut self, id: RequestId) -> bool {
        let mut hit = false;
        for slot in self.slots.values_mut() {
            hit |= slot.request.block(id);
        }
        hit | self.pca_request.block(id)
    }

    /// Blocks everything in flight (cancel all): returns the ids with their
    /// jobs.
    pub(super) fn block_pending(&mut self) -> Vec<(RequestId, Job)> {
        let mut out: Vec<(RequestId, Job)> = self
            .slots
            .iter_mut()
            .filter_map(|(k, s)| s.request.block_pending().map(|id| (id, k.job())))
            .collect();
        if let Some(id) = self.pca_request.block_pending() {
            out.push((id, Job::Pca));
        }
        out
    }

    /// Lets failed or cancelled extractions be asked for again.
    pub(super) fn unblock_features(&mut self) {
        for slot in self.slots.values_mut() {
            slot.request.unblock();
        }
    }

    /// Lets failed or cancelled keys (extractions and PCA) be asked for
    /// again.
    pub(super) fn unblock(&mut self) {
        self.unblock_features();
        self.pca_request.unblock();
    }

    /// Drops what was derived from the features (new backbone, swap).
    pub(super) fn clear_derived(&mut self) {
        self.pca = None;
        self.answers.clear();
        self.strip = None;
    }

    /// The PCA colours of `col` on the current layer, if ready.
    pub fn pca(&self, layer: FeatureKey, joint: bool, col: Column) -> Option<&Arc<PcaColours>> {
        let f = self.features_of(col)?;
        let layer = answer_layer(f, layer)?;
        self.pca
            .as_ref()
            .filter(|p| p.features == f.generation && p.layer == layer && p.joint == joint)
    }

    /// The answer of `q` in a column on `layer` (computed on demand,
    /// cached); the top k only for the `committed` query.
    pub fn answer(
        &mut self,
        layer: FeatureKey,
        matching: &MatchSettings,
        committed: Option<QueryPoint>,
        col: impl Into<Column>,
        q: QueryPoint,
    ) -> Option<Arc<Answer>> {
        let f = self.features_of(col)?.clone();
        let layer = answer_layer(&f, layer)?;
        let mut opts = QueryOptions {
            k: matching.top_k.max(1),
            tolerance_cells: matching.tolerance_cells,
        };
        if committed != Some(q) || !matching.show_top_k {
            // Hover previews skip the top-k search: they change every frame.
            opts.k = 1;
        }
        self.answers.get(&f, layer, q, &opts)
    }

    /// The layer strip of the committed query `q` in `mode`.
    pub fn strip_tiles(
        &mut self,
        mode: Mode,
        q: Option<QueryPoint>,
    ) -> Option<Arc<Vec<StripTile>>> {
        let q = q?;
        let f = self.features_of(mode)?.clone();
        let key = (f.generation, [q.x.to_bits(), q.y.to_bits()], q.side);
        if let Some((k, tiles)) = &self.strip
            && *k == key
        {
            return Some(tiles.clone());
        }
        let tiles = Arc::new(query::strip(&f, q));
        self.strip = Some((key, tiles.clone()));
        Some(tiles)
    }
}

/// The central view's per-frame state: the hover preview, where images and
/// strip tiles were drawn, and the overlay painter.
pub struct ViewState {
    /// The committed query point (session state: not persisted).
    pub(super) query: Option<QueryPoint>,
    /// The hovered point (live preview) this frame.
    pub(super) hover: Option<QueryPoint>,
    /// No hover preview until the pointer moves: the UI's scale changed and
    /// egui's last pointer position names another place now.
    pub(super) hover_held: bool,
    /// Screen rects of the images drawn last frame (tests, drops).
    pub(super) image_rects: Vec<(Side, egui::Rect, Option<Column>)>,
    pub(super) strip_rects: Vec<(FeatureKey, egui::Rect)>,
    /// The gallery's target pictures: (target uid, mode, rect).
    pub(super) gallery_rects: Vec<(u32, crate::features::extract::Mode, egui::Rect)>,
    /// What the views drew of each answer (current, greyed or hidden).
    pub(super) drawn: Vec<DrawnAnswer>,
    pub(super) overlay: Overlay,
    /// The keypoint set of A (session state, like the query).
    pub(super) keypoints: super::keypoints::KeypointState,
    /// Where numbers were placed on the pictures this frame (rank labels,
    /// keypoint numbers), so later ones keep clear of them.
    pub(super) labels: std::cell::RefCell<Vec<egui::Rect>>,
}

impl ViewState {
    pub(super) fn new(overlay: Overlay) -> ViewState {
        ViewState {
            query: None,
            hover: None,
            hover_held: false,
            image_rects: Vec::new(),
            strip_rects: Vec::new(),
            gallery_rects: Vec::new(),
            drawn: Vec::new(),
            overlay,
            keypoints: Default::default(),
            labels: Default::default(),
        }
    }

    /// The side whose image (or half of the window of `width`) lies under
    /// `pos`.
    pub(super) fn side_at(&self, pos: Option<egui::Pos2>, width: f32) -> Side {
        let Some(pos) = pos else {
            return Side::A;
        };
        if let Some((side, _, _)) = self
            .image_rects
            .iter()
            .find(|(_, r, _)| r.expand(8.0).contains(pos))
        {
            return *side;
        }
        let centre = |side: Side| {
            self.image_rects
                .iter()
                .find(|(s, _, _)| *s == side)
                .map(|(_, r, _)| r.center().x)
        };
        match (centre(Side::A), centre(Side::B)) {
            (Some(a), Some(b)) if (pos.x - b).abs() < (pos.x - a).abs() => Side::B,
            (Some(_), Some(_)) => Side::A,
            _ => {
                if pos.x > width / 2.0 {
                    Side::B
                } else {
                    Side::A
                }
            }
        }
    }
}

/// The status area: messages, the dead worker's last words, the log window.
#[derive(Default)]
pub struct MessagesState {
    pub(super) list: VecDeque<StatusMessage>,
    /// The worker died with this message (until restarted).
    pub(super) worker_dead: Option<String>,
    pub(super) show_log: bool,
    /// Messages pushed so far, the count at the last error, and the count
    /// the log window had shown (for the Messages button's flag).
    pushed: u64,
    errors_pushed: u64,
    seen: u64,
}

impl MessagesState {
    /// Adds a status message without a topic (kept: the last 200).
    pub fn push(&mut self, level: Level, text: String, hint: String) {
        self.push_full(Topic::General, level, text, hint, None);
    }

    /// Adds a status message about `topic`: earlier ones on that topic
    /// retire from the status line (a new word on it replaces the old).
    pub fn push_on(&mut self, topic: Topic, level: Level, text: String, hint: String) {
        self.push_full(topic, level, text, hint, None);
    }

    /// Adds an export message about `folder` (shown with "Open folder").
    pub fn push_with_folder(
        &mut self,
        level: Level,
        text: String,
        hint: String,
        folder: Option<std::path::PathBuf>,
    ) {
        self.push_full(Topic::Export, level, text, hint, folder);
    }

    fn push_full(
        &mut self,
        topic: Topic,
        level: Level,
        text: String,
        hint: String,
        folder: Option<std::path::PathBuf>,
    ) {
        match level {
            Level::Info => tracing::info!("{text}"),
            Level::Warn => tracing::warn!("{text} {hint}"),
            Level::Error => tracing::error!("{text} {hint}"),
        }
        if topic != Topic::General {
            self.resolve(topic);
        }
        // A warning the status line has shown moves to the log: the newest
        // word takes the line.
        for m in self
            .list
            .iter_mut()
            .filter(|m| m.shown && m.level == Level::Warn)
        {
            m.active = false;
        }
        self.list.push_back(StatusMessage {
            level,
            text,
            hint,
            at: Instant::now(),
            topic,
            active: true,
            folder,
            shown: false,
        });
        self.pushed += 1;
        if level == Level::Error {
            self.errors_pushed = self.pushed;
        }
        while self.list.len() > 200 {
            self.list.pop_front();
        }
    }

    /// `topic` went well: its warnings and errors (and stale notes such as
    /// "cancelled") leave the status line.
    pub fn resolve(&mut self, topic: Topic) {
        for m in self.list.iter_mut().filter(|m| m.topic == topic) {
            m.active = false;
        }
    }

    /// The message the status line shows: the result of a save or export
    /// when it is the newest word (the newest action's result wins), else the
    /// latest error (or warning not yet shown) still standing, else the
    /// latest note still standing.
    pub fn current(&self) -> Option<&StatusMessage> {
        self.current_index().and_then(|i| self.list.get(i))
    }

    fn current_index(&self) -> Option<usize> {
        let mut active = self.list.iter().enumerate().rev().filter(|(_, m)| m.active);
        let (newest, m) = active.clone().next()?;
        if m.topic == Topic::Export {
            return Some(newest);
        }
        Some(
            active
                .find(|(_, m)| m.level != Level::Info)
                .map_or(newest, |(i, _)| i),
        )
    }

    /// The status line drew the current message.
    pub fn mark_shown(&mut self) {
        if let Some(m) = self.current_index().and_then(|i| self.list.get_mut(i)) {
            m.shown = true;
        }
    }

    /// Takes the shown message off the status line (the log keeps it).
    pub fn dismiss_current(&mut self) {
        if let Some(m) = self.current_index().and_then(|i| self.list.get_mut(i)) {
            m.active = false;
        }
    }

    /// Errors since the log was last opened.
    pub fn unseen_errors(&self) -> bool {
        self.errors_pushed > self.seen
    }

    /// The log window shows everything up to now.
    pub fn mark_seen(&mut self) {
        self.seen = self.pushed;
    }
}

/// Switches of the window as a whole.
#[derive(Default)]
pub struct UiFlags {
    /// Talk mode: fullscreen, bigger everything.
    pub(super) talk: bool,
    pub(super) show_help: bool,
    /// Settings and egui memory persist between runs.
    pub(super) persist: bool,
    /// wgpu runs on a CPU adapter (lavapipe, llvmpipe, WARP).
    pub(super) software_adapter: bool,
    /// What the status area says about the renderer.
    pub(super) renderer_note: String,
    /// The side panel is hidden (H or the top bar's button), remembered
    /// separately for normal and talk mode (talk mode starts hidden).
    pub(super) panel_hidden: [bool; 2],
    /// Talk mode's zoom of the whole UI.
    pub(super) scale: super::talk::UiScale,
}

impl UiFlags {
    /// Scale of markers and labels (talk mode: bigger).
    /// Whether the side panel shows in the current mode.
    pub(super) fn panel_shown(&self) -> bool {
        !self.panel_hidden[usize::from(self.talk)]
    }

    /// Shows or hides the side panel in the current mode.
    pub(super) fn toggle_panel(&mut self) {
        let i = usize::from(self.talk);
        self.panel_hidden[i] = !self.panel_hidden[i];
    }

    pub(super) fn big(&self) -> f32 {
        if self.talk { 1.6 } else { 1.0 }
    }
}

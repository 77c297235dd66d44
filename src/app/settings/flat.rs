//! Settings files of the flat layout (before the settings were nested by
//! concern: 42 fields side by side, the session's query point among them)
//! still load: [`decode`] tells the layouts apart and moves every
//! persisted value to its place. The query point is session state now and
//! is not carried over.

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    BackboneSettings, BenchmarkSettings, CompareSettings, DisplaySettings, ExportSettings,
    FeatureSettings, FusionChoice, GallerySettings, MatchSettings, ModelPreset, PcaSettings,
    RangeMode, Settings, SizeChoice, SweepSettings, TrainSettings, View, given,
};
use crate::features::extract::Mode;
use crate::model::FeatureKey;
use crate::render::Colormap;

/// Decodes a settings value as eframe's store holds it: the nested layout,
/// or the flat one of older files.
pub fn decode(value: &str) -> Result<Settings, ron::error::SpannedError> {
    let probe: Probe = ron::from_str(value)?;
    if probe.is_nested() {
        ron::from_str(value)
    } else {
        ron::from_str::<FlatSettings>(value).map(Settings::from)
    }
}

/// The groups only the nested layout has (the other fields are the same
/// in both: a file of only those reads the same either way).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Probe {
    #[serde(deserialize_with = "given")]
    backbone: Option<IgnoredAny>,
    #[serde(deserialize_with = "given")]
    features: Option<IgnoredAny>,
    #[serde(deserialize_with = "given")]
    display: Option<IgnoredAny>,
    #[serde(deserialize_with = "given")]
    matching: Option<IgnoredAny>,
    #[serde(deserialize_with = "given")]
    compare: Option<IgnoredAny>,
    #[serde(deserialize_with = "given")]
    pca: Option<IgnoredAny>,
    #[serde(deserialize_with = "given")]
    gallery: Option<IgnoredAny>,
    #[serde(deserialize_with = "given")]
    export: Option<IgnoredAny>,
}

impl Probe {
    fn is_nested(&self) -> bool {
        [
            &self.backbone,
            &self.features,
            &self.display,
            &self.matching,
            &self.compare,
            &self.pca,
            &self.gallery,
            &self.export,
        ]
        .iter()
        .any(|g| g.is_some())
    }
}

/// The flat layout, field for field (the query point is read and dropped).
#[derive(Deserialize)]
#[serde(default)]
struct FlatSettings {
    image_paths: [Option<PathBuf>; 2],
    preset: ModelPreset,
    folder: String,
    student: String,
    device: String,
    dtype: String,
    mode: Mode,
    t: f64,
    ensemble: usize,
    seed: u64,
    prompt: String,
    layer: FeatureKey,
    size: SizeChoice,
    letterbox: bool,
    view: View,
    compare_naive: bool,
    show_strip: bool,
    colormap: Colormap,
    opacity: f32,
    range: RangeMode,
    lo: f32,
    hi: f32,
    top_k: usize,
    show_top_k: bool,
    tolerance_cells: f32,
    hover_preview: bool,
    pca_opacity: f32,
    pca_joint: bool,
    query: IgnoredAny,
    export_dir: Option<PathBuf>,
    figure_scale: u32,
    builtin_file_dialog: bool,
    compare_previous: bool,
    compare_dino: bool,
    compare_fused: bool,
    dino_model: String,
    pca_source: crate::app::ColumnSource,
    fusion: FusionChoice,
    gallery_both: bool,
    train: TrainSettings,
    sweep: SweepSettings,
}

impl Default for FlatSettings {
    /// The nested defaults, flat: a field a flat file lacks gets the same
    /// value as in a fresh nested file.
    fn default() -> Self {
        let Settings {
            image_paths,
            view,
            backbone: b,
            features: f,
            display: d,
            matching: m,
            compare: c,
            pca: p,
            fusion,
            gallery: g,
            export: e,
            train,
            sweep,
            benchmark: _,
        } = Settings::default();
        FlatSettings {
            image_paths,
            preset: b.preset,
            folder: b.folder,
            student: b.student,
            device: b.device,
            dtype: b.dtype,
            mode: f.mode,
            t: f.t,
            ensemble: f.ensemble,
            seed: f.seed,
            prompt: f.prompt,
            layer: f.layer,
            size: f.size,
            letterbox: f.letterbox,
            view,
            compare_naive: c.naive,
            show_strip: c.show_strip,
            colormap: d.colormap,
            opacity: d.opacity,
            range: d.range,
            lo: d.lo,
            hi: d.hi,
            top_k: m.top_k,
            show_top_k: m.show_top_k,
            tolerance_cells: m.tolerance_cells,
            hover_preview: m.hover_preview,
            pca_opacity: p.opacity,
            pca_joint: p.joint,
            query: IgnoredAny,
            export_dir: e.dir,
            figure_scale: e.figure_scale,
            builtin_file_dialog: e.builtin_file_dialog,
            compare_previous: c.previous,
            compare_dino: c.dino,
            compare_fused: c.fused,
            dino_model: fusion.dino_model.clone(),
            pca_source: p.source,
            fusion,
            gallery_both: g.both,
            train,
            sweep,
        }
    }
}

impl From<FlatSettings> for Settings {
    fn from(f: FlatSettings) -> Settings {
        Settings {
            image_paths: f.image_paths,
            view: f.view,
            backbone: BackboneSettings {
                preset: f.preset,
                folder: f.folder,
                student: f.student,
                device: f.device,
                dtype: f.dtype,
            },
            features: FeatureSettings {
                mode: f.mode,
                t: f.t,
                ensemble: f.ensemble,
                seed: f.seed,
                prompt: f.prompt,
                layer: f.layer,
                size: f.size,
                letterbox: f.letterbox,
            },
            display: DisplaySettings {
                colormap: f.colormap,
                opacity: f.opacity,
                range: f.range,
                lo: f.lo,
                hi: f.hi,
            },
            matching: MatchSettings {
                top_k: f.top_k,
                show_top_k: f.show_top_k,
                tolerance_cells: f.tolerance_cells,
                hover_preview: f.hover_preview,
            },
            compare: CompareSettings {
                naive: f.compare_naive,
                previous: f.compare_previous,
                dino: f.compare_dino,
                fused: f.compare_fused,
                show_strip: f.show_strip,
            },
            pca: PcaSettings {
                opacity: f.pca_opacity,
                joint: f.pca_joint,
                source: f.pca_source,
            },
            fusion: FusionChoice {
                dino_model: f.dino_model,
                ..f.fusion
            },
            gallery: GallerySettings {
                both: f.gallery_both,
            },
            export: ExportSettings {
                dir: f.export_dir,
                figure_scale: f.figure_scale,
                builtin_file_dialog: f.builtin_file_dialog,
            },
            train: f.train,
            sweep: f.sweep,
            benchmark: BenchmarkSettings::default(),
        }
    }
}

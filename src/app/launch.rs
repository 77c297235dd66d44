//! Launching the app: the command line ([`AppArgs`]), what it turns into
//! ([`LaunchOptions`]), and [`run`], which picks a renderer and opens the
//! window. The only `anyhow` in the app lives here.

use std::path::PathBuf;

use crate::features::extract::Mode;
use crate::model::FeatureKey;
use crate::worker::ImageSource;

use super::{CleanDiftApp, SizeChoice, TITLE, View};

/// Command-line options of the app (`cleandift [OPTIONS] [A] [B]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AppArgs {
    /// Image A and image B (default: the last session's images, or the
    /// embedded sample pair).
    #[arg(value_name = "IMAGE", num_args = 0..=2)]
    pub images: Vec<PathBuf>,
    /// Model: sd21 (CleanDIFT SD 2.1, the default), sd15, tiny-sd21 or
    /// tiny-sd15 (offline, random weights), or a local diffusers folder.
    #[arg(long)]
    pub model: Option<String>,
    /// CleanDIFT student: FILE, REPO:FILE, or `none`.
    #[arg(long)]
    pub student: Option<String>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// clean, naive or noisy.
    #[arg(long)]
    pub mode: Option<String>,
    /// Feature layer: mid, us1 … us10.
    #[arg(long)]
    pub layer: Option<String>,
    /// Timestep of naive and noisy modes, 0–999.
    #[arg(long)]
    pub t: Option<f64>,
    /// correspondence, compare, pca, gallery, sweep or benchmark.
    #[arg(long)]
    pub view: Option<String>,
    /// The benchmark view's dataset: spair:DIR (an SPair-71k folder) or
    /// warp:DIR (synthetic warps of a folder of images); opens the
    /// benchmark view unless --view names another.
    #[arg(long, value_name = "spair:DIR|warp:DIR")]
    pub dataset: Option<String>,
    /// A query point in A, original pixels: X,Y.
    #[arg(long, value_name = "X,Y")]
    pub query: Option<String>,
    /// Start in talk mode: fullscreen, large markers and labels.
    #[arg(long)]
    pub talk: bool,
    /// auto (wgpu on a GPU; glow with CPU colormaps when wgpu would run on a
    /// software rasterizer or finds no adapter), wgpu, or glow.
    #[arg(long, default_value = "auto")]
    pub renderer: String,
    /// Window size in points, WxH.
    #[arg(long, value_name = "WxH")]
    pub window_size: Option<String>,
    /// Folder for S (screenshot) and E (figure PNG/SVG + JSON) exports
    /// (default: your Pictures folder, else home).
    #[arg(long)]
    pub export_dir: Option<PathBuf>,
    /// Neither read nor write the remembered settings.
    #[arg(long)]
    pub no_persist: bool,
    /// Measure N frames still, N while dragging the query and up to N while
    /// the worker extracts, print frame-time statistics, then close.
    #[arg(long, value_name = "N")]
    pub frame_report: Option<usize>,
}

/// How the app starts (from [`AppArgs`], or set by tests).
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Images for A and B (`None`: remembered ones, else the sample pair).
    pub images: Option<[ImageSource; 2]>,
    pub model: Option<String>,
    pub student: Option<String>,
    pub device: Option<String>,
    pub mode: Option<Mode>,
    pub layer: Option<FeatureKey>,
    pub t: Option<f64>,
    pub view: Option<View>,
    /// The benchmark's dataset (`spair:DIR` or `warp:DIR`).
    pub dataset: Option<String>,
    /// A query point in A.
    pub query: Option<(f32, f32)>,
    pub talk: bool,
    /// Draw overlays on the CPU even with wgpu.
    pub cpu_overlay: bool,
    /// What the status area says about the renderer (e.g. the fallback).
    pub renderer_note: Option<String>,
    pub export_dir: Option<PathBuf>,
    /// Read and write remembered settings.
    pub persist: bool,
    /// The settings file (eframe's `app.ron`), read and checked by the app
    /// itself when `persist` is on ([`super::settings_file`]); `None`: only
    /// eframe's store, if any.
    pub settings_file: Option<PathBuf>,
    /// Image size override (tests: keep extraction fast).
    pub size: Option<SizeChoice>,
    /// `--frame-report N`.
    pub frame_report: Option<usize>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            images: None,
            model: None,
            student: None,
            device: None,
            mode: None,
            layer: None,
            t: None,
            view: None,
            dataset: None,
            query: None,
            talk: false,
            cpu_overlay: false,
            renderer_note: None,
            export_dir: None,
            persist: true,
            settings_file: None,
            size: None,
            frame_report: None,
        }
    }
}

impl LaunchOptions {
    /// Checks the command line; errors name the bad value.
    pub fn from_args(a: &AppArgs) -> anyhow::Result<LaunchOptions> {
        let images = match a.images.as_slice() {
            [] => None,
            [one] => anyhow::bail!(
                "give two images (A and B), or none for the sample pair; got only {}",
                one.display()
            ),
            [x, y] => Some([ImageSource::Path(x.clone()), ImageSource::Path(y.clone())]),
            _ => anyhow::bail!("give at most two images"),
        };
        let view = match a.view.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
            None => None,
            Some(v) => Some(match v.as_str() {
                "correspondence" | "match" => View::Correspondence,
                "compare" => View::Compare,
                "pca" => View::Pca,
                "gallery" => View::Gallery,
                "sweep" => View::Sweep,
                "benchmark" => View::Benchmark,
                other => {
                    anyhow::bail!(
                        "unknown view {other:?}; use correspondence, compare, pca, gallery, sweep or benchmark"
                    )
                }
            }),
        };
        let query = match &a.query {
            None => None,
            Some(q) => {
                let (x, y) =
                    crate::util::parse_point(q).map_err(|e| anyhow::anyhow!("--query {q}: {e}"))?;
                anyhow::ensure!(
                    x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0,
                    "--query {q}: needs two non-negative numbers"
                );
                Some((x, y))
            }
        };
        if let Some(t) = a.t {
            anyhow::ensure!((0.0..=999.0).contains(&t), "--t {t} is outside 0–999");
        }
        anyhow::ensure!(
            matches!(a.renderer.as_str(), "auto" | "wgpu" | "glow"),
            "--renderer {}: use auto, wgpu or glow",
            a.renderer
        );
        let persist = !a.no_persist && a.frame_report.is_none();
        Ok(LaunchOptions {
            images,
            model: a.model.clone(),
            student: a.student.clone(),
            device: a.device.clone(),
            mode: a.mode.as_deref().map(str::parse).transpose()?,
            layer: a.layer.as_deref().map(str::parse).transpose()?,
            t: a.t,
            view,
            dataset: match &a.dataset {
                None => None,
                Some(d) => {
                    crate::worker::bench::BenchSource::parse(d, crate::eval::Split::Test)
                        .map_err(|e| anyhow::anyhow!("--dataset: {e}"))?;
                    Some(d.trim().to_string())
                }
            },
            query,
            talk: a.talk,
            cpu_overlay: false,
            renderer_note: None,
            export_dir: a.export_dir.clone(),
            persist,
            settings_file: persist.then(super::settings_file::settings_path).flatten(),
            size: None,
            frame_report: a.frame_report,
        })
    }
}

/// Parses `WxH`.
fn parse_size(s: &str) -> anyhow::Result<[f32; 2]> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow::anyhow!("--window-size {s}: expected WxH, e.g. 1280x800"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<f32>()
            .map_err(|_| anyhow::anyhow!("--window-size {s}: {v:?} is not a number"))
    };
    let (w, h) = (num(w)?, num(h)?);
    anyhow::ensure!(
        (320.0..=16384.0).contains(&w) && (240.0..=16384.0).contains(&h),
        "--window-size {s}: out of range"
    );
    Ok([w, h])
}

/// The app creator refused wgpu on a software rasterizer (`--renderer
/// auto`): glow draws faster there.
#[derive(Debug, thiserror::Error)]
#[error("wgpu would run on a software rasterizer ({0})")]
struct SoftwareAdapter(String);

/// Opens the window and runs the app until it is closed.
///
/// `--renderer auto` (the default): wgpu with the WGSL overlay on a GPU
/// adapter; when wgpu finds only a software rasterizer, or no adapter, the
/// glow renderer with CPU colormaps (several times faster on software
/// rendering), and the status area says so. Whichever renderer starts
/// first, the other is tried when it cannot start.
pub fn run(args: AppArgs) -> anyhow::Result<()> {
    let mut launch = LaunchOptions::from_args(&args)?;
    let size = match &args.window_size {
        Some(s) => parse_size(s)?,
        None => [1440.0, 900.0],
    };
    let persist = launch.persist;
    let settings_file = launch.settings_file.clone();
    let options = |renderer: eframe::Renderer| eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(TITLE)
            .with_app_id(super::settings_file::APP_ID)
            .with_inner_size(size)
            .with_min_inner_size([640.0, 420.0])
            .with_drag_and_drop(true)
            .with_fullscreen(args.talk),
        renderer,
        persist_window: persist,
        // The file the app checks itself (eframe's default path, named).
        persistence_path: settings_file.clone(),
        multisampling: 0,
        ..Default::default()
    };
    use eframe::Renderer::{Glow, Wgpu};
    // (renderer, status note, refuse a software adapter)
    let plan: Vec<(eframe::Renderer, Option<String>, bool)> = match args.renderer.as_str() {
        "glow" => vec![(
            Glow,
            Some("glow renderer (--renderer glow): heatmaps use the CPU colormaps".into()),
            false,
        )],
        "wgpu" => vec![(Wgpu, None, false), (Glow, None, false)],
        _ => vec![(Wgpu, None, true), (Glow, None, false), (Wgpu, None, false)],
    };
    let mut last_err = None;
    for (renderer, note, refuse_software) in plan {
        let mut l = launch.clone();
        if note.is_some() {
            l.renderer_note = note;
        }
        let creator: eframe::AppCreator<'_> = Box::new(move |cc| {
            if refuse_software
                && let Some(rs) = &cc.wgpu_render_state
                && rs.adapter.get_info().device_type == egui_wgpu::wgpu::DeviceType::Cpu
            {
                return Err(Box::new(SoftwareAdapter(rs.adapter.get_info().name)));
            }
            Ok(Box::new(CleanDiftApp::new(cc, l)))
        });
        match eframe::run_native(TITLE, options(renderer), creator) {
            Ok(()) => return Ok(()),
            Err(eframe::Error::AppCreation(e)) if e.downcast_ref::<SoftwareAdapter>().is_some() => {
                tracing::info!("{e}: using glow");
                launch.renderer_note = Some(format!(
                    "no GPU adapter for wgpu (only {}, a software rasterizer): glow with CPU colormaps draws faster here; --renderer wgpu uses the shader",
                    e.downcast_ref::<SoftwareAdapter>()
                        .map(|s| s.0.clone())
                        .unwrap_or_default()
                ));
            }
            Err(
                e @ (eframe::Error::Wgpu(_)
                | eframe::Error::Glutin(_)
                | eframe::Error::NoGlutinConfigs(..)
                | eframe::Error::OpenGL(_)),
            ) => {
                tracing::warn!("{renderer} could not start: {e}; trying the other renderer");
                launch.renderer_note = Some(if renderer == Wgpu {
                    format!(
                        "wgpu could not start ({e}): running on the glow renderer with CPU colormaps"
                    )
                } else {
                    format!("glow could not start ({e}): running on wgpu")
                });
                last_err = Some(e);
            }
            Err(e) => return Err(anyhow::anyhow!("cannot open the window: {e}")),
        }
    }
    Err(anyhow::anyhow!(
        "cannot open the window with any renderer: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    ))
}

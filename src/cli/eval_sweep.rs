//! `cleandift eval --sweep-t START:END:STEP`: PCK against the timestep, in
//! the form of the CleanDIFT paper's figure: noisy (DIFT) and naive clean
//! features at every t, the clean student once as a horizontal line, the
//! best noisy t marked.
//!
//! Every (mode, t) is one run of the folder (`super::eval_run`: its pairs
//! recorded as they finish, so a sweep resumes where it stopped and splits
//! into shards), each image's features are extracted once per mode and t
//! and reused across all the pairs it appears in, and a sweep's PCK at t is
//! exactly what `eval --mode noisy --t T` reports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::engine::Engines;
use super::eval::EvalArgs;
use super::eval_run::{Folder, report, shard_done, write_output};
use crate::eval::DiffusionSource;
use crate::eval::{Dataset, EvalOptions, EvalReport};
use crate::features::cache::FeatureCache;
use crate::features::extract::{DEFAULT_T, ExtractSettings, Mode};
use crate::features::source::SourceKind;
use crate::model::weights::Backbone;
use crate::plot::{Chart, HLine, Line, Marker, PALETTE};
use crate::style::mode_rgb;
use crate::util::parse_t_range;

/// Which PCK number the table and the plot show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Threshold {
    Bbox,
    Image,
}

/// A checked `--sweep-t` request.
pub struct SweepPlan {
    ts: Vec<u32>,
    out: PathBuf,
    alpha_index: usize,
    alpha: f64,
    threshold: Threshold,
}

/// What a sweep's outputs are made of besides its reports (kept in the
/// folder's manifest, so that `eval merge` writes them without the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub ts: Vec<u32>,
    pub alpha_index: usize,
    pub alpha: f64,
    pub threshold: Threshold,
    /// The backbone's description.
    pub backbone: String,
    /// The timestep clean mode runs at.
    pub student_t: f64,
    /// Whether a student was loaded (clean is naive without one).
    pub has_student: bool,
}

/// One evaluated point of the sweep.
#[derive(Debug, Clone, Serialize)]
struct Point {
    mode: Mode,
    /// The timestep (the student's for clean).
    t: f64,
    /// PCK (0–1) per point at the chosen alpha and threshold.
    pck: f64,
    report: EvalReport,
}

#[derive(Debug, Serialize)]
struct SweepReport {
    dataset: String,
    backbone: String,
    alpha: f64,
    threshold: Threshold,
    aggregate: &'static str,
    clean_label: String,
    best_noisy_t: f64,
    best_noisy_pck: f64,
    best_naive_t: f64,
    best_naive_pck: f64,
    clean_pck: f64,
    /// Pairs skipped (`--allow-missing`), in the clean run (every run
    /// reads the same pairs).
    pairs_skipped: usize,
    noisy: Vec<Point>,
    naive: Vec<Point>,
    clean: Point,
}

impl SweepPlan {
    /// Checks the sweep's options before any model is loaded.
    pub fn new(
        a: &EvalArgs,
        range: &str,
        kinds: &[SourceKind],
        alphas: &[f64],
    ) -> anyhow::Result<Self> {
        let ts = parse_t_range(range).with_context(|| format!("--sweep-t {range:?}"))?;
        if kinds != [SourceKind::Sd] {
            bail!(
                "--sweep-t sweeps the diffusion features: use --features sd (got {:?})",
                a.features.sources
            );
        }
        let Some(out) = a.out.clone() else {
            bail!(
                "--sweep-t needs --out DIR (the folder for sweep.csv, sweep.json, sweep.png, sweep.svg)"
            );
        };
        let Some(alpha_index) = alphas
            .iter()
            .position(|x| (x - a.sweep_alpha).abs() < 1e-12)
        else {
            bail!(
                "--sweep-alpha {} is not one of --alpha {:?}; add it to --alpha",
                a.sweep_alpha,
                alphas
            );
        };
        let threshold = match a.sweep_threshold.trim() {
            "bbox" => Threshold::Bbox,
            "image" => Threshold::Image,
            other => bail!("--sweep-threshold {other:?}: use bbox or image"),
        };
        if a.features.mode.trim() != "clean" || a.features.t != DEFAULT_T {
            eprintln!(
                "note: --sweep-t evaluates noisy and naive features at each t and clean once; --mode {} and --t {} are not used",
                a.features.mode, a.features.t
            );
        }
        Ok(Self {
            ts,
            out,
            alpha_index,
            alpha: a.sweep_alpha,
            threshold,
        })
    }

    /// The outputs' plan for backbone `bb`.
    pub fn spec(&self, bb: &Backbone) -> SweepSpec {
        SweepSpec {
            ts: self.ts.clone(),
            alpha_index: self.alpha_index,
            alpha: self.alpha,
            threshold: self.threshold,
            backbone: bb.describe(),
            student_t: student_t(bb),
            has_student: bb.student.is_some(),
        }
    }

    /// Runs every evaluation not finished yet in `folder`, then (unless the
    /// folder is a shard) prints the table and writes the files.
    pub fn run(
        &self,
        a: &EvalArgs,
        ds: &dyn Dataset,
        engines: &Engines,
        settings: &ExtractSettings,
        opts: &EvalOptions,
        folder: &Folder,
    ) -> anyhow::Result<()> {
        let bb = engines
            .sd
            .as_ref()
            .context("internal: the diffusion backbone was not loaded")?;
        let spec = self.spec(bb);
        let sharded = folder.manifest.shard.is_some();
        let mut reports = Vec::new();
        let mut counts = Vec::new();
        for (name, mode, t) in spec.runs() {
            let mut s = settings.clone();
            s.mode = mode;
            s.t = t;
            let mut src = DiffusionSource {
                bb,
                cache: FeatureCache::new(1 << 30, a.features.cache_dir.clone()),
                settings: s,
            };
            let records = folder
                .run_pairs(&name, ds, &mut src, opts, a.batch)
                .with_context(|| format!("evaluating {mode} features at t={t}"))?;
            if sharded {
                counts.push((name, records.entries.len()));
                continue;
            }
            let r = report(records)?;
            eprintln!("{mode} t={t}: PCK {:.2}", 100.0 * spec.pck(&r));
            reports.push(r);
        }
        if sharded {
            shard_done(folder, &counts);
            return Ok(());
        }
        spec.finish(&self.out, reports, a.json.as_deref())
    }
}

impl SweepSpec {
    /// The runs: `(name, mode, t)`, noisy and naive at each t, clean last.
    pub fn runs(&self) -> Vec<(String, Mode, f64)> {
        let mut v = Vec::new();
        for &t in &self.ts {
            for mode in [Mode::Noisy, Mode::Naive] {
                v.push((format!("{mode}-t{t}"), mode, f64::from(t)));
            }
        }
        v.push(("clean".into(), Mode::Clean, self.student_t));
        v
    }

    fn pck(&self, r: &EvalReport) -> f64 {
        r.pck
            .overall
            .at
            .get(self.alpha_index)
            .map_or(f64::NAN, |at| match self.threshold {
                Threshold::Bbox => at.bbox.per_point,
                Threshold::Image => at.image.per_point,
            })
    }

    /// The table and the files (`sweep.csv`, `sweep.json`, `sweep.png`,
    /// `sweep.svg` in `out`, `json` when given) from the reports of
    /// [`Self::runs`], in that order.
    pub fn finish(
        &self,
        out: &Path,
        reports: Vec<EvalReport>,
        json: Option<&Path>,
    ) -> anyhow::Result<()> {
        let runs = self.runs();
        if reports.len() != runs.len() {
            bail!(
                "internal: {} reports for {} sweep runs",
                reports.len(),
                runs.len()
            );
        }
        let mut noisy = Vec::new();
        let mut naive = Vec::new();
        let mut clean = None;
        for ((_, mode, t), report) in runs.into_iter().zip(reports) {
            let p = Point {
                mode,
                t,
                pck: self.pck(&report),
                report,
            };
            match mode {
                Mode::Noisy => noisy.push(p),
                Mode::Naive => naive.push(p),
                Mode::Clean => clean = Some(p),
            }
        }
        let clean = clean.context("internal: no clean run")?;
        let student_t = self.student_t;
        let clean_label = if self.has_student {
            format!("clean (student, t={})", trim(student_t))
        } else {
            format!("clean without a student = naive at t={}", trim(student_t))
        };
        // The highest PCK; on a tie the smallest t (the first reached).
        let best = |v: &[Point]| {
            v.iter()
                .filter(|p| p.pck.is_finite())
                .fold(None::<&Point>, |b, p| match b {
                    Some(b) if b.pck >= p.pck => Some(b),
                    _ => Some(p),
                })
                .map_or((f64::NAN, f64::NAN), |p| (p.t, p.pck))
        };
        let (best_noisy_t, best_noisy_pck) = best(&noisy);
        let (best_naive_t, best_naive_pck) = best(&naive);
        let report = SweepReport {
            dataset: clean.report.dataset.clone(),
            backbone: self.backbone.clone(),
            alpha: self.alpha,
            threshold: self.threshold,
            aggregate: "per point (correct keypoints / all keypoints)",
            clean_pck: clean.pck,
            clean_label,
            best_noisy_t,
            best_noisy_pck,
            best_naive_t,
            best_naive_pck,
            pairs_skipped: clean.report.pairs_skipped,
            noisy,
            naive,
            clean,
        };
        print!("{}", self.table(&report));
        std::fs::create_dir_all(out)
            .with_context(|| format!("creating the output folder {}", out.display()))?;
        let json_bytes = serde_json::to_vec_pretty(&report)?;
        write_output(&out.join("sweep.csv"), csv(&report).as_bytes())?;
        write_output(&out.join("sweep.json"), &json_bytes)?;
        if let Some(p) = json {
            write_output(p, &json_bytes)?;
        }
        let (svg, png) = crate::plot::save(&self.chart(&report), &out.join("sweep"), 1.0)
            .context("writing the sweep plot")?;
        println!("wrote {}\nwrote {}", png.display(), svg.display());
        Ok(())
    }

    fn metric(&self) -> String {
        let thr = match self.threshold {
            Threshold::Bbox => "bbox",
            Threshold::Image => "image",
        };
        format!("PCK@{} ({thr}, per point)", trim(self.alpha))
    }

    fn table(&self, r: &SweepReport) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} (%) vs t on {}{}",
            self.metric(),
            r.dataset,
            r.clean.report.skipped_note()
        );
        let _ = writeln!(out, "backbone: {}", r.backbone);
        let _ = writeln!(out, "{:>5} {:>9} {:>9}", "t", "noisy", "naive");
        for (n, v) in r.noisy.iter().zip(&r.naive) {
            let mark = if n.t == r.best_noisy_t {
                "  <- best noisy"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:>5} {:>9.2} {:>9.2}{mark}",
                trim(n.t),
                100.0 * n.pck,
                100.0 * v.pck
            );
        }
        let _ = writeln!(out, "{}: {:.2}", r.clean_label, 100.0 * r.clean_pck);
        let _ = writeln!(
            out,
            "best noisy: t={} {:.2}; best naive: t={} {:.2}",
            trim(r.best_noisy_t),
            100.0 * r.best_noisy_pck,
            trim(r.best_naive_t),
            100.0 * r.best_naive_pck
        );
        out
    }

    fn chart(&self, r: &SweepReport) -> Chart {
        let series = |v: &[Point]| -> (Vec<f64>, Vec<f64>) {
            (
                v.iter().map(|p| p.t).collect(),
                v.iter().map(|p| 100.0 * p.pck).collect(),
            )
        };
        let (nx, ny) = series(&r.noisy);
        let (vx, vy) = series(&r.naive);
        let mut markers = Vec::new();
        if r.best_noisy_pck.is_finite() {
            markers.push(Marker {
                label: format!(
                    "best noisy t={}: {:.2}",
                    trim(r.best_noisy_t),
                    100.0 * r.best_noisy_pck
                ),
                x: r.best_noisy_t,
                y: 100.0 * r.best_noisy_pck,
                color: PALETTE[3],
            });
        }
        Chart {
            title: format!("PCK@{} vs timestep", trim(self.alpha)),
            x_label: "t".into(),
            y_label: format!("{} (%)", self.metric()),
            lines: vec![
                Line {
                    label: "noisy (DIFT)".into(),
                    xs: nx,
                    ys: ny,
                    color: mode_rgb(Mode::Noisy),
                    ..Line::default()
                },
                Line {
                    label: "naive clean".into(),
                    xs: vx,
                    ys: vy,
                    color: mode_rgb(Mode::Naive),
                    dashed: true,
                    ..Line::default()
                },
            ],
            hlines: vec![HLine {
                label: if r.clean_label.starts_with("clean (student") {
                    "clean (student)".into()
                } else {
                    "clean (no student)".into()
                },
                y: 100.0 * r.clean_pck,
                color: mode_rgb(Mode::Clean),
                dashed: true,
            }],
            markers,
            ..Chart::default()
        }
        // Points coloured by t and the clean features' t, as the app's
        // sweep view draws its main t.
        .by_t(format!("clean's t={}", trim(r.clean.t)), r.clean.t)
    }
}

/// The timestep clean mode runs at: the student's learned one, or 261.
fn student_t(bb: &Backbone) -> f64 {
    bb.student
        .as_ref()
        .and_then(|s| s.timestep)
        .unwrap_or(DEFAULT_T)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

fn csv(r: &SweepReport) -> String {
    let mut out = String::from(
        "mode,t,alpha,bbox_per_point,bbox_per_image,image_per_point,image_per_image,pairs,keypoints\n",
    );
    for p in r.noisy.iter().chain(&r.naive).chain([&r.clean]) {
        for at in &p.report.pck.overall.at {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                p.mode,
                p.t,
                at.alpha,
                at.bbox.per_point,
                at.bbox.per_image,
                at.image.per_point,
                at.image.per_image,
                p.report.pairs_evaluated,
                p.report.keypoints
            );
        }
    }
    out
}

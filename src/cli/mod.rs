//! Headless commands: `info` (and the engine's commands).

mod analyze;
mod bench;
mod bench_cache;
mod bench_clean;
mod bench_conv;
mod bench_eval;
pub mod bench_parity;
mod checks;
pub mod engine;
mod eval;
mod eval_merge;
mod eval_run;
mod eval_sweep;
mod info;
mod match_cmd;
mod match_points;
mod protocol;
pub mod train;

use std::path::PathBuf;

use candle_core::DType;
use clap::{Args, Parser, Subcommand};

use crate::model::device::{DeviceChoice, default_dtype, parse_dtype};
use crate::model::weights::{Backbone, BackboneSpec, LoadEvent};

/// CleanDIFT Explorer: clean vs noisy diffusion features.
///
/// With no command it opens the app on the default image pair.
#[derive(Debug, Parser)]
#[command(name = "cleandift", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Where the weights come from, parameter counts, and every feature key's
    /// channels and stride at the preset's image size.
    Info(info::InfoArgs),
    /// Writes one feature tensor per layer (C, h, w) to a safetensors file.
    Extract(engine::ExtractArgs),
    /// Where a point of A goes in B: best match(es), scores, mutual-NN flag.
    Match(engine::MatchArgs),
    /// Joint PCA colours of A's and B's features as a picture.
    Pca(engine::PcaArgs),
    /// PCK@alpha on SPair-71k (`spair:DIR`) or a synthetic warp set (`warp:DIR`).
    Eval(eval::EvalArgs),
    /// Times the UNet / VAE on the real SD shapes (seeded random weights).
    Bench(bench::BenchArgs),
    /// Fine-tunes a CleanDIFT student on a folder of images.
    Train(train::TrainArgs),
    /// Analyses across timesteps: `analyze variance` (fraction of variance
    /// of the noisy features explained by the t=0 and t=999 features).
    Analyze(analyze::AnalyzeArgs),
}

/// `--model`, `--student`, `--device`, `--dtype`: shared by every command.
#[derive(Debug, Clone, Args)]
pub struct BackboneArgs {
    /// A preset (sd15, sd21, tiny-sd15, tiny-sd21), a local diffusers folder,
    /// an HF repo id, or a single-file checkpoint (.safetensors/.ckpt with
    /// LDM key names). tiny-* run offline with seeded random weights
    /// [default: sd21; `train --resume`: the run's base].
    #[arg(long)]
    pub model: Option<String>,
    /// CleanDIFT student: FILE or REPO:FILE; `none` for no student. Default:
    /// CompVis/cleandift's for sd15/sd21, none otherwise.
    #[arg(long)]
    pub student: Option<String>,
    /// auto, cpu, cuda or cuda:N (auto = CUDA when compiled in and present).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32, f16 or bf16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Single-file checkpoints only: a diffusers folder whose unet/, vae/
    /// and text_encoder/ config.json describe the file (for layouts no
    /// preset has).
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Single-file checkpoints only: a folder with the CLIP tokenizer's
    /// vocab.json and merges.txt [default: the sd15/sd21 repo's, from the HF
    /// cache].
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
}

/// `--model` when none is given.
pub const DEFAULT_MODEL: &str = "sd21";

impl BackboneArgs {
    /// `--model`, or [`DEFAULT_MODEL`].
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL)
    }

    /// Resolves device and dtype into a loader spec.
    pub fn spec(&self) -> anyhow::Result<BackboneSpec> {
        let device = self.device.parse::<DeviceChoice>()?.open()?;
        let dtype: DType = match &self.dtype {
            Some(d) => parse_dtype(d)?,
            None => default_dtype(&device),
        };
        let mut spec = BackboneSpec::new(self.model(), device, dtype);
        spec.student = self.student.clone();
        spec.config_dir = self.config.clone();
        spec.tokenizer_dir = self.tokenizer.clone();
        Ok(spec)
    }

    /// Loads the backbone, with a download/loading progress bar on a terminal.
    pub fn load(&self) -> anyhow::Result<Backbone> {
        let spec = self.spec()?;
        let bar = progress::Bar::new();
        let bb = Backbone::load(&spec, &|ev| match ev {
            LoadEvent::Downloading { file, done, total } => bar.bytes(&file, done, total),
            LoadEvent::Loading { part } => bar.message(&format!("loading {part}")),
        })?;
        bar.finish();
        Ok(bb)
    }
}

/// Runs a parsed command.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Info(a) => info::run(&a),
        Command::Extract(a) => engine::run_extract(&a),
        Command::Match(a) => engine::run_match(&a),
        Command::Pca(a) => engine::run_pca(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Analyze(a) => analyze::run(&a),
    }
}

pub mod progress {
    //! A progress bar on a terminal; plain progress lines when stderr is a
    //! file or a pipe ([`Lines`]: the first report, then on a new stage at
    //! most every [`STAGE_GAP_SECS`] s and within a stage every
    //! [`PERIOD_SECS`] s), so long work shows that it moves in logs too.

    use std::io::IsTerminal;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use indicatif::{ProgressBar, ProgressStyle};

    /// Least time between two plain lines for a new stage.
    pub const STAGE_GAP_SECS: u64 = 1;
    /// Least time between two plain lines within a stage.
    pub const PERIOD_SECS: u64 = 5;

    pub struct Bar {
        tty: Option<ProgressBar>,
        lines: Option<Mutex<Lines>>,
    }

    impl Bar {
        pub fn new() -> Self {
            if std::io::stderr().is_terminal() {
                let pb = ProgressBar::new(0);
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                Bar {
                    tty: Some(pb),
                    lines: None,
                }
            } else {
                Bar {
                    tty: None,
                    lines: Some(Mutex::new(Lines::new(Instant::now()))),
                }
            }
        }

        /// A plain line for `stage` (`text` in full), when [`Lines`] says so.
        fn line(&self, stage: &str, text: &str) {
            if let Some(lines) = &self.lines
                && let Ok(mut l) = lines.lock()
                && let Some(line) = l.report(Instant::now(), stage, text)
            {
                eprintln!("{line}");
            }
        }

        /// Counts `done` of `total` steps under `msg`.
        pub fn steps(&self, msg: &str, done: u64, total: u64) {
            if let Some(pb) = &self.tty {
                pb.set_length(total);
                pb.set_position(done);
                pb.set_message(msg.to_string());
            }
            self.line(msg, &format!("{msg} {done}/{total}"));
        }

        /// Counts `done` of `total` steps of `stage` with a `note` (a rate,
        /// an ETA) that changes from report to report.
        pub fn steps_note(&self, stage: &str, done: u64, total: u64, note: &str) {
            if let Some(pb) = &self.tty {
                pb.set_length(total);
                pb.set_position(done);
                pb.set_message(format!("{stage} {note}"));
            }
            self.line(stage, &format!("{stage} {done}/{total} {note}"));
        }

        pub fn bytes(&self, file: &str, done: u64, total: u64) {
            if let Some(pb) = &self.tty {
                pb.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                pb.set_length(total);
                pb.set_position(done);
                pb.set_message(format!("downloading {file}"));
            }
            let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
            self.line(
                file,
                &format!("downloading {file} {:.1}/{:.1} MiB", mib(done), mib(total)),
            );
        }

        pub fn message(&self, msg: &str) {
            if let Some(pb) = &self.tty {
                pb.set_message(msg.to_string());
                pb.tick();
            }
            self.line(msg, msg);
        }

        pub fn finish(&self) {
            if let Some(pb) = &self.tty {
                pb.finish_and_clear();
            }
        }
    }

    impl Default for Bar {
        fn default() -> Self {
            Self::new()
        }
    }

    /// When a plain progress line is due: the first report; a report of a
    /// new stage once [`STAGE_GAP_SECS`] passed since the last line; any
    /// report once [`PERIOD_SECS`] passed. Lines carry the seconds since
    /// the start.
    #[derive(Debug)]
    pub struct Lines {
        start: Instant,
        last: Option<(Instant, String)>,
    }

    impl Lines {
        pub fn new(start: Instant) -> Self {
            Lines { start, last: None }
        }

        /// The line to print for a report of `stage` (`text`) at `now`, if
        /// one is due.
        pub fn report(&mut self, now: Instant, stage: &str, text: &str) -> Option<String> {
            let due = match &self.last {
                None => true,
                Some((at, last_stage)) => {
                    let since = now.saturating_duration_since(*at);
                    since >= Duration::from_secs(PERIOD_SECS)
                        || (last_stage != stage && since >= Duration::from_secs(STAGE_GAP_SECS))
                }
            };
            if !due {
                return None;
            }
            self.last = Some((now, stage.to_string()));
            let secs = now.saturating_duration_since(self.start).as_secs();
            Some(format!("[{secs:>4} s] {text}"))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// First report at once; the same stage again only after the
        /// period; a new stage after the gap; the seconds since the start.
        #[test]
        fn plain_lines_are_periodic_and_per_stage() {
            let t0 = Instant::now();
            let at = |s: u64| t0 + Duration::from_millis(s);
            let mut l = Lines::new(t0);
            assert_eq!(
                l.report(at(0), "a: UNet", "a: UNet 0/64").as_deref(),
                Some("[   0 s] a: UNet 0/64")
            );
            assert_eq!(l.report(at(1_500), "a: UNet", "a: UNet 4/64"), None);
            assert_eq!(
                l.report(at(5_000), "a: UNet", "a: UNet 8/64").as_deref(),
                Some("[   5 s] a: UNet 8/64")
            );
            // A new stage within the gap waits; after it, it is printed.
            assert_eq!(l.report(at(5_400), "a: text", "a: text"), None);
            assert_eq!(
                l.report(at(6_000), "b: encoding", "b: encoding").as_deref(),
                Some("[   6 s] b: encoding")
            );
            assert_eq!(
                l.report(at(71_000), "b: encoding", "b: encoding")
                    .as_deref(),
                Some("[  71 s] b: encoding")
            );
        }
    }
}

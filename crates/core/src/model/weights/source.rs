//! Where a pipeline's files are: a local diffusers folder or an HF repo (the
//! cache, else a download unless `HF_HUB_OFFLINE`), each part in the best
//! layout available (see [`super::layout`]).

use super::*;

/// The files of a pipeline, wherever they are.
pub(super) struct PipelineFiles {
    pub(super) root: PathBuf,
    pub(super) unet: PartFile,
    pub(super) vae: PartFile,
    pub(super) text: PartFile,
    pub(super) vocab: PathBuf,
    pub(super) merges: PathBuf,
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
    pub(super) fn in_dir(dir: &Path, prefer_variant: bool) -> Result<Self> {
        let need = |rel: &str, hint: &str| -> Result<PathBuf> {
            let p = dir.join(rel);
            file_kind::ensure_regular(&p)?;
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
    pub(super) fn from_hub(repo: &str, prefer_variant: bool, progress: ProgressFn) -> Result<Self> {
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
pub(super) fn hub_part(
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

pub(super) fn offline() -> bool {
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

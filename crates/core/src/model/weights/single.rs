//! Single-file checkpoints (LDM key names, as A1111 and ComfyUI keep them):
//! recognised from their tensor names, converted to diffusers names by
//! [`crate::model::single_file`], configured from the matching preset or
//! `--config DIR`, and built with the same strict builders as folders.

use super::*;

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
    super::file_kind::ensure_regular(path)?;
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
        let infos = super::fit::pickle_tensor_infos(path)?;
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
            super::file_kind::ensure_regular(&p)?;
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
        let pad =
            crate::model::config::read_pad_token(&base)?.unwrap_or_else(|| cfg.pad_token.clone());
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
    if cfg.tiny && cfg.text.vocab_size == crate::model::text::TINY_VOCAB_SIZE {
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
    let mut identity = PendingIdentity::stat(&[("single file", path)])?;
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
    if spec.config_dir.is_some() {
        // --config's sizes against the file's tensors, before building.
        let shown = path.display();
        fit::check_unet(
            &cfg.unet,
            &fit::shapes_of(&c.unet),
            &format!("{shown} ({}*)", single_file::UNET_PREFIX),
        )?;
        fit::check_vae(
            &cfg.vae,
            &fit::shapes_of(&c.vae),
            &format!("{shown} ({}*)", single_file::VAE_PREFIX),
        )?;
        fit::check_text(
            &cfg.text,
            &fit::shapes_of(&c.text_encoder),
            &shown.to_string(),
        )?;
    }
    let (tokenizer, tokenizer_origin) = single_file_tokenizer(&cfg, spec, progress)?;
    for f in TOKENIZER_FILES {
        let p = Path::new(&tokenizer_origin).join(f);
        if p.is_file() {
            identity.add("tokenizer", &p)?;
        }
    }
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
    if format == Format::Pickle {
        notes.extend(
            pickle_scan::dropped_entries(path)
                .into_iter()
                .map(|d| d.note(path)),
        );
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
            identity,
        },
        false,
        report,
        progress,
    )
}

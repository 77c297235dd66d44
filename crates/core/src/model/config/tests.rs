//! Unit tests of the presets and config readers.

use super::*;

#[test]
fn presets_have_consistent_shapes() {
    for name in PRESETS {
        let cfg = ModelConfig::preset(name).expect("preset exists");
        let u = &cfg.unet;
        for (i, &c) in u.block_out_channels.iter().enumerate() {
            assert_eq!(c % u.norm_num_groups, 0, "{name} block {i}");
            assert_eq!(c % u.attention_heads[i], 0, "{name} heads {i}");
        }
        assert_eq!(cfg.text.hidden_size, u.cross_attention_dim, "{name}");
    }
    assert_eq!(
        ModelConfig::preset("sd21").map(|c| c.image_size()),
        Some(768)
    );
    assert_eq!(
        ModelConfig::preset("sd15").map(|c| c.image_size()),
        Some(512)
    );
    assert!(ModelConfig::preset("sdxl").is_none());
}

#[test]
fn reads_sd21_style_unet_json() {
    let v: Value = serde_json::json!({
        "sample_size": 96, "in_channels": 4, "out_channels": 4,
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
        "use_linear_projection": true, "upcast_attention": true, "norm_num_groups": 32
    });
    let cfg = UNetConfig::from_diffusers_json(&v).expect("valid config");
    let preset = ModelConfig::preset("sd21").expect("preset").unet;
    assert_eq!(cfg, preset);
}

/// Every field is judged by exactly one list.
#[test]
fn field_lists_are_disjoint() {
    for rules in [&UNET_FIELDS, &VAE_FIELDS, &TEXT_FIELDS] {
        let mut all: Vec<&str> = rules.honoured.to_vec();
        all.extend(rules.ignored.iter().map(|(f, _)| *f));
        all.extend(rules.default_only.iter().map(|(f, _)| *f));
        all.extend(rules.not_yet.iter().map(|(f, _)| *f));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "{} lists overlap", rules.part);
    }
}

/// The configs of the real SD 2.1 and SD 1.5 repos (diffusers 0.10,
/// transformers 4.25) pass with no warnings.
#[test]
fn real_sd_configs_pass_without_warnings() {
    let unet: Value = serde_json::json!({
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.10.0.dev0",
        "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true,
        "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
        "norm_eps": 1e-05, "norm_num_groups": 32, "num_class_embeds": null,
        "only_cross_attention": false, "out_channels": 4, "sample_size": 96,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "upcast_attention": true, "use_linear_projection": true
    });
    let (cfg, notes) = UNetConfig::from_diffusers_json_notes(&unet).expect("sd21 unet");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(cfg, ModelConfig::preset("sd21").expect("preset").unet);
    let vae: Value = serde_json::json!({
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.10.0.dev0", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
        "out_channels": 3, "sample_size": 768,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    });
    let (_, notes) = VaeConfig::from_diffusers_json_notes(&vae).expect("sd21 vae");
    assert!(notes.is_empty(), "{notes:?}");
    let text: Value = serde_json::json!({
        "_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
        "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
        "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77, "model_type": "clip_text_model",
        "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
        "projection_dim": 768, "torch_dtype": "float32", "transformers_version": "4.22.0.dev0",
        "vocab_size": 49408
    });
    let (cfg, notes) = TextConfig::from_transformers_json_notes(&text).expect("sd15 text");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(cfg, ModelConfig::preset("sd15").expect("preset").text);
}

#[test]
fn refuses_unsupported_blocks_by_name() {
    let v: Value = serde_json::json!({
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "SimpleCrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    });
    let err = UNetConfig::from_diffusers_json(&v)
        .expect_err("must refuse")
        .to_string();
    assert!(err.contains("SimpleCrossAttnUpBlock2D"), "{err}");
}

//! Unit tests of the detection, the renaming plan and its application.

use super::*;

fn shapes(list: &[(&str, &[usize])]) -> BTreeMap<String, Vec<usize>> {
    list.iter()
        .map(|(k, s)| (k.to_string(), s.to_vec()))
        .collect()
}

fn minimal(text: &[(&str, &[usize])], ctx: usize, proj: &[usize]) -> BTreeMap<String, Vec<usize>> {
    let mut v: Vec<(&str, &[usize])> = vec![
        (
            "model.diffusion_model.input_blocks.0.0.weight",
            &[4, 4, 3, 3],
        ),
        (
            "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
            &[4],
        ),
        (
            "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
            &[4, 4, 3, 3],
        ),
        (
            "model.diffusion_model.input_blocks.1.1.proj_in.weight",
            proj,
        ),
        ("first_stage_model.encoder.conv_in.weight", &[4, 3, 3, 3]),
    ];
    v.extend_from_slice(text);
    let mut s = shapes(&v);
    s.insert(
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight".into(),
        vec![4, ctx],
    );
    s
}

#[test]
fn detects_sd1_and_sd2() {
    let sd1 = minimal(
        &[
            (
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                &[10, 8],
            ),
            (
                "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
                &[16, 8],
            ),
        ],
        8,
        &[4, 4, 1, 1],
    );
    let k = detect(&sd1).unwrap();
    assert_eq!(k.family, SdFamily::Sd1);
    assert_eq!(
        (k.context_dim, k.linear_proj_in, k.text_layers_used),
        (8, false, 1)
    );
    let sd2 = minimal(
        &[
            ("cond_stage_model.model.token_embedding.weight", &[10, 12]),
            (
                "cond_stage_model.model.transformer.resblocks.0.ln_1.weight",
                &[12],
            ),
            (
                "cond_stage_model.model.transformer.resblocks.1.ln_1.weight",
                &[12],
            ),
        ],
        12,
        &[4, 4],
    );
    let k = detect(&sd2).unwrap();
    assert_eq!(k.family, SdFamily::Sd2);
    assert_eq!(
        (k.linear_proj_in, k.text_layers_in_file, k.text_layers_used),
        (true, 2, 1)
    );
}

#[test]
fn sd1_text_names_without_text_model_level() {
    let s = minimal(
        &[
            (
                "cond_stage_model.transformer.embeddings.token_embedding.weight",
                &[10, 8],
            ),
            (
                "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight",
                &[16, 8],
            ),
            ("cond_stage_model.transformer.final_layer_norm.weight", &[8]),
        ],
        8,
        &[4, 4, 1, 1],
    );
    let p = plan(&s, Options::default()).unwrap();
    assert_eq!(p.kind.text_layers_used, 1);
    assert_eq!(p.unet_layout.block_out_channels, [4]);
    assert_eq!(p.unet_layout.down_attention, [true]);
    let names: Vec<&str> = p.text_encoder.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "text_model.embeddings.token_embedding.weight",
            "text_model.encoder.layers.0.mlp.fc1.weight",
            "text_model.final_layer_norm.weight",
        ]
    );
}

#[test]
fn mismatched_context_width_names_the_key() {
    let s = minimal(
        &[(
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            &[10, 8],
        )],
        16,
        &[4, 4, 1, 1],
    );
    let e = detect(&s).unwrap_err().to_string();
    assert!(
        e.contains("attn2.to_k.weight") && e.contains("16") && e.contains('8'),
        "{e}"
    );
}

#[test]
fn not_a_single_file() {
    let s = shapes(&[("conv_in.weight", &[4, 4, 3, 3])]);
    assert!(matches!(detect(&s), Err(SingleFileError::NoUnet)));
}

#[test]
fn unknown_unet_tensor_is_named() {
    let mut s = minimal(
        &[
            (
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                &[10, 8],
            ),
            (
                "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
                &[16, 8],
            ),
        ],
        8,
        &[4, 4, 1, 1],
    );
    s.insert(
        "model.diffusion_model.input_blocks.1.0.bogus.weight".into(),
        vec![1],
    );
    let e = plan(&s, Options::default()).unwrap_err().to_string();
    assert!(e.contains("input_blocks.1.0.bogus.weight"), "{e}");
}

#[test]
fn ema_key_is_flattened_like_diffusers() {
    assert_eq!(
        ema_key("model.diffusion_model.input_blocks.0.0.weight"),
        "model_ema.diffusion_modelinput_blocks00weight"
    );
}

#[test]
fn qkv_split_and_conv1x1() {
    use candle_core::{DType, Device};
    let dev = Device::Cpu;
    let qkv = Tensor::arange(0f32, 6.0, &dev)
        .unwrap()
        .reshape((6, 1))
        .unwrap();
    let conv = Tensor::ones((2, 3, 1, 1), DType::F32, &dev).unwrap();
    let t: HashMap<String, Tensor> = [("a".to_string(), qkv), ("b".to_string(), conv)]
        .into_iter()
        .collect();
    let mut part = BTreeMap::new();
    part.insert(
        "k".to_string(),
        Source::SplitQkv {
            key: "a".into(),
            index: 1,
        },
    );
    part.insert("lin".to_string(), Source::Conv1x1ToLinear("b".into()));
    let out = apply(&part, &t).unwrap();
    assert_eq!(
        out["k"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![2.0, 3.0]
    );
    assert_eq!(out["lin"].dims(), &[2, 3]);
}

"""SD2.1-shaped random weights and their f32 / bf16 reference outputs (issue 13, bf16 accuracy).

Pinned versions (the figures in docs/NUMERICS.md §9 were made with exactly these):
  torch==2.15.0  diffusers==0.42.1  transformers==5.24.0  (+ safetensors, numpy, pillow)

Usage (from the repository root, with the pinned venv; never in CI, the output is NOT committed):
  refenv/bin/python scripts/peer/sd21_random_reference.py OUT_DIR [--res 512] [--seed 2121]

Builds a diffusers UNet2DConditionModel and AutoencoderKL with Stable Diffusion 2.1's real
configs (written below) and seeded random weights, re-initialises every constant parameter
(norm scales 1, biases 0) like tests/fixtures/make_reference.py so that a port that forgets
one is caught, rounds every weight to float16 and writes OUT_DIR as a diffusers folder:
  OUT_DIR/{model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/}
(unet/vae in float16 safetensors; the text encoder is a 1-layer CLIP with SD2.1's width 1024
and the tiny fixture's tokenizer, only there so that the folder loads as a pipeline), and
  OUT_DIR/reference.safetensors    "unet.latent" (1,4,R/8,R/8), "unet.t" [261], "unet.context"
                                   (1,77,1024), "unet.tap.<k>", "unet.out", "vae.image"
                                   (1,3,R,R: assets/astronaut.png), "vae.mean" — float32 forward
  OUT_DIR/reference16.safetensors  "bf16.unet.tap.<k>", "bf16.unet.out", "bf16.vae.mean" —
                                   diffusers with weights AND inputs cast to bfloat16 (stored f32)
with the same tap hooks as tests/fixtures/make_reference.py and reference16.py, so the folder
is read exactly like a fixture by
  cleandift bench parity --dir OUT_DIR --dtype bf16
Memory: about 8 GB peak at 512 px (the f32 UNet is 3.5 GB); run it before, not beside, cargo.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import diffusers
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
from make_reference import perturb_constant_params, round_to_fp16, save_fp16  # noqa: E402
from reference16 import TAP_KEYS, unet_run  # noqa: E402

TORCH_VERSION = "2.15.0"
DIFFUSERS_VERSION = "0.42.1"
TRANSFORMERS_VERSION = "5.24.0"

# stabilityai/stable-diffusion-2-1 unet/config.json (the fields that shape the network).
SD21_UNET = dict(
    sample_size=96,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    dual_cross_attention=False,
    use_linear_projection=True,
    only_cross_attention=False,
    upcast_attention=True,
    num_class_embeds=None,
)
# stabilityai/stable-diffusion-2-1 vae/config.json.
SD21_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
    scaling_factor=0.18215,
)


def image(res):
    from PIL import Image

    img = Image.open(os.path.join(ROOT, "assets", "astronaut.png")).convert("RGB").resize((res, res), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    return x.contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--seed", type=int, default=2121)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    assert torch.__version__.split("+")[0] == TORCH_VERSION, torch.__version__
    assert diffusers.__version__ == DIFFUSERS_VERSION, diffusers.__version__
    assert transformers.__version__ == TRANSFORMERS_VERSION, transformers.__version__
    assert a.res % 64 == 0, "--res must be a multiple of 64"
    torch.set_num_threads(a.threads)
    out = a.out_dir
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    report = {}
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    # Pipeline furniture copied from the tiny SD2.1 fixture (tokenizer, scheduler, model_index).
    fixture = os.path.join(ROOT, "tests", "fixtures", "tiny-sd21")
    for sub in ("tokenizer", "scheduler"):
        shutil.copytree(os.path.join(fixture, sub), os.path.join(out, sub), dirs_exist_ok=True)
    shutil.copy(os.path.join(fixture, "model_index.json"), os.path.join(out, "model_index.json"))
    te_cfg = json.load(open(os.path.join(fixture, "text_encoder", "config.json")))
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=te_cfg["vocab_size"],
            max_position_embeddings=77,
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=1,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            bos_token_id=te_cfg["bos_token_id"],
            eos_token_id=te_cfg["eos_token_id"],
            pad_token_id=te_cfg["pad_token_id"],
        )
    ).eval()
    round_to_fp16(te)
    save_fp16(te, os.path.join(out, "text_encoder"))
    del te

    ref = {}
    res16 = {}
    # ---------------- UNet ----------------
    unet = UNet2DConditionModel(**SD21_UNET).eval()
    perturb_constant_params(unet, gen, report.setdefault("unet", {}))
    round_to_fp16(unet)
    save_fp16(unet, os.path.join(out, "unet"))
    log(f"unet built and saved ({sum(p.numel() for p in unet.parameters()) / 1e6:.0f} M params)")
    lat = a.res // 8
    latent = torch.randn(1, 4, lat, lat, generator=gen)
    t = torch.tensor([261.0])
    context = torch.randn(1, 77, 1024, generator=gen)
    ref["unet.latent"], ref["unet.t"], ref["unet.context"] = latent, t, context
    taps, o = unet_run(unet, latent, t, context)
    for k in TAP_KEYS:
        ref[f"unet.tap.{k}"] = taps[k]
    ref["unet.out"] = o
    log("unet f32 forward done")
    unet.to(torch.bfloat16)
    taps, o = unet_run(unet, latent.to(torch.bfloat16), t, context.to(torch.bfloat16))
    for k in TAP_KEYS:
        res16[f"bf16.unet.tap.{k}"] = taps[k]
    res16["bf16.unet.out"] = o
    log("unet bf16 forward done")
    del unet, taps

    # ---------------- VAE ----------------
    vae = AutoencoderKL(**SD21_VAE).eval()
    perturb_constant_params(vae, gen, report.setdefault("vae", {}))
    round_to_fp16(vae)
    save_fp16(vae, os.path.join(out, "vae"))
    img = image(a.res)
    ref["vae.image"] = img
    with torch.no_grad():
        ref["vae.mean"] = vae.encode(img).latent_dist.mean.float()
        log("vae f32 encode done")
        vae.to(torch.bfloat16)
        res16["bf16.vae.mean"] = vae.encode(img.to(torch.bfloat16)).latent_dist.mean.float()
        log("vae bf16 encode done")

    meta = {
        "generator": f"scripts/peer/sd21_random_reference.py res={a.res} seed={a.seed} torch={torch.__version__} "
        f"diffusers={diffusers.__version__} transformers={transformers.__version__}"
    }
    for d in (ref, res16):
        for k, v in d.items():
            if v.is_floating_point():
                assert v.dtype == torch.float32, k
                assert torch.isfinite(v).all(), f"non-finite values in {k}"
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out, "reference.safetensors"), metadata=meta)
    save_file({k: v.contiguous() for k, v in res16.items()}, os.path.join(out, "reference16.safetensors"), metadata=meta)
    for part, rep in report.items():
        for kind, names in rep.items():
            log(f"re-initialised {len(names)} constant ({kind}) params in {part}")
    # diffusers bf16 against its own f32, per key (the figures `bench parity --dir` prints too).
    print(f"{'key':10s} {'max|ref|':>10s} {'rel max err':>12s} {'cos/pos':>10s}")
    for k in [f"unet.tap.{k}" for k in TAP_KEYS] + ["unet.out", "vae.mean"]:
        r, b = ref[k].double(), res16[f"bf16.{k}"].double()
        scale = r.abs().max().item()
        rel = (b - r).abs().max().item() / max(scale, 1e-12)
        cos = torch.nn.functional.cosine_similarity(b, r, dim=1).mean().item()
        print(f"{k:14s} {scale:10.4g} {rel:12.3e} {cos:10.6f}")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Times diffusers on the passes `cleandift bench` times, for the ratio.

Usage: diffusers_bench.py PASS RES BATCH DTYPE DEVICE [--reps N] [--config DIR]

PASS   unet-us6 (UNet stopped after up_blocks[1], DIFT's up_ft_index=1 = our
       us6) | unet-full | vae (encoder, posterior sample)
RES    image side in pixels; a comma-separated list times each
BATCH  batch size; a comma-separated list times each
DTYPE  f32 | bf16 | f16
DEVICE cpu | cuda | cuda:N
--config DIR  a diffusers model folder whose unet/ and vae/ config.json give
       the shapes (e.g. tests/fixtures/tiny-sd21); default: SD2.1's shapes.

Weights are random (seeded); the model is built once and every RES x BATCH
timed with one warm-up and the best of --reps. One line per shape:
    peer PASS RES BATCH DTYPE DEVICE SECONDS
"""
import argparse
import json
import os
import sys
import time

import torch

SD21_UNET = {
    "sample_size": 96,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
    "upcast_attention": True,
}
SD21_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


class EarlyExit(Exception):
    """Raised by the hook on up_blocks[1] to stop the UNet there."""


def ints(text):
    return [int(v) for v in text.split(",") if v]


def load_config(folder, part, default):
    if folder is None:
        return dict(default)
    with open(os.path.join(folder, part, "config.json")) as f:
        cfg = json.load(f)
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["unet-us6", "unet-full", "vae"])
    ap.add_argument("res", type=ints)
    ap.add_argument("batch", type=ints)
    ap.add_argument("dtype", choices=sorted(DTYPES))
    ap.add_argument("device")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--config")
    a = ap.parse_args()
    from diffusers import AutoencoderKL, UNet2DConditionModel

    dtype = DTYPES[a.dtype]
    torch.manual_seed(0)
    on_gpu = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    if a.what == "vae":
        net = AutoencoderKL.from_config(load_config(a.config, "vae", SD21_VAE))
    else:
        net = UNet2DConditionModel.from_config(load_config(a.config, "unet", SD21_UNET))
    net = net.eval().to(a.device, dtype)
    if a.what == "unet-us6":
        def stop(_module, _inputs, _output):
            raise EarlyExit()
        net.up_blocks[1].register_forward_hook(stop)

    for res in a.res:
        for batch in a.batch:
            if a.what == "vae":
                x = torch.randn(batch, 3, res, res, device=a.device, dtype=dtype)
                step = lambda: net.encode(x).latent_dist.sample()
            else:
                cfg = net.config
                lat = torch.randn(batch, cfg.in_channels, res // 8, res // 8, device=a.device, dtype=dtype)
                ctx = torch.randn(batch, 77, cfg.cross_attention_dim, device=a.device, dtype=dtype)

                def step():
                    try:
                        net(lat, 261, ctx)
                    except EarlyExit:
                        pass
            best = float("inf")
            with torch.no_grad():
                for i in range(a.reps + 1):
                    sync()
                    t0 = time.perf_counter()
                    step()
                    sync()
                    if i > 0:  # the first run is the warm-up
                        best = min(best, time.perf_counter() - t0)
            print(f"peer {a.what} {res} {batch} {a.dtype} {a.device} {best:.6f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Times transformers' Dinov2Model on the pass `cleandift bench dino` times.

Usage: dinov2_bench.py [--size base] [--registers] [--res 840] [--batch 1]
                       [--dtype f32] [--device cpu] [--reps 2]

--size       small | base | large | giant (the facebook/dinov2-* shapes:
             hidden 384/768/1024/1536, 12/12/24/40 blocks, 6/12/16/24 heads,
             SwiGLU MLP for giant); weights are random (seeded), no download.
--registers  Dinov2WithRegistersModel (4 register tokens), as
             facebook/dinov2-with-registers-*.
--res        image side in pixels (a multiple of 14; 840 = sd-dino's input);
             a comma-separated list times each. The config keeps
             image_size = 518, so the position embeddings are interpolated
             (bicubic) to the input grid, as with the published checkpoints.
--batch      batch size; a comma-separated list times each.
--dtype      f32 | bf16 | f16.
--device     cpu | cuda | cuda:N.
--reps       timed runs after one warm-up; the best is printed.

The whole forward (embeddings, every block, the final layernorm) runs under
torch.no_grad(). One line per shape:
    peer dinov2-SIZE RES BATCH DTYPE DEVICE SECONDS PEAK_MIB
PEAK_MIB is the process's peak resident memory during the timed runs (the
high-water mark is reset first through /proc/self/clear_refs, so it counts
the weights, the input and the pass's working memory; Linux only, else
"n/a"); on CUDA it is torch.cuda.max_memory_allocated.

Written for and measured with torch 2.15.0, transformers 5.24.0 (the
project's reference venv).
"""
import argparse
import sys
import time

import torch

SIZES = {
    # hidden, blocks, heads, swiglu
    "small": (384, 12, 6, False),
    "base": (768, 12, 12, False),
    "large": (1024, 24, 16, False),
    "giant": (1536, 40, 24, True),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def ints(text):
    return [int(v) for v in text.split(",") if v]


def reset_peak_rss():
    """Resets the kernel's resident-set high-water mark (VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def build(size, registers):
    hidden, blocks, heads, swiglu = SIZES[size]
    common = dict(
        hidden_size=hidden,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
        use_swiglu_ffn=swiglu,
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    if registers:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        cfg = Dinov2WithRegistersConfig(num_register_tokens=4, **common)
        return Dinov2WithRegistersModel(cfg)
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(**common))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--registers", action="store_true")
    ap.add_argument("--res", type=ints, default=[840])
    ap.add_argument("--batch", type=ints, default=[1])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    for r in a.res:
        if r <= 0 or r % 14:
            ap.error(f"--res {r} must be a positive multiple of 14")
    dtype = DTYPES[a.dtype]
    torch.manual_seed(0)
    on_gpu = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    net = build(a.size, a.registers).eval().to(a.device, dtype)
    name = f"dinov2{'-reg' if a.registers else ''}-{a.size}"
    for res in a.res:
        for batch in a.batch:
            x = torch.randn(batch, 3, res, res, device=a.device, dtype=dtype)
            best = float("inf")
            with torch.no_grad():
                net(pixel_values=x)  # warm-up
                sync()
                if on_gpu:
                    torch.cuda.reset_peak_memory_stats()
                reset_ok = reset_peak_rss()
                for _ in range(a.reps):
                    sync()
                    t0 = time.perf_counter()
                    net(pixel_values=x)
                    sync()
                    best = min(best, time.perf_counter() - t0)
            if on_gpu:
                peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"
            else:
                p = peak_rss_mib() if reset_ok else None
                peak = "n/a" if p is None else f"{p:.0f}"
            print(f"peer {name} {res} {batch} {a.dtype} {a.device} {best:.6f} {peak}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

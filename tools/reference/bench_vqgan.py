#!/usr/bin/env python3
"""PyTorch reference timing for `xprompt vq bench` (issue 3): encode/decode seconds per image
of taming's VQModel with random weights, same presets and image size as the Rust bench.

Run (same env as vqgan_fixtures.py):
    .venv-ref-deb/bin/python tools/reference/bench_vqgan.py --preset chameleon --size 256 --iters 1
Pins: Debian torch 1.13.1 CPU, taming-transformers-rom1504==0.0.6 (--no-deps), einops==0.8.0.
"""
import argparse
import sys
import time
import types

import torch

pl = types.ModuleType("pytorch_lightning")
pl.LightningModule = torch.nn.Module
sys.modules["pytorch_lightning"] = pl
tmain = types.ModuleType("taming.main")
tmain.instantiate_from_config = lambda cfg: torch.nn.Identity()
sys.modules["taming.main"] = tmain
from taming.models.vqgan import VQModel  # noqa: E402

PRESETS = {
    "chameleon": dict(embed_dim=256, n_embed=8192, ddconfig=dict(
        double_z=False, z_channels=256, resolution=512, in_channels=3, out_ch=3, ch=128,
        ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)),
    "small": dict(embed_dim=32, n_embed=1024, ddconfig=dict(
        double_z=False, z_channels=32, resolution=256, in_channels=3, out_ch=3, ch=32,
        ch_mult=[1, 2, 2, 4, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0)),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="chameleon")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p = PRESETS[a.preset]
    m = VQModel(ddconfig=p["ddconfig"], lossconfig={}, n_embed=p["n_embed"], embed_dim=p["embed_dim"]).eval()
    x = torch.rand(1, 3, a.size, a.size) * 2 - 1
    with torch.no_grad():
        _, _, (_, _, idx) = m.encode(x)
        f = 2 ** (len(p["ddconfig"]["ch_mult"]) - 1)
        shape = (1, a.size // f, a.size // f, p["embed_dim"])
        m.decode(m.quantize.get_codebook_entry(idx.view(-1), shape))
        t = time.perf_counter()
        for _ in range(a.iters):
            _, _, (_, _, idx) = m.encode(x)
        enc = (time.perf_counter() - t) / a.iters
        t = time.perf_counter()
        for _ in range(a.iters):
            m.decode(m.quantize.get_codebook_entry(idx.view(-1), shape))
        dec = (time.perf_counter() - t) / a.iters
    print(f"torch bench (preset {a.preset}, {a.size}x{a.size}, {a.iters} iters, {torch.get_num_threads()} threads): "
          f"encode {enc:.3f} s/img ({1 / enc:.2f} img/s), decode {dec:.3f} s/img ({1 / dec:.2f} img/s)")


if __name__ == "__main__":
    main()

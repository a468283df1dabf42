"""Side-by-side `train-vq` step benchmark: xprompt against PyTorch on the same config.

The PyTorch side is a module of taming-transformers' VQModel architecture (Esser et al.
2021, github.com/CompVis/taming-transformers, `modules/diffusionmodules/model.py` Encoder /
Decoder and `modules/vqvae/quantize.py` VectorQuantizer), written here so it needs nothing but
torch: ResnetBlocks with GroupNorm + swish, a single-head attention block in the middle,
asymmetric-pad stride-2 downsampling, nearest ×2 upsampling, the straight-through quantizer
with codebook and commitment losses, an L1 (or L2) reconstruction loss and AdamW — the same
graph `xprompt train-vq` builds. Both sides time optimiser steps on uniform-noise crops after
one warm-up step, with the same thread count; rounds alternate so machine noise hits both.

Usage (torch 2.x from PyPI in a venv; a release build of xprompt):
  /work/torchenv/bin/python tools/reference/bench_train_vq.py \
      --config configs/default-vqgan.toml --steps 5 --rounds 3 --threads 2
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
XPROMPT = os.path.join(HERE, "..", "..", "target", "release", "xprompt")

# xprompt's presets (crates/xprompt-vqgan/src/train/config.rs), overridden field by field.
PRESETS = {
    "small": dict(ch=32, ch_mult=[1, 2, 2, 4, 4], num_res_blocks=1, z_channels=32,
                  embed_dim=32, n_embed=1024, attn_resolutions=[], norm_groups=32),
    "chameleon": dict(ch=128, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, z_channels=256,
                      embed_dim=256, n_embed=8192, attn_resolutions=[], norm_groups=32),
}


def load_config(path):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    m = raw.get("model", {})
    model = dict(PRESETS[m.get("preset", "small")])
    model.update({k: v for k, v in m.items() if k in model})
    t = raw.get("train", {})
    train = dict(batch_size=t.get("batch_size", 8), crop=t.get("crop", 64), lr=t.get("lr", 2e-4),
                 beta1=t.get("beta1", 0.5), beta2=t.get("beta2", 0.9),
                 weight_decay=t.get("weight_decay", 0.0), recon_loss=t.get("recon_loss", "l1"),
                 codebook_weight=t.get("codebook_weight", 1.0),
                 commitment_beta=t.get("commitment_beta", 0.25))
    return model, train


def torch_steps(model_cfg, train_cfg, steps, threads):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    groups = model_cfg["norm_groups"]

    def norm(c):
        return nn.GroupNorm(groups, c, eps=1e-6, affine=True)

    class Resnet(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
            self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x):
            h = self.conv1(F.silu(self.norm1(x)))
            h = self.conv2(F.silu(self.norm2(h)))
            return self.skip(x) + h

    class Attn(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm = norm(c)
            self.q, self.k, self.v, self.proj = (nn.Conv2d(c, c, 1) for _ in range(4))

        def forward(self, x):
            b, c, h, w = x.shape
            hn = self.norm(x)
            q = self.q(hn).reshape(b, c, h * w).permute(0, 2, 1)
            k = self.k(hn).reshape(b, c, h * w)
            a = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
            v = self.v(hn).reshape(b, c, h * w)
            o = torch.bmm(v, a.permute(0, 2, 1)).reshape(b, c, h, w)
            return x + self.proj(o)

    class Down(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, 2, 0)

        def forward(self, x):
            return self.conv(F.pad(x, (0, 1, 0, 1)))

    class Up(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, 1, 1)

        def forward(self, x):
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    ch, mult, nrb = model_cfg["ch"], model_cfg["ch_mult"], model_cfg["num_res_blocks"]
    zc, ed, ne = model_cfg["z_channels"], model_cfg["embed_dim"], model_cfg["n_embed"]
    # Attention blocks inside levels are only for attn_resolutions; xprompt's configs here use none.
    assert not model_cfg["attn_resolutions"], "attn_resolutions are not modelled here"

    enc = [nn.Conv2d(3, ch, 3, 1, 1)]
    cin = ch
    for i, m in enumerate(mult):
        for _ in range(nrb):
            enc.append(Resnet(cin, ch * m))
            cin = ch * m
        if i + 1 != len(mult):
            enc.append(Down(cin))
    enc += [Resnet(cin, cin), Attn(cin), Resnet(cin, cin), norm(cin), nn.SiLU(),
            nn.Conv2d(cin, zc, 3, 1, 1)]
    encoder = nn.Sequential(*enc)
    dec = [nn.Conv2d(zc, cin, 3, 1, 1), Resnet(cin, cin), Attn(cin), Resnet(cin, cin)]
    for i in reversed(range(len(mult))):
        for _ in range(nrb + 1):
            dec.append(Resnet(cin, ch * mult[i]))
            cin = ch * mult[i]
        if i != 0:
            dec.append(Up(cin))
    dec += [norm(cin), nn.SiLU(), nn.Conv2d(cin, 3, 3, 1, 1)]
    decoder = nn.Sequential(*dec)
    quant_conv, post_quant_conv = nn.Conv2d(zc, ed, 1), nn.Conv2d(ed, zc, 1)
    codebook = nn.Embedding(ne, ed)
    codebook.weight.data.uniform_(-1.0 / ne, 1.0 / ne)
    modules = nn.ModuleList([encoder, decoder, quant_conv, post_quant_conv, codebook])
    params = sum(p.numel() for p in modules.parameters())
    opt = torch.optim.AdamW(modules.parameters(), lr=train_cfg["lr"],
                            betas=(train_cfg["beta1"], train_cfg["beta2"]),
                            weight_decay=train_cfg["weight_decay"])
    bsz, crop = train_cfg["batch_size"], train_cfg["crop"]

    def step():
        x = torch.rand(bsz, 3, crop, crop) * 2 - 1
        z = quant_conv(encoder(x))
        b, d, h, w = z.shape
        zf = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = (zf.pow(2).sum(1, keepdim=True) - 2 * zf @ codebook.weight.t()
                + codebook.weight.pow(2).sum(1)[None])
        e = codebook(dist.argmin(1))
        cb_loss = (e - zf.detach()).pow(2).mean()
        commit = (e.detach() - zf).pow(2).mean()
        zq = (zf + (e - zf).detach()).reshape(b, h, w, d).permute(0, 3, 1, 2)
        rec = decoder(post_quant_conv(zq))
        diff = rec - x
        rec_loss = diff.abs().mean() if train_cfg["recon_loss"] == "l1" else diff.pow(2).mean()
        loss = rec_loss + train_cfg["codebook_weight"] * cb_loss + train_cfg["commitment_beta"] * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return dict(params=params, batch=bsz, crop=crop, steps=steps,
                s_per_step=(time.perf_counter() - t0) / steps, torch=torch.__version__,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--torch-only", action="store_true", help="one PyTorch run, JSON out")
    a = p.parse_args()
    model_cfg, train_cfg = load_config(a.config)
    if a.torch_only:
        print(json.dumps(torch_steps(model_cfg, train_cfg, a.steps, a.threads)))
        return
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    runs = {"xprompt": [], "torch": []}
    for r in range(a.rounds):
        out = subprocess.run([XPROMPT, "bench", "train-vq", "--config", a.config, "--steps",
                              str(a.steps), "--json"], check=True, capture_output=True,
                             text=True, env=env).stdout
        runs["xprompt"].append(json.loads(out.strip().splitlines()[-1]))
        # A fresh process per round, as for xprompt.
        out = subprocess.run([sys.executable, __file__, "--config", a.config, "--steps",
                              str(a.steps), "--threads", str(a.threads), "--torch-only"],
                             check=True, capture_output=True, text=True).stdout
        runs["torch"].append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['s_per_step']:.3f} s/step"
                                              for k, v in runs.items()), flush=True)
    med = {k: statistics.median(x["s_per_step"] for x in v) for k, v in runs.items()}
    t = runs["torch"][0]
    print(f"config {a.config}: batch {t['batch']} of {t['crop']}x{t['crop']}, {a.threads} threads, "
          f"{runs['xprompt'][0]['params']} parameters (torch {t['params']}), torch {t['torch']}")
    print("| impl | s / step (median) | steps / s | peak RSS MB | xprompt speed-up |")
    print("|---|---|---|---|---|")
    for k, v in runs.items():
        rss = max(x["peak_rss_mb"] for x in v)
        print(f"| {k} | {med[k]:.3f} | {1 / med[k]:.2f} | {rss:.0f} | {med[k] / med['xprompt']:.2f}x |")


if __name__ == "__main__":
    main()

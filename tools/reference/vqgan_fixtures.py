#!/usr/bin/env python3
"""Golden fixtures for crates/xprompt-vqgan (issue 3): small random taming VQModels and
Lumina-mGPT image preprocessing, computed with the reference Python code.

How to run (from the repository root):

    .venv-ref-deb/bin/pip install --no-deps taming-transformers-rom1504==0.0.6 einops==0.8.0 pillow==10.4.0
    .venv-ref-deb/bin/python tools/reference/vqgan_fixtures.py --out tests/fixtures/vqgan

Pinned environment: Debian python3-torch 1.13.1 (CPU), numpy 1.24.2, taming-transformers-rom1504
0.0.6 (taming/models/vqgan.py + taming/modules/diffusionmodules/model.py, architecturally
identical to Alpha-VLLM/Lumina-mGPT lumina_mgpt/model/chameleon_vae_ori/vqgan.py at the
defaults attn_type="vanilla", tanh_out=False), einops 0.8.0, Pillow 10.4.0.

taming's VQModel subclasses pytorch_lightning.LightningModule and imports taming.main; both are
stubbed below (LightningModule -> torch.nn.Module, instantiate_from_config -> a small dummy
loss module whose parameters become the extra `loss.*` checkpoint keys). The VQModel,
Encoder, Decoder and VectorQuantizer2 code that runs is the unmodified package code.

Outputs (all small):
  <out>/<config>/vqgan.yaml, vqgan.ckpt   Lightning-style {"state_dict": ..., "epoch", ...},
                                          weights stored as float16 to keep the files small
                                          (every value is random; loaded into fp32 modules)
  <out>/<config>/input.png                fixed input image (already at model size)
  <out>/<config>/codes.json               encode codes, raster order, with grid h/w
  <out>/<config>/decoded_raw.npy          decode(codes) before clamping, float32 [3, H, W]
  <out>/<config>/decoded.png              Lumina post-processing (clamp, (x+1)/2, *255, trunc)
  <out>/preprocess/*.png + cases.json     Pillow resizes and the Lumina crop pipeline
"""
import argparse
import json
import os
import random
import sys
import types

import numpy as np
import torch
import yaml
from PIL import Image

# ---- stubs for the training-only imports of taming.models.vqgan -------------------------
pl = types.ModuleType("pytorch_lightning")
pl.LightningModule = torch.nn.Module
sys.modules["pytorch_lightning"] = pl


class DummyLoss(torch.nn.Module):
    """Stands in for taming's VQLPIPSWithDiscriminator: gives the ckpt extra loss.* keys."""

    def __init__(self):
        super().__init__()
        self.logvar = torch.nn.Parameter(torch.zeros(()))
        self.discriminator = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))


tmain = types.ModuleType("taming.main")
tmain.instantiate_from_config = lambda cfg: DummyLoss()
sys.modules["taming.main"] = tmain

from taming.models.vqgan import VQModel  # noqa: E402

CONFIGS = {
    # Chameleon-like: attention only in the middle.
    "mid_attn": dict(
        embed_dim=4,
        n_embed=32,
        ddconfig=dict(double_z=False, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32,
                      ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[], dropout=0.0),
    ),
    # attn_resolutions set: attention blocks on both levels (16 and 8).
    "attn_res": dict(
        embed_dim=4,
        n_embed=32,
        ddconfig=dict(double_z=False, z_channels=4, resolution=16, in_channels=3, out_ch=3, ch=32,
                      ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[16, 8], dropout=0.0),
    ),
}
H, W = 32, 48  # input image size (multiple of the factor 2)


def make_image(h, w, seed, channels=3):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = []
    for c in range(channels):
        f1, f2, ph = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6)
        v = 127 + 90 * np.sin(f1 * xx + ph) * np.cos(f2 * yy) + rng.normal(0, 20, (h, w))
        base.append(v)
    return np.clip(np.stack(base, -1), 0, 255).astype(np.uint8)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("loss."):
                p.copy_(torch.randn(p.shape, generator=g))
                continue
            if p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or \
                    name.endswith("norm.weight") or name.endswith("norm_out.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:  # biases (conv, norm) and the codebook (overwritten below)
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())  # exactly representable in the fp16 checkpoint


def build(name, cfg, outdir, seed):
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    params = dict(cfg)
    params["lossconfig"] = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"}
    model = VQModel(ddconfig=cfg["ddconfig"], lossconfig=params["lossconfig"],
                    n_embed=cfg["n_embed"], embed_dim=cfg["embed_dim"]).eval()
    randomize(model, seed)

    img = make_image(H, W, seed + 1)
    Image.fromarray(img, "RGB").save(os.path.join(d, "input.png"))
    # Lumina: x = pixel/255*2-1 in float64, cast to the weight dtype (fp32); NCHW, batch 1.
    x = torch.from_numpy(img.astype(np.float64) / 255 * 2 - 1).permute(2, 0, 1)[None].float()

    with torch.no_grad():
        # Codebook: random perturbations of the actual latents so that many codes are used,
        # re-drawn until no position has a near-tie between its two best codes.
        z = model.quant_conv(model.encoder(x))
        zf = z.permute(0, 2, 3, 1).reshape(-1, cfg["embed_dim"])
        g = torch.Generator().manual_seed(seed + 2)
        for attempt in range(100):
            idx = torch.randint(0, zf.shape[0], (cfg["n_embed"],), generator=g)
            emb = zf[idx] + 0.3 * zf.std() * torch.randn(cfg["n_embed"], cfg["embed_dim"], generator=g)
            model.quantize.embedding.weight.copy_(emb.half().float())
            e = model.quantize.embedding.weight.double()
            dd = ((zf.double()[:, None, :] - e[None]) ** 2).sum(-1)
            top2 = dd.topk(2, dim=1, largest=False).values
            gap = ((top2[:, 1] - top2[:, 0]) / top2[:, 1].clamp_min(1e-12)).min().item()
            if gap > 1e-3:
                break
        print(f"{name}: min relative gap between best and second code = {gap:.2e} (attempt {attempt})")

        quant, _, (_, _, idx) = model.encode(x)
        codes = idx.view(-1)
        hq, wq = quant.shape[2], quant.shape[3]
        emb = model.quantize.get_codebook_entry(codes, (1, hq, wq, cfg["embed_dim"]))
        dec = model.decode(emb)[0]
        used = len(set(codes.tolist()))
        print(f"{name}: {codes.numel()} codes, {used} distinct; decoded range "
              f"[{dec.min().item():.3f}, {dec.max().item():.3f}]")

    sd = {k: v.detach().clone().half() for k, v in model.state_dict().items()}
    assert any(k.startswith("loss.") for k in sd)
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 1234}, os.path.join(d, "vqgan.ckpt"))
    with open(os.path.join(d, "vqgan.yaml"), "w") as f:
        yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel", "params": params}}, f,
                       sort_keys=False)
    with open(os.path.join(d, "codes.json"), "w") as f:
        json.dump({"height": hq, "width": wq, "codes": codes.tolist()}, f)
    np.save(os.path.join(d, "decoded_raw.npy"), dec.numpy().astype(np.float32))
    # Lumina/Chameleon _pil_from_chw_tensor.
    u8 = (((torch.clamp(dec, -1.0, 1.0) + 1.0) / 2.0).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(u8, "RGB").save(os.path.join(d, "decoded.png"))


# ---- Lumina-mGPT preprocessing (FlexARItemProcessor / chameleon ImageTokenizer) ------------
def generate_crop_size_list(num_patches, patch_size, max_ratio=4.0):
    out = []
    wp, hp = num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            out.append((wp * patch_size, hp * patch_size))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return out


def center_crop(pil_image, crop_size):
    while pil_image.size[0] >= 2 * crop_size[0] and pil_image.size[1] >= 2 * crop_size[1]:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = max(crop_size[0] / pil_image.size[0], crop_size[1] / pil_image.size[1])
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    crop_left = random.randint(0, pil_image.size[0] - crop_size[0])
    crop_upper = random.randint(0, pil_image.size[1] - crop_size[1])
    return pil_image.crop((crop_left, crop_upper, crop_left + crop_size[0], crop_upper + crop_size[1]))


def var_center_crop(pil_image, crop_size_list):
    w, h = pil_image.size
    rem = [min(cw / w, ch / h) / max(cw / w, ch / h) for cw, ch in crop_size_list]
    crop_size = sorted(zip(rem, crop_size_list), reverse=True)[0][1]
    return center_crop(pil_image, crop_size)


def whiten_transparency(img):
    if img.mode == "RGB":
        return img
    vals_rgba = np.array(img.convert("RGBA"))
    if not (vals_rgba[:, :, 3] < 255).any():
        return img.convert("RGB")
    alpha = vals_rgba[:, :, 3] / 255.0
    vals_rgb = (1 - alpha[:, :, np.newaxis]) * 255 + alpha[:, :, np.newaxis] * vals_rgba[:, :, :3]
    return Image.fromarray(vals_rgb.astype("uint8"), "RGB")


def preprocess_fixtures(outdir):
    d = os.path.join(outdir, "preprocess")
    os.makedirs(d, exist_ok=True)
    # Deterministic centre crop: Lumina's random.randint(0, n) replaced by the midpoint n // 2.
    random.randint = lambda a, b: (a + b) // 2
    cases = []

    rgb = Image.fromarray(make_image(57, 83, 11), "RGB")
    rgb.save(os.path.join(d, "src_rgb.png"))
    for (w, h, filt, fname) in [(40, 27, Image.BICUBIC, "bicubic"), (120, 90, Image.BICUBIC, "bicubic"),
                                (41, 28, Image.BOX, "box"), (83, 30, Image.BICUBIC, "bicubic")]:
        out = f"resize_{fname}_{w}x{h}.png"
        rgb.resize((w, h), resample=filt).save(os.path.join(d, out))
        cases.append({"kind": "resize", "src": "src_rgb.png", "filter": fname, "width": w,
                      "height": h, "expected": out})

    rgba_arr = make_image(29, 37, 12, channels=4)
    rgba_arr[:, :, 3] = np.linspace(0, 255, 37, dtype=np.float64)[None, :].astype(np.uint8)
    rgba_arr[:4, :, 3] = 255
    rgba = Image.fromarray(rgba_arr, "RGBA")
    rgba.save(os.path.join(d, "src_rgba.png"))
    rgba.resize((50, 33), resample=Image.BICUBIC).save(os.path.join(d, "resize_rgba_50x33.png"))
    cases.append({"kind": "resize", "src": "src_rgba.png", "filter": "bicubic", "width": 50,
                  "height": 33, "expected": "resize_rgba_50x33.png"})

    gray = Image.fromarray(make_image(45, 45, 13)[:, :, 0], "L")
    gray.save(os.path.join(d, "src_gray.png"))
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(os.path.join(d, "src_palette.png"))
    big = Image.fromarray(make_image(150, 230, 14), "RGB")
    big.save(os.path.join(d, "src_big.png"))

    for src, target in [("src_rgb.png", 64), ("src_rgba.png", 32), ("src_gray.png", 64),
                        ("src_palette.png", 64), ("src_big.png", 64), ("src_big.png", 96)]:
        img = Image.open(os.path.join(d, src))
        crop_list = generate_crop_size_list((target // 32) ** 2, 32)
        out_img = whiten_transparency(var_center_crop(img, crop_list))
        out = f"lumina_{src[4:-4]}_{target}.png"
        out_img.save(os.path.join(d, out))
        x = np.array(out_img).astype(np.float64) / 255 * 2 - 1
        cases.append({"kind": "lumina", "src": src, "target": target, "expected": out,
                      "width": out_img.size[0], "height": out_img.size[1],
                      "x_sum": float(x.sum())})
    with open(os.path.join(d, "cases.json"), "w") as f:
        json.dump({"pillow": Image.__version__ if hasattr(Image, "__version__") else "",
                   "crop_list_lengths": {str(t): len(generate_crop_size_list((t // 32) ** 2, 32))
                                         for t in (512, 768, 1024)},
                   "cases": cases}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/vqgan")
    a = ap.parse_args()
    torch.manual_seed(0)
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        build(name, cfg, a.out, 100 + 10 * i)
    preprocess_fixtures(a.out)


if __name__ == "__main__":
    main()

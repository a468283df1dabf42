#!/usr/bin/env python3
"""Held-out 64x64 photo crops for judging an image tokenizer.

Each source photo is resized so its short side is one of SCALES (so crops range from
"whole scene" to "native detail"), then cropped at seeded random offsets. Deterministic
for a given --seed and input list. Needs Pillow.

    python3 tools/vq_heldout_crops.py --out CROPS_DIR --per-image 4 PHOTO...
"""
import argparse
import os
import random

from PIL import Image

SCALES = (64, 96, 128, 192, 256)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--per-image", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("photos", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    n = 0
    for path in sorted(a.photos):
        im = Image.open(path).convert("RGB")
        stem = os.path.splitext(os.path.basename(path))[0]
        for k in range(a.per_image):
            short = max(a.size, int(SCALES[rng.randrange(len(SCALES))] * a.size / 64))
            w, h = im.size
            s = short / min(w, h)
            r = im.resize((max(a.size, round(w * s)), max(a.size, round(h * s))), Image.BICUBIC)
            x = rng.randrange(r.width - a.size + 1)
            y = rng.randrange(r.height - a.size + 1)
            r.crop((x, y, x + a.size, y + a.size)).save(os.path.join(a.out, f"{stem}_{k}.png"))
            n += 1
    print(f"wrote {n} crops to {a.out}")


if __name__ == "__main__":
    main()

"""Reference values for xprompt-eval's PSNR and SSIM, computed with scikit-image.

Run (from the repository root):
    .venv-ref-deb/bin/pip install -c <(echo numpy==1.24.2) scikit-image==0.22.0 scipy==1.11.4
    .venv-ref-deb/bin/python tools/reference/metrics_fixtures.py > tests/fixtures/metrics/skimage_metrics.json

Pinned: scikit-image 0.22.0, scipy 1.11.4, numpy 1.24.2 (Debian). Conventions checked:
  peak_signal_noise_ratio(gt, pred, data_range=255) on uint8 images;
  structural_similarity(gt, pred, data_range=255, channel_axis=-1 for RGB) with the defaults
  win_size=7, gaussian_weights=False (7x7 uniform window), K1=0.01, K2=0.03, use_sample_covariance=True.
The images are generated here with a fixed numpy seed and stored in the JSON, so the Rust test reads the very
same pixels.
"""
import json

import numpy as np
import skimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def case(name, gt, pred):
    multichannel = gt.ndim == 3
    kw = {"channel_axis": -1} if multichannel else {}
    return {
        "name": name,
        "shape": list(gt.shape),
        "gt": gt.reshape(-1).tolist(),
        "pred": pred.reshape(-1).tolist(),
        "psnr": float(peak_signal_noise_ratio(gt, pred, data_range=255)),
        "ssim": float(structural_similarity(gt, pred, data_range=255, **kw)),
    }


def main():
    rng = np.random.default_rng(20241202)
    cases = []
    # 1. random RGB vs itself plus noise
    gt = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    noisy = np.clip(gt.astype(np.int32) + rng.integers(-20, 21, size=gt.shape), 0, 255).astype(np.uint8)
    cases.append(case("rgb_random_plus_noise", gt, noisy))
    # 2. smooth gradient RGB (non-square) vs a blurred / shifted version
    y, x = np.mgrid[0:13, 0:20]
    gt = np.stack([x * 12, y * 18, (x + y) * 7], axis=-1).clip(0, 255).astype(np.uint8)
    pred = np.roll(gt, 1, axis=1)
    cases.append(case("rgb_gradient_shifted", gt, pred))
    # 3. greyscale: structure vs inverted structure
    g = (rng.random((12, 12)) * 255).astype(np.uint8)
    cases.append(case("grey_random_vs_inverted", g, 255 - g))
    # 4. RGB: constant offset (brightness change)
    gt = rng.integers(30, 200, size=(10, 9, 3), dtype=np.uint8)
    cases.append(case("rgb_brightness_offset", gt, (gt + 25).astype(np.uint8)))
    # 5. exactly 7x7 (a single SSIM window)
    gt = rng.integers(0, 256, size=(7, 7, 3), dtype=np.uint8)
    pred = rng.integers(0, 256, size=(7, 7, 3), dtype=np.uint8)
    cases.append(case("rgb_single_window", gt, pred))
    print(json.dumps({"skimage": skimage.__version__, "numpy": np.__version__, "cases": cases}))


if __name__ == "__main__":
    main()

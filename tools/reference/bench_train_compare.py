"""Side-by-side training benchmark: `xprompt bench train` against eager and SDPA PyTorch
(bench_train.py) on the same config, rows and target count, interleaved round by round so
that machine noise hits all three alike; prints each run and the medians and ratios.

Usage (needs /work/.venv-torch, see bench_decode.py, and a release build of xprompt):
  /work/.venv-torch/bin/python tools/reference/bench_train_compare.py --preset 5m \
      --context-len 320 --steps 4 --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
XPROMPT = os.path.join(HERE, "..", "..", "target", "release", "xprompt")


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="5m")
    p.add_argument("--context-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    xp = [XPROMPT, "bench", "train", "--preset", a.preset, "--context-len", str(a.context_len),
          "--steps", str(a.steps), "--json"]
    results = {"xprompt": [], "torch eager": [], "torch sdpa": []}
    shape = None
    for r in range(a.rounds):
        x = run_json(xp)
        # xprompt packs rows only as long as their longest sample set needs (<= context-len);
        # torch gets the same rows and row length.
        shape = (round(x["rows_per_step"]), round(x["targets_per_step"]), x["row_len"])
        results["xprompt"].append(x)
        for attn in ["eager", "sdpa"]:
            t = run_json([sys.executable, os.path.join(HERE, "bench_train.py"), "--preset", a.preset,
                          "--rows", str(shape[0]), "--context-len", str(shape[2]),
                          "--targets", str(shape[1]), "--steps", str(a.steps), "--attn", attn])
            results[f"torch {attn}"].append(t)
        print(f"round {r + 1}: " + ", ".join(
            f"{k} {v[-1]['s_per_step']:.3f} s" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v_["s_per_step"] for v_ in v) for k, v in results.items()}
    rss = {k: max(v_["peak_rss_mb"] for v_ in v) for k, v in results.items()}
    positions = shape[0] * shape[2]
    print(f"preset {a.preset}, context {a.context_len}: {shape[0]} rows x {shape[2]} ({positions} positions), "
          f"{shape[1]} target rows, {results['xprompt'][0]['params']} parameters")
    print("| impl | s / step (median) | positions / s | peak RSS MB | xprompt speed-up |")
    print("|---|---|---|---|---|")
    for k in results:
        print(f"| {k} | {med[k]:.3f} | {positions / med[k]:.0f} | {rss[k]:.0f} | "
              f"{med[k] / med['xprompt']:.2f}x |")


if __name__ == "__main__":
    main()

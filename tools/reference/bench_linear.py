"""Speed anchor for `xprompt bench linear`: torch.nn.functional.linear at the same shape.

x (m × k) f32; W (n × k) in --weights' dtype. With bf16 weights x is cast to bf16 too, as
bf16 inference in PyTorch runs (the product accumulates in f32 inside the kernel).
    python bench_linear.py --m 128 --k 4096 --n 11008 --weights bf16 [--reps 10]
Prints one JSON line. Environment: see bench_decode.py (torch 2.x from PyPI, CPU).
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--m", type=int, default=128)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=11008)
    p.add_argument("--weights", default="f32", choices=["f32", "bf16"])
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.weights]
    torch.manual_seed(0)
    w = (torch.randn(a.n, a.k) * 0.02).to(dtype)
    x = torch.randn(1, a.m, a.k).to(dtype)
    with torch.no_grad():
        F.linear(x, w)  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.reps):
            F.linear(x, w)
        secs = (time.perf_counter() - t0) / a.reps
    print(json.dumps({
        "impl": f"torch {torch.__version__} F.linear", "m": a.m, "k": a.k, "n": a.n,
        "weights": a.weights, "threads": torch.get_num_threads(), "ms": secs * 1e3,
        "gflops": 2 * a.m * a.k * a.n / secs / 1e9,
    }))


if __name__ == "__main__":
    main()

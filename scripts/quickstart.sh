#!/usr/bin/env bash
# The main job on a fresh clone, with only what the repository carries: build a small task
# suite from the committed fixture sources, tokenize it with the fixture VQGAN, train a small
# X-Prompt model for a minute, answer an in-context request, and evaluate on the suite.
# (Until the bundled default model lands in models/default, this is the end-to-end demo.)
# Usage: bash scripts/quickstart.sh [OUT_DIR]      (default /tmp/xprompt-quickstart)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/xprompt-quickstart}
cd "$repo"
cargo build --release -p xprompt-cli
x="${CARGO_TARGET_DIR:-$repo/target}/release/xprompt"
rm -rf "$out" && mkdir -p "$out" && cd "$out"
echo "== 1/5 task suite from tests/fixtures/data-sources"
"$x" data build --sources "$repo/tests/fixtures/data-sources" --out suite --size 16 --per-task 8
echo "== 2/5 pre-tokenize with the fixture VQGAN"
"$x" pretokenize --manifest suite/manifest.jsonl --vqgan "$repo/tests/fixtures/vqgan/mid_attn" --out store --size 16
cat > exp.toml <<TOML
[model]
hidden_size = 64
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
intermediate_size = 128
xp_tokens = 4
text_vocab = 300

[data]
manifest = "suite/manifest.jsonl"
store = "store"
vqgan = "$repo/tests/fixtures/vqgan/mid_attn"
image_size = 16

[train]
steps = 60
batch_samples = 4
context_len = 768
checkpoint_every = 30
val_every = 30
val_samples = 8
TOML
echo "== 3/5 train (60 steps)"
"$x" train --config exp.toml --out model
echo "== 4/5 in-context generation: one denoise example, one query"
"$x" generate --model model --example suite/images/denoise/00000_a.png=suite/images/denoise/00000_b.png \
  --query suite/images/denoise/00001_a.png --out answer.png --json
echo "== 5/5 evaluation (0-shot, 1-shot causal, 1-shot X-Prompt)"
"$x" eval --model model --suite suite --max-items 2 --ceiling --out report
echo
echo "done: $out/answer.png, $out/report/report.md, $out/model/loss.png"

#!/usr/bin/env bash
# How models/default is made, end to end, on a CPU machine. Every stage is resumable: run the
# script again (with more minutes) and it continues where it stopped.
#
# Usage: scripts/train-default.sh WORK [VQ_MINUTES] [MODEL_MINUTES]
#   WORK           work directory (data, suite, VQGAN, shard store, training run); ~3 GB
#   VQ_MINUTES     train-vq budget for this call (default 17: the shipped tokenizer had 400 steps)
#   MODEL_MINUTES  X-Prompt training budget for this call (default 100; the run stops earlier at
#                  train.steps). Its best weights by the in-context metric land in WORK/model/best.
# Then: bash scripts/train-default.sh WORK 0 0 ship   # export + demo set + evaluation into models/default
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: train-default.sh WORK [VQ_MINUTES] [MODEL_MINUTES] [ship]}
vq_minutes=${2:-17}
model_minutes=${3:-100}
stage=${4:-train}
mkdir -p "$work"
work=$(cd "$work" && pwd)
cd "$repo"
cargo build --release -p xprompt-cli
x="${CARGO_TARGET_DIR:-$repo/target}/release/xprompt"

echo "== data: open sources -> 64x64 task suite"
[ -f "$work/data/SOURCES.md" ] || bash scripts/fetch-data.sh "$work/data"
[ -f "$work/suite/manifest.jsonl" ] || "$x" data build --sources "$work/data" --out "$work/suite" --size 64

if [ "$stage" = train ]; then
  echo "== VQGAN on the suite's training images (${vq_minutes} min)"
  grep '"split":"train"' "$work/suite/manifest.jsonl" | grep -o 'images/[^"]*\.png' | sort -u \
    | sed "s|^|$work/suite/|" > "$work/vq-train-images.txt"
  resume=(); [ -f "$work/vq/train/latest" ] && resume=(--resume)
  if [ "$vq_minutes" != 0 ]; then
    "$x" train-vq --config configs/default-vqgan.toml --images "$work/vq-train-images.txt" \
      --out "$work/vq" --minutes "$vq_minutes" "${resume[@]}"
  fi

  echo "== pre-tokenize the suite"
  "$x" pretokenize --manifest "$work/suite/manifest.jsonl" --vqgan "$work/vq" --out "$work/store" --size 64

  echo "== X-Prompt model (${model_minutes} min)"
  cp configs/default-model.toml "$work/exp.toml"
  resume=(); [ -d "$work/model/checkpoints" ] && resume=(--resume)
  if [ "$model_minutes" != 0 ]; then
    "$x" train --config "$work/exp.toml" --out "$work/model" --minutes "$model_minutes" "${resume[@]}"
  fi
fi

if [ "$stage" = ship ]; then
  echo "== ship: f16 export, demo set, evaluation"
  # The weights with the largest ICL gap (the in-context metric), not the last ones.
  "$x" export --model "$work/model/best" --out models/default --dtype f16
  "$x" demo --model models/default --bundle-from "$work/suite"
  "$x" eval --model models/default --suite "$work/suite" --max-items 10 --ceiling --out "$work/eval"
  "$x" eval --model models/default --suite "$work/suite" --max-items 10 --no-instruction \
    --tasks derain,low_light_enhance,depth_new_palette,add_object,remove_object --out "$work/eval-example-only"
  "$x" eval-icl --model models/default --suite "$work/suite" --queries 8 --out "$work/eval-icl"
  echo "reports: $work/eval/, $work/eval-example-only/, $work/eval-icl/ (copy the tables into models/default/EVAL.md)"
fi

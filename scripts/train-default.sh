#!/usr/bin/env bash
# How models/default is made, end to end, on a CPU machine. Every stage is resumable: run the
# script again (with more minutes) and it continues where it stopped.
#
# Usage: [RECIPE=f8|f4] [DEFAULT_MASK=causal|x-prompt] scripts/train-default.sh WORK [VQ_MINUTES] [MODEL_MINUTES] [ship]
#   RECIPE         f8 (default): the shipped model — 8x tokenizer (configs/default-vqgan.toml, 8x8
#                  codes per 64x64 image) and configs/default-model.toml.
#                  f4: the sharper 4x tokenizer (configs/vqgan-f4.toml, 16x16 codes; ~2 h of
#                  train-vq on 2 cores) and configs/default-model-f4.toml (several hours). Its
#                  tokenizer never sees the OpenCV and scikit-learn photos: their crops
#                  (tools/vq_heldout_crops.py) are its held-out test.
#   WORK           work directory (data, suite, VQGAN, shard store, training run); ~3 GB
#   VQ_MINUTES     train-vq budget for this call (f8 default 17: the shipped tokenizer had 400
#                  steps; f4 default 130; the run stops at its config's train.steps)
#   MODEL_MINUTES  X-Prompt training budget for this call (default 100; the run stops earlier at
#                  train.steps). Its best weights by the in-context metric land in WORK/model/best.
# Then: bash scripts/train-default.sh WORK 0 0 ship   # export + demo set + evaluation into models/default
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: train-default.sh WORK [VQ_MINUTES] [MODEL_MINUTES] [ship]}
recipe=${RECIPE:-f8}
case "$recipe" in
  # vq / store: the directory names the model config's [data] section expects in WORK.
  f8) vq_config=configs/default-vqgan.toml; model_config=configs/default-model.toml
      vq_default=17; vq=vq; store=store ;;
  f4) vq_config=configs/vqgan-f4.toml; model_config=configs/default-model-f4.toml
      vq_default=130; vq=vq4; store=store4 ;;
  *) echo "RECIPE must be f8 or f4, not '$recipe'" >&2; exit 2 ;;
esac
vq_minutes=${2:-$vq_default}
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
  held_out_sources='^$'  # f8 trains on every training image
  [ "$recipe" = f4 ] && held_out_sources='photos/opencv\|photos/sklearn'
  grep '"split":"train"' "$work/suite/manifest.jsonl" | grep -v "$held_out_sources" \
    | grep -o 'images/[^"]*\.png' | sort -u | sed "s|^|$work/suite/|" > "$work/vq-train-images.txt"
  resume=(); [ -f "$work/$vq/train/latest" ] && resume=(--resume)
  if [ "$vq_minutes" != 0 ]; then
    "$x" train-vq --config "$vq_config" --images "$work/vq-train-images.txt" \
      --out "$work/$vq" --minutes "$vq_minutes" "${resume[@]}"
  fi

  echo "== pre-tokenize the suite"
  "$x" pretokenize --manifest "$work/suite/manifest.jsonl" --vqgan "$work/$vq" --out "$work/$store" --size 64

  echo "== X-Prompt model (${model_minutes} min)"
  cp "$model_config" "$work/exp.toml"
  resume=(); [ -d "$work/model/checkpoints" ] && resume=(--resume)
  if [ "$model_minutes" != 0 ]; then
    "$x" train --config "$work/exp.toml" --out "$work/model" --minutes "$model_minutes" "${resume[@]}"
  fi
fi

if [ "$stage" = ship ]; then
  echo "== ship: f16 export, demo set, evaluation"
  # The weights with the largest ICL gap (the in-context metric), not the last ones.
  # DEFAULT_MASK=causal|x-prompt: the mask the evaluation found the model reads its examples
  # best through (config.json xprompt.default_mask); unset leaves X-Prompt as the default.
  "$x" export --model "$work/model/best" --out models/default --dtype f16 \
    ${DEFAULT_MASK:+--default-mask "$DEFAULT_MASK"}
  "$x" demo --model models/default --bundle-from "$work/suite"
  "$x" eval --model models/default --suite "$work/suite" --max-items 10 --ceiling --out "$work/eval"
  "$x" eval --model models/default --suite "$work/suite" --max-items 10 --no-instruction \
    --tasks derain,low_light_enhance,depth_new_palette,add_object,remove_object --out "$work/eval-example-only"
  # f4 trains with at most 2 examples (a 16x16 pair is 552 tokens): 4-shot prompts would run
  # past the trained context.
  shots=0,1,2,4; [ "$recipe" = f4 ] && shots=0,1,2
  "$x" eval-icl --model models/default --suite "$work/suite" --queries 8 --shots "$shots" --out "$work/eval-icl"
  # The tokenizer on photo crops from sources it never trained on (f4 only; needs Pillow).
  if [ "$recipe" = f4 ] && python3 -c 'import PIL' 2>/dev/null; then
    [ -d "$work/crops" ] || python3 tools/vq_heldout_crops.py --out "$work/crops" --per-image 4 \
      "$work"/data/photos/opencv/* "$work"/data/photos/sklearn/*
    "$x" vq eval --vqgan models/default/vqgan --images "$work/crops" | tee "$work/vq-heldout.txt"
  fi
  echo "reports: $work/eval/, $work/eval-example-only/, $work/eval-icl/ (copy the tables into models/default/EVAL.md)"
fi

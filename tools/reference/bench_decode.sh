#!/usr/bin/env bash
# Side-by-side decoder benchmark: transformers (eager and SDPA) and xprompt on the same random
# checkpoint, same prompt, same machine, one run. Usage:
#   tools/reference/bench_decode.sh [preset=150m] [prompt_len=128] [gen=32]
# Needs /work/.venv-torch (see bench_decode.py) and a release build of xprompt.
set -euo pipefail
preset=${1:-150m}; plen=${2:-128}; gen=${3:-32}
py=${PYTHON:-/work/.venv-torch/bin/python}
here=$(cd "$(dirname "$0")" && pwd)
dir=${BENCH_DIR:-/tmp/xprompt-bench-$preset}
[ -f "$dir/config.json" ] || "$py" "$here/bench_decode.py" make "$dir" --preset "$preset"
for round in 1 2; do
  "$py" "$here/bench_decode.py" time "$dir" --prompt-len "$plen" --gen "$gen" --attn eager
  "$py" "$here/bench_decode.py" time "$dir" --prompt-len "$plen" --gen "$gen" --attn sdpa
  "$here/../../target/release/xprompt" bench decode --model "$dir" --prompt-len "$plen" --gen "$gen" --json
done

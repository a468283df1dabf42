#!/usr/bin/env bash
# The prepared check for a lent GPU machine (one H100/H200, CUDA 13.0 driver, PyTorch and
# transformers in python3, no Rust): everything is built here first, carried there, and run
# as this one script, which writes its results under OUT.
#
# Build here (CPU machine), into a folder the device run carries:
#   eval "$(scripts/cuda-toolchain.sh)"
#   cargo build --release -p xprompt-cli --features cuda
#   cargo test --release -p xprompt-core --features cuda --test cuda_parity --no-run
#   mkdir -p gpu-bin && cp target/release/xprompt gpu-bin/ \
#     && cp "$(ls -t target/release/deps/cuda_parity-* | grep -v '\.d$' | head -1)" gpu-bin/cuda_parity
# Run there:
#   scripts/gpu-check.sh gpu-bin "$OUT"
#
# Steps: the device; CUDA logits against the golden fixtures (f32 ≤ 1e-4, bf16 ≤ 2e-2);
# prefill/decode of a random Lumina-7B-shaped bf16 checkpoint, xprompt and transformers side
# by side on the same GPU.
set -uo pipefail
bin="${1:?usage: $0 BIN_DIR OUT_DIR}"
out="${2:?usage: $0 BIN_DIR OUT_DIR}"
mkdir -p "$out"
step() { echo "== $*" | tee -a "$out/summary.txt"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/summary.txt"

step "CUDA logits vs the transformers fixtures"
XPROMPT_REQUIRE_CUDA=1 "$bin/cuda_parity" --test-threads 1 > "$out/cuda_parity.txt" 2>&1
echo "exit $?" | tee -a "$out/summary.txt"
tail -3 "$out/cuda_parity.txt" | tee -a "$out/summary.txt"

step "random Lumina-7B-shaped checkpoint (bf16)"
ckpt=/tmp/xprompt-r7b
[ -f "$ckpt/config.json" ] || "$bin/xprompt" bench random-checkpoint --shape lumina-7b --out "$ckpt" \
  > "$out/random_checkpoint.txt" 2>&1

for len in 512 1024; do
  step "xprompt bench decode, cuda bf16, prompt $len"
  "$bin/xprompt" bench decode --model "$ckpt" --device cuda --weights bf16 \
    --prompt-len "$len" --gen 64 --json 2>&1 | tee -a "$out/summary.txt"
  step "transformers, cuda bf16 sdpa, prompt $len"
  python3 tools/reference/bench_decode.py time "$ckpt" --device cuda --dtype bfloat16 \
    --attn sdpa --prompt-len "$len" --gen 64 2>&1 | tail -1 | tee -a "$out/summary.txt"
done

#!/usr/bin/env bash
# Side-by-side VQGAN speed: PyTorch reference (taming VQModel) then `xprompt vq bench`, same
# preset, image size, iterations and thread count, random weights.
#   tools/reference/bench_vqgan.sh [chameleon|small] [SIZE=256] [ITERS=2] [THREADS=2]
# Needs .venv-ref-deb (see vqgan_fixtures.py) and a release build of the xprompt binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
P=${1:-chameleon}; S=${2:-256}; I=${3:-2}; T=${4:-2}
.venv-ref-deb/bin/python tools/reference/bench_vqgan.py --preset "$P" --size "$S" --iters "$I" --threads "$T" | grep -v '^Working'
RAYON_NUM_THREADS=$T ${XPROMPT:-./target/release/xprompt} vq bench --preset "$P" --size "$S" --iters "$I"

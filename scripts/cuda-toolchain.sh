#!/usr/bin/env bash
# A CUDA 13.0 toolchain for `cargo build --features cuda` on a machine without a GPU or a
# system CUDA install: nvcc, headers and libraries from NVIDIA's wheels on PyPI, installed
# into a local prefix, plus a `libcuda.so` stub to link against (the real driver library is
# found at run time on the GPU machine).
#
#   eval "$(scripts/cuda-toolchain.sh)"           # compiler + libraries (cargo build)
#   eval "$(scripts/cuda-toolchain.sh --check)"   # compiler and headers only (cargo check)
#   cargo build --release --features cuda
#
# Installs once (idempotent), prints the environment as `export` lines on stdout; progress
# goes to stderr. Pinned to CUDA 13.0: the GPU machines this project is verified on have a
# 13.0 driver, and PTX from a newer nvcc fails to load there.
#
# Environment:
#   XPROMPT_CUDA_PREFIX  where to install (default: ~/.cache/xprompt/cuda-13.0)
#   CUDA_COMPUTE_CAP     target architecture for candle's kernels (default 90: H100/H200)
set -euo pipefail

mode=build
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

prefix="${XPROMPT_CUDA_PREFIX:-$HOME/.cache/xprompt/cuda-13.0}"
# Two pip targets: `pip install --target` does not merge into a directory it filled before.
cuda_home="$prefix/compiler/nvidia/cu13"
cuda_libs="$prefix/libraries/nvidia/cu13/lib"
stubs="$prefix/stubs"
repo="$(cd "$(dirname "$0")/.." && pwd)"

say() { echo "cuda-toolchain: $*" >&2; }

# The compiler, its front ends and headers (enough for candle-kernels' build script).
compiler=(
  "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*"
  "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*"
)
# What cudarc links against (-lcublas -lcublasLt -lcurand -lnvrtc; -lcuda is the stub).
libraries=("nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" "nvidia-cuda-nvrtc==13.0.*")

install() {
  local group="$1"
  shift
  if [ -f "$prefix/.installed-$group" ]; then
    return
  fi
  say "installing $* into $prefix/$group"
  rm -rf "${prefix:?}/$group"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$prefix/$group" "$@" >&2
  touch "$prefix/.installed-$group"
}

mkdir -p "$prefix"
install compiler "${compiler[@]}"
if [ "$mode" = build ]; then
  install libraries "${libraries[@]}"
fi
if ! "$cuda_home/bin/nvcc" --version >/dev/null 2>&1; then
  say "nvcc in $cuda_home/bin does not run; remove $prefix and try again"
  exit 1
fi

# The linker wants unversioned names (libcublas.so); the wheels ship libcublas.so.13 etc.
mkdir -p "$stubs"
for lib in "$cuda_home"/lib/lib*.so.* "$cuda_libs"/lib*.so.*; do
  [ -e "$lib" ] || continue
  base="$(basename "$lib")"
  ln -sf "$lib" "$stubs/${base%%.so.*}.so"
done

# libcuda stub: every driver entry point cudarc declares, returning CUDA_ERROR_STUB_LIBRARY
# (34, as NVIDIA's own stubs do), with the driver's SONAME so the binary asks for
# libcuda.so.1 at run time and gets the real driver on a GPU machine. Generated from cudarc's
# own declarations, so it follows the cudarc version in Cargo.lock. (Put on LD_LIBRARY_PATH
# of a machine without a driver, it makes `--device cuda` a clear error instead of a loader
# failure; never put it there on a GPU machine.)
if [ "$mode" = build ] && [ ! -f "$stubs/libcuda.so" ]; then
  (cd "$repo" && cargo fetch --quiet >&2)
  cudarc_dir="$(cd "$repo" && cargo metadata --format-version 1 --all-features 2>/dev/null |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')"
  say "generating the libcuda stub from $cudarc_dir"
  grep -rhoE 'pub (unsafe )?fn cu[A-Z][A-Za-z0-9_]*' "$cudarc_dir/src/driver/sys" |
    sed -E 's/.*fn //' | sort -u |
    awk '{ print "int " $1 "(void) { return 34; }" }' > "$stubs/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
  ln -sf libcuda.so "$stubs/libcuda.so.1"
fi

cat <<EOF
export CUDA_HOME="$cuda_home"
export CUDA_PATH="$cuda_home"
export PATH="$cuda_home/bin:\$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$stubs:$cuda_home/lib:$cuda_libs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
EOF

#!/usr/bin/env bash
# Builds the `cuda` feature of cleandift on a machine without a GPU (or with
# one), with a CUDA toolkit installed from PyPI wheels, and packs the binary.
#
#   scripts/build-cuda.sh [COMPUTE_CAP]       # default 90 (H100/H200)
#
# Environment (all optional):
#   CUDA_VENV         where the toolkit wheels go   (default ~/.cache/cleandift/cuda-venv)
#   CUDA_TARGET_DIR   cargo target dir for this build (default target-cuda, beside target/)
#   CUDA_BUILD_NICE   nice level of the build       (default 0)
#
# Why wheels: CUDA 12 wheels ship no nvcc; the CUDA 13 wheels unpack into one
# toolkit tree (site-packages/nvidia/cu13/{bin,include,lib,nvvm}). That tree
# lacks the unversioned lib*.so links and the driver's link stub libcuda.so;
# this script makes both (the stub only satisfies the linker: at run time the
# binary needs the real NVIDIA driver, libcuda.so.1).
#
# Toolkit pin: 13.0 (update 2). candle's kernels are compiled to PTX, and PTX
# from toolkit 13.x needs a driver for 13.x or newer: driver 580 = CUDA 13.0,
# the driver of our GPU machines. cudarc 0.19 accepts toolkits 11.4-13.4.
# Idempotent: a second run reuses the venv, the links and the cargo cache.
set -euo pipefail

cap="${1:-90}"
case "$cap" in ''|*[!0-9]*) echo "build-cuda: COMPUTE_CAP must be a number like 90 or 89, got '$cap'" >&2; exit 2;; esac
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${CUDA_VENV:-$HOME/.cache/cleandift/cuda-venv}"
target="${CUDA_TARGET_DIR:-$repo/target-cuda}"
nice_level="${CUDA_BUILD_NICE:-0}"

# The pinned toolkit (CUDA 13.0 update 2).
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
)

say() { printf 'build-cuda: %s\n' "$*"; }

# 1. The toolkit wheels, in a venv outside the repository.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip freeze 2>/dev/null | grep -qx "nvidia-cuda-nvcc==13.0.88"; then
  say "installing the CUDA 13.0 toolkit wheels (about 1 GB)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${wheels[@]}"
else
  say "toolkit wheels already installed in $venv"
fi
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
tk="$site/nvidia/cu13"
for need in bin/nvcc include/cuda.h nvvm; do
  [ -e "$tk/$need" ] || { echo "build-cuda: $tk/$need is missing: the wheel layout changed; check the pins" >&2; exit 1; }
done
say "toolkit: $tk ($("$tk/bin/nvcc" --version | tail -1))"

# 2. Unversioned library links (libcublas.so -> libcublas.so.13, ...).
made=0
for lib in "$tk"/lib/lib*.so.*; do
  [ -e "$lib" ] || continue
  base="${lib%%.so.*}.so"
  if [ ! -e "$base" ]; then ln -s "$(basename "$lib")" "$base"; made=$((made + 1)); fi
done
say "unversioned links made: $made"

# 3. A link-only stub of the driver library, from the symbols cuda.h declares
#    (preprocessed, so the _v2 names the real driver exports are the ones used).
stubdir="$tk/lib/stubs"
if [ ! -e "$stubdir/libcuda.so" ]; then
  mkdir -p "$stubdir"
  work="$(mktemp -d)"
  echo '#include <cuda.h>' > "$work/h.c"
  gcc -E -I"$tk/include" "$work/h.c" \
    | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t' | sort -u > "$work/syms"
  grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$tk/include/cuda.h" | tr -d '( \t' | sort -u >> "$work/syms"
  sort -u "$work/syms" | awk '{print "void " $1 "(void) {}"}' > "$work/stub.c"
  gcc -shared -fPIC -o "$stubdir/libcuda.so" -Wl,-soname,libcuda.so.1 "$work/stub.c"
  say "driver stub: $stubdir/libcuda.so ($(wc -l < "$work/syms") symbols)"
  rm -rf "$work"
else
  say "driver stub already at $stubdir/libcuda.so"
fi

# 4. Build.
export CUDA_HOME="$tk" CUDA_PATH="$tk" CUDA_ROOT="$tk" CUDA_TOOLKIT_ROOT_DIR="$tk"
export PATH="$tk/bin:$PATH"
export LIBRARY_PATH="$tk/lib:$stubdir${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$tk/lib -L native=$stubdir"
export CUDA_COMPUTE_CAP="$cap"
say "cargo build --release --features cuda (compute capability $cap, target $target)"
start=$(date +%s)
(cd "$repo" && nice -n "$nice_level" cargo build --release --locked --features cuda --target-dir "$target")
say "built in $(( $(date +%s) - start )) s"

# 5. Strip and pack so that it fits a 64 MiB transfer.
mkdir -p "$repo/dist"
bin="$target/release/cleandift"
packed="$repo/dist/cleandift-cuda-sm$cap"
strip -o "$packed" "$bin"
xz -T0 -9 -f -k "$packed"
size=$(stat -c %s "$packed.xz")
say "packed: $packed.xz ($((size / 1024 / 1024)) MiB; unpack with xz -d)"
if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
  echo "build-cuda: the packed binary is over 64 MiB" >&2
  exit 1
fi
say "runs only where the NVIDIA driver (libcuda.so.1, driver >= 580 for this toolkit) is installed"

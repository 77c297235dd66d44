#!/usr/bin/env bash
# Checks a CUDA build of cleandift on a GPU machine without network, and
# prints ONE table: parity of every tap of both tiny fixtures per dtype
# against the CPU f32 reference, and the time of our passes beside
# diffusers' on the same GPU (ratio = diffusers / ours: above 1, we are faster).
#
#   scripts/gpu-check.sh [options]
#
#   --bin PATH       the cleandift binary, packed (.xz/.zst) or not
#                    (default: dist/cleandift-cuda-sm90.xz from scripts/build-cuda.sh;
#                    with --device cpu also target/{release,debug}/cleandift)
#   --fixtures DIR   the repository's tests/fixtures (default: beside this script)
#   --device D       cuda (default) | cuda:N | cpu (a dry run of the same steps)
#   --dtypes LIST    default f32,bf16,f16 (f32,f16 with --device cpu: no bf16
#                    forward runs on candle's CPU backend yet, issue 13)
#   --small          tiny shapes (tiny-sd21 at 64 px, batch 1 and 2) for a dry run
#   --python PATH    the Python with torch for the diffusers timings (default python3)
#   --wheels DIR     install diffusers from wheels in DIR first (pip --no-index)
#   --no-peer        skip diffusers
#   --budget SEC     stop starting new steps after SEC seconds (default 450)
#
# Needs: the NVIDIA driver >= 580 (the binary's kernels are PTX from CUDA 13.0),
# xz or zstd for a packed binary. Runs in about 6-7 minutes on an H100.
# Exit status: 0 when every step ran and every parity check passed.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin=""
fixtures="$repo/tests/fixtures"
device="cuda"
dtypes=""
small=0
python="python3"
wheels=""
peer=1
budget=450

die() { printf 'gpu-check: %s\n' "$*" >&2; exit 2; }
say() { printf 'gpu-check: %s\n' "$*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="${2:?--bin needs a path}"; shift 2 ;;
    --fixtures) fixtures="${2:?--fixtures needs a folder}"; shift 2 ;;
    --device) device="${2:?--device needs cuda or cpu}"; shift 2 ;;
    --dtypes) dtypes="${2:?--dtypes needs a list}"; shift 2 ;;
    --small) small=1; shift ;;
    --python) python="${2:?--python needs a path}"; shift 2 ;;
    --wheels) wheels="${2:?--wheels needs a folder}"; shift 2 ;;
    --no-peer) peer=0; shift ;;
    --budget) budget="${2:?--budget needs seconds}"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
case "$device" in cpu|cuda|cuda:[0-9]*) ;; *) die "--device must be cpu, cuda or cuda:N, got '$device'" ;; esac
case "$budget" in ''|*[!0-9]*) die "--budget must be whole seconds, got '$budget'" ;; esac
[ -f "$fixtures/tiny-sd15/reference.safetensors" ] && [ -f "$fixtures/tiny-sd21/reference.safetensors" ] \
  || die "no fixtures at $fixtures: pass --fixtures with the repository's tests/fixtures folder"
if [ -z "$dtypes" ]; then
  if [ "$device" = cpu ]; then dtypes="f32,f16"; else dtypes="f32,bf16,f16"; fi
fi
IFS=',' read -r -a dtype_list <<< "$dtypes"
for dt in "${dtype_list[@]}"; do
  case "$dt" in f32|bf16|f16) ;; *) die "--dtypes: '$dt' is not f32, bf16 or f16" ;; esac
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
over_budget() { [ "$(elapsed)" -ge "$budget" ]; }
failures=0
notes=()
note() { notes+=("$*"); say "$*"; }
# The line that says what went wrong: cleandift's "Error: ...", else the last.
why() { printf '%s\n' "$1" | grep -m1 -E '^(Error|error|Traceback|RuntimeError|torch)' || printf '%s\n' "$1" | tail -1; }
export RUST_BACKTRACE=0

# 1. The binary.
if [ -z "$bin" ]; then
  for cand in "$repo/dist/cleandift-cuda-sm90.xz" "$repo/dist/cleandift-cuda-sm90.zst" "$repo/dist/cleandift-cuda-sm90"; do
    [ -f "$cand" ] && { bin="$cand"; break; }
  done
fi
if [ -z "$bin" ] && [ "$device" = cpu ]; then
  for cand in "${CARGO_TARGET_DIR:-$repo/target}/release/cleandift" "${CARGO_TARGET_DIR:-$repo/target}/debug/cleandift"; do
    [ -x "$cand" ] && { bin="$cand"; break; }
  done
fi
[ -n "$bin" ] || die "no binary: build one with scripts/build-cuda.sh (dist/cleandift-cuda-sm90.xz) and copy it here, or pass --bin PATH"
[ -f "$bin" ] || die "--bin $bin: no such file"
case "$bin" in
  *.xz)  command -v xz >/dev/null || die "xz is needed to unpack $bin (or unpack it elsewhere and pass --bin)"
         xz -dc "$bin" > "$work/cleandift" || die "cannot unpack $bin: copy it again (it may be truncated)"
         chmod +x "$work/cleandift"; bin="$work/cleandift" ;;
  *.zst) command -v zstd >/dev/null || die "zstd is needed to unpack $bin"
         zstd -qdc "$bin" > "$work/cleandift" || die "cannot unpack $bin: copy it again (it may be truncated)"
         chmod +x "$work/cleandift"; bin="$work/cleandift" ;;
esac
say "binary: $bin"

# 2. The driver.
if [ "$device" != cpu ]; then
  command -v nvidia-smi >/dev/null \
    || die "nvidia-smi not found: this machine has no NVIDIA driver; run on a GPU machine, or dry-run with --device cpu --small"
  gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)" \
    || die "nvidia-smi failed ($gpu): the driver is not loaded; check 'nvidia-smi' by hand"
  driver="$(printf '%s' "$gpu" | awk -F', ' '{print $2}')"
  major="${driver%%.*}"
  case "$major" in ''|*[!0-9]*) die "cannot read the driver version from nvidia-smi: '$gpu'" ;; esac
  [ "$major" -ge 580 ] || die "driver $driver is older than 580: the kernels are PTX from CUDA 13.0; update the driver, or rebuild with a toolkit for this driver (scripts/build-cuda.sh pins 13.0)"
  say "GPU: $gpu"
else
  gpu="cpu (dry run)"
fi
# The CUDA build also links the CUDA 13 runtime libraries (libcudart.so.13,
# libcublas.so.13, libcurand.so.10), which a driver install does not bring.
# PyTorch's CUDA 13 wheels carry them (site-packages/nvidia/cu13/lib); so do
# /usr/local/cuda-13*/lib64 and the toolkit venv of scripts/build-cuda.sh.
if command -v ldd >/dev/null && ldd "$bin" 2>/dev/null | grep -q 'libcudart.so.13 => not found'; then
  found=""
  for d in $("$python" -c 'import site, glob; [print(p) for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/cu13/lib")]' 2>/dev/null) \
           /usr/local/cuda-13*/lib64 /usr/local/cuda/lib64 "$HOME/.cache/cleandift/cuda-venv"/lib/python3*/site-packages/nvidia/cu13/lib; do
    if [ -e "$d/libcudart.so.13" ] && [ -e "$d/libcublas.so.13" ]; then found="$d"; break; fi
  done
  if [ -n "$found" ]; then
    export LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "CUDA 13 runtime libraries from $found"
  fi
fi
if ! out="$("$bin" --version 2>&1)"; then
  case "$out" in
    *libcuda.so*) die "the binary cannot load libcuda.so.1 ($out): a CUDA build runs only where the NVIDIA driver is installed" ;;
    *libcudart.so*|*libcublas*|*libcurand*) die "the binary cannot load the CUDA 13 runtime ($out): install the wheels nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 into '$python' (pip install --no-index --find-links DIR ...) or pass --python to a Python whose torch is built for CUDA 13" ;;
    *) die "the binary does not start: $out" ;;
  esac
fi

# 3. Shapes and repetitions.
if [ "$small" = 1 ]; then
  model="tiny-sd21"; res="64"; batches="1,2"; reps=1; peer_config=(--config "$fixtures/tiny-sd21")
else
  model="sd21"; res="512,768"; batches="1,8"; reps=3; peer_config=()
fi
[ "$device" = cpu ] && [ "$small" = 0 ] && say "full SD2.1 shapes on the CPU take hours: add --small for a dry run"

# 4. Parity of every tap, per dtype.
declare -A parity_err parity_ok
for dt in "${dtype_list[@]}"; do
  if over_budget; then note "parity $dt skipped: over the ${budget}s budget"; failures=$((failures + 1)); continue; fi
  say "parity $dt"
  out="$("$bin" bench parity --fixtures "$fixtures" --device "$device" --dtype "$dt" 2>&1)"
  rc=$?
  printf '%s\n' "$out" | grep -E '^parity ' >&2
  parity_err[$dt]="$(printf '%s\n' "$out" | awk '/^parity worst/ {print $3}')"
  if [ $rc -eq 0 ]; then
    parity_ok[$dt]="ok"
  else
    parity_ok[$dt]="FAIL"; failures=$((failures + 1))
    note "parity $dt failed: $(why "$out"). Rerun '$bin bench parity --device $device --dtype $dt --fixtures $fixtures' and compare with --device cpu"
  fi
done

# 5. Our passes: one process per pass and dtype, every shape in it.
declare -A ours theirs
for what in unet-us6 unet-full vae; do
  for dt in "${dtype_list[@]}"; do
    if over_budget; then note "ours $what $dt skipped: over the ${budget}s budget"; failures=$((failures + 1)); continue; fi
    say "ours $what $dt"
    out="$("$bin" bench "$what" --model "$model" --res "$res" --batch "$batches" --reps "$reps" --device "$device" --dtype "$dt" 2>&1)"
    if [ $? -ne 0 ]; then
      failures=$((failures + 1))
      note "ours $what $dt failed: $(why "$out"). If out of memory, rerun that pass by hand with a smaller --batch"
      continue
    fi
    # "<What> <model> res R batch B <dev> <dtype>: best of N T s (runs: ...)"
    while read -r r b t; do ours["$what $r $b $dt"]="$t"; done < <(
      printf '%s\n' "$out" | awk '/best of/ {for (i = 1; i <= NF; i++) { if ($i == "res") r = $(i+1); if ($i == "batch") b = $(i+1); if ($i == "of") t = $(i+2) } sub(/s$/, "", t); print r, b, t}')
  done
done

# 6. diffusers on the same device.
if [ "$peer" = 1 ]; then
  if ! "$python" -c 'import torch' 2>/dev/null; then
    note "diffusers skipped: '$python' has no torch (pass --python PATH to a Python with torch)"
    peer=0
  else
    if [ -n "$wheels" ]; then
      say "installing diffusers from $wheels"
      "$python" -m pip install -q --no-index --find-links "$wheels" diffusers \
        || note "pip could not install diffusers from $wheels: the folder needs diffusers' wheel and its dependencies (huggingface_hub, safetensors, ...)"
    fi
    if ! "$python" -c 'import diffusers' 2>/dev/null; then
      note "diffusers skipped: not importable in '$python' (pass --wheels DIR with the diffusers wheel and its dependencies)"
      peer=0
    elif [ "$device" != cpu ] && ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      note "diffusers skipped: torch in '$python' sees no GPU (a CPU-only torch?)"
      peer=0
    fi
  fi
fi
if [ "$peer" = 1 ]; then
  for what in unet-us6 unet-full vae; do
    for dt in "${dtype_list[@]}"; do
      if over_budget; then note "diffusers $what $dt skipped: over the ${budget}s budget"; continue; fi
      say "diffusers $what $dt"
      out="$("$python" "$here/peer/diffusers_bench.py" "$what" "$res" "$batches" "$dt" "$device" --reps "$reps" "${peer_config[@]}" 2>&1)"
      if [ $? -ne 0 ]; then
        note "diffusers $what $dt failed: $(printf '%s\n' "$out" | grep -E 'Error' | tail -1)"
        continue
      fi
      # "peer PASS RES BATCH DTYPE DEVICE SECONDS"
      while read -r r b t; do theirs["$what $r $b $dt"]="$t"; done < <(
        printf '%s\n' "$out" | awk '$1 == "peer" {print $3, $4, $7}')
    done
  done
fi

# 7. The table.
ms() { [ -n "${1:-}" ] && awk -v t="$1" 'BEGIN {printf "%.1f", t * 1000}' || printf '-'; }
echo
echo "## gpu-check: $gpu, $(date -u +%Y-%m-%dT%H:%MZ), $(elapsed) s"
echo
echo "| check | shape | dtype | ours | diffusers | ratio |"
echo "|---|---|---|---|---|---|"
for dt in "${dtype_list[@]}"; do
  echo "| parity (worst tap, 2 fixtures) | tiny | $dt | ${parity_err[$dt]:--} | - | ${parity_ok[$dt]:-skipped} |"
done
IFS=',' read -r -a res_list <<< "$res"
IFS=',' read -r -a batch_list <<< "$batches"
for what in unet-us6 unet-full vae; do
  for r in "${res_list[@]}"; do
    for b in "${batch_list[@]}"; do
      for dt in "${dtype_list[@]}"; do
        k="$what $r $b $dt"
        o="${ours[$k]:-}"; t="${theirs[$k]:-}"
        ratio="-"
        if [ -n "$o" ] && [ -n "$t" ]; then ratio="$(awk -v o="$o" -v t="$t" 'BEGIN {printf "%.2fx", t / o}')"; fi
        echo "| $what ms | $model ${r}px b$b | $dt | $(ms "$o") | $(ms "$t") | $ratio |"
      done
    done
  done
done
echo
echo "ratio = diffusers time / ours (above 1: ours is faster). Targets: unet-us6 768px b1 bf16 <= 40 ms on an H100, ratio >= 1.0."
for n in "${notes[@]}"; do echo "note: $n"; done
if [ "$failures" -gt 0 ]; then
  echo "gpu-check: $failures step(s) failed (see the notes above)"
  exit 1
fi
echo "gpu-check: all steps passed"

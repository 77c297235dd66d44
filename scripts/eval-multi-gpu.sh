#!/usr/bin/env bash
# One evaluation over the GPUs of one machine: shard i of N on cuda:i, all
# at once (xargs -P), then the merge. Rerunning the same command continues
# every shard where it stopped; a shard that failed makes the script stop
# before the merge.
#
#   scripts/eval-multi-gpu.sh OUT_DIR [eval options...]
#   scripts/eval-multi-gpu.sh pck --model sd21 --dataset spair:/data/SPair-71k \
#       --prompt 'a photo of a {category}'
#
# GPUS (default: as many as nvidia-smi lists) sets N; CLEANDIFT the binary.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
out="$1"
shift
CLEANDIFT="${CLEANDIFT:-cleandift}"
gpus="${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}"
if [ "$gpus" -lt 1 ]; then
    echo "eval-multi-gpu: no GPU found (set GPUS=N to choose the count)" >&2
    exit 2
fi
mkdir -p "$out"
export CLEANDIFT out gpus
# Each shard's log goes to OUT/shard-i.log.
seq 0 $((gpus - 1)) | xargs -P "$gpus" -I{} sh -c '
    "$CLEANDIFT" eval "$@" --device "cuda:{}" --shard "{}/$gpus" --out "$out/shard-{}" \
        > "$out/shard-{}.log" 2>&1 || { echo "shard {} failed: see $out/shard-{}.log" >&2; exit 255; }
' sh "$@"
dirs=()
for i in $(seq 0 $((gpus - 1))); do dirs+=("$out/shard-$i"); done
exec "$CLEANDIFT" eval merge "${dirs[@]}" --out "$out/merged"

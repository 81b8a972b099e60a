#!/usr/bin/env bash
# On the GPU machine (copied into device-out/bench/ by scripts/gpu-bench.sh): where a decode
# step's GPU time goes, kernel by kernel, from Nsight Compute.
#
#   bash device-out/bench/profile_decode.sh MODEL_DIR BATCH...
#
# For each batch size: `tandem bench decode` (5 timed steps, CUDA graphs off so every kernel is
# its own launch) under `ncu` reading only each kernel's duration, with the clocks and caches
# left as they are (--clock-control none, --cache-control none: METHOD.md); then
# ncu_summary.py prints each kernel's time per step and share of the step. The CSVs land in
# $OUT (or /tmp).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="${OUT:-/tmp}"
model=$1; shift
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[[ -x "$ncu" ]] || { echo "profile_decode: no ncu here" >&2; exit 1; }
for batch in "$@"; do
  csv="$log/ncu-decode-b$batch.csv"
  timeout -k 5 "${PROFILE_SECS:-90}" "$ncu" --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
    --log-file "$csv" \
    "$here/../bin/tandem" bench decode --device cuda --model "$model" --batch "$batch" \
    --context 1024 --steps 5 --no-cuda-graphs >"$log/ncu-decode-b$batch.log" 2>&1
  echo "== ncu decode batch $batch: rc $?"
  grep -E '^ +[0-9]+ +[0-9]+ ' "$log/ncu-decode-b$batch.log" || tail -n 5 "$log/ncu-decode-b$batch.log"
  python3 "$here/ncu_summary.py" "$csv" 8  # 3 warm-up + 5 timed steps
done

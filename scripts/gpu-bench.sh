#!/usr/bin/env bash
# Prepares, HERE, the GPU throughput comparison with transformers' continuous batching, in the
# carried folder device-out/ (run scripts/gpu-check.sh first: it builds device-out/bin/tandem).
# The GPU machine has PyTorch and transformers but no Rust and no network, so the models are made
# THERE: random bf16 weights with the published Llama-3.2-1B and Qwen3-0.6B configurations
# (scripts/bench/make_random_model.py); both engines load the same files and replay the same
# trace (prompt lengths uniform in [128, 1024], 256 output tokens, EOS ignored, greedy).
#
#   bash scripts/gpu-bench.sh [NUM_REQUESTS]        (default 512)
#
# then, in the same device call as the parity check:
#
#   run(command="bash device-out/run.sh; bash device-out/bench/run.sh llama-3.2-1b qwen3-0.6b",
#       carry=["device-out"], timeout_s=570)
#
# It prints one table: output tokens/s of tandem (overlap on, and --no-overlap) and of
# transformers generate_batch, the ratio tandem / transformers, and the executor's idle time
# between steps (bench throughput --timeline; the CSVs come back in $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
out=device-out
n=${1:-512}
[[ -x "$out/bin/tandem" ]] || { echo "gpu-bench: run scripts/gpu-check.sh first" >&2; exit 1; }
mkdir -p "$out/bench"
cp scripts/bench/make_random_model.py scripts/bench/transformers_gpu.py "$out/bench/"
python3 - "$n" >"$out/bench/trace.jsonl" <<'PY'
import json, random, sys
rng = random.Random(0)
for _ in range(int(sys.argv[1])):
    print(json.dumps({"arrival": 0.0, "prompt_len": rng.randint(128, 1024), "output_len": 256}))
PY

cat >"$out/bench/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine (written by scripts/gpu-bench.sh): bash device-out/bench/run.sh ARCH...
# Time limits per run: TANDEM_SECS (150), HF_SECS (200); NO_OVERLAP_RUN=0 skips --no-overlap.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="${OUT:-/tmp}"
source "$here/../cuda-libs.sh"
export PYTHONUNBUFFERED=1
tandem="$here/../bin/tandem"
trace="$here/trace.jsonl"
rows=()
rate() { grep -o '[0-9.]* output tokens/s' "$1" | cut -d' ' -f1; }
for arch in "${@:-llama-3.2-1b}"; do
  dir=/tmp/tandem-models/$arch
  python3 "$here/make_random_model.py" "$arch" "$dir" 2>&1 | tail -n 2
  # KV capacity for every request at once (prompt <= 1024 + 256 output tokens).
  common=(bench throughput --device cuda --model "$dir" --trace "$trace" --max-num-seqs 256
          --max-batch-tokens 8192 --num-kv-blocks 24576)
  timeout "${TANDEM_SECS:-150}" "$tandem" "${common[@]}" --timeline "$log/timeline-$arch.csv" \
    >"$log/tandem-$arch.log" 2>&1
  tail -n 4 "$log/tandem-$arch.log"
  if [[ "${NO_OVERLAP_RUN:-1}" == 1 ]]; then
    timeout "${TANDEM_SECS:-150}" "$tandem" "${common[@]}" --no-overlap \
      >"$log/tandem-noov-$arch.log" 2>&1
    tail -n 2 "$log/tandem-noov-$arch.log"
  fi
  timeout "${HF_SECS:-200}" python3 "$here/transformers_gpu.py" "$dir" "$trace" >"$log/hf-$arch.log" 2>&1
  tail -n 2 "$log/hf-$arch.log"
  t=$(rate "$log/tandem-$arch.log"); o=$(rate "$log/tandem-noov-$arch.log")
  h=$(awk '/^transformers generate_batch/ {print $5}' "$log/hf-$arch.log")
  idle=$(grep -o 'idle between steps [0-9.]*%' "$log/tandem-$arch.log" | awk '{print $4}')
  rows+=("$arch|${t:--}|${o:--}|${h:--}|${idle:--}")
done
echo
printf '%-14s %16s %16s %16s %8s %10s\n' model "tandem tok/s" "no-overlap" "transformers" ratio "idle"
for r in "${rows[@]}"; do
  IFS='|' read -r a t o h idle <<<"$r"
  ratio=$(python3 -c "import sys; t,h=sys.argv[1:]; print(f'{float(t)/float(h):.2f}')" "$t" "$h" 2>/dev/null || echo -)
  printf '%-14s %16s %16s %16s %8s %10s\n' "$a" "$t" "$o" "$h" "$ratio" "$idle"
done
RUN
chmod +x "$out/bench/run.sh"
du -sh "$out"
echo "gpu-bench: ready; device command: bash $out/run.sh; bash $out/bench/run.sh llama-3.2-1b qwen3-0.6b"

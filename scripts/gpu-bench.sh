#!/usr/bin/env bash
# Prepares, HERE, the GPU throughput comparison with transformers' continuous batching, in the
# carried folder device-out/ (run scripts/gpu-check.sh first: it builds device-out/bin/tandem).
# The GPU machine has PyTorch and transformers but no Rust and no network, so the models are made
# THERE: random bf16 weights with the published Llama-3.2-1B and Qwen3-0.6B configurations
# (scripts/bench/make_random_model.py); both engines load the same files and replay the same
# trace (prompt lengths uniform in [128, 1024], 256 output tokens, EOS ignored, greedy).
#
#   bash scripts/gpu-bench.sh [NUM_REQUESTS]        (default 256)
#
# then one device call of its own, for one model:
#
#   bash device-out/bench/run.sh llama-3.2-1b          # well inside 590 s
#
# Per model, in this order (so what matters most runs first if time runs short): tandem bench
# throughput (overlap on, CUDA graphs on; --timeline), transformers generate_batch with its best
# settings, `tandem bench decode` at batch 1/16/64/256 with 1024 cached tokens, with CUDA graphs,
# with --no-cuda-graphs, with the scalar decode-attention kernel, with every product on cuBLAS
# (no skinny GEMM) and with --no-pdl (no programmatic dependent launch), throughput with --no-cuda-graphs, with --no-overlap, then
# transformers with its defaults. Then two tables: output tokens/s of each run with the ratio
# tandem / the faster transformers run that finished and the executor's idle time between steps;
# and each decode step's median time against its memory roofline (weight + KV bytes read over
# the measured copy bandwidth). A run that timed out shows "timeout", one skipped "skipped",
# any other missing number "-". The logs and the timeline CSV come back in $OUT.
#
# Time budget for one model with the default limits (run.sh's header lists the variables):
# making the model ~20-30 s; each tandem throughput run ~20-40 s (cut at 90 s); each decode
# table ~20 s (cut at 90 s); each transformers run up to 180 s. Whatever the limits, every run is
# cut at what is left of BUDGET_SECS (540 s, i.e. 9 minutes, from the start), and a run that
# would get under 20 s is skipped, so the run ends inside a 600 s limit. With a
# second model in the same call, it gets only what the first left; with the parity check
# (device-out/run.sh, ~2 minutes) in the same call, lower BUDGET_SECS by as much.
set -euo pipefail
cd "$(dirname "$0")/.."
out=device-out
n=${1:-256}
# gpu-check.sh leaves the binaries gzipped (bin/tandem.gz) until a run script restores them.
[[ -e "$out/bin/tandem.gz" || -x "$out/bin/tandem" ]] \
  || { echo "gpu-bench: run scripts/gpu-check.sh first" >&2; exit 1; }
mkdir -p "$out/bench"
cp scripts/bench/make_random_model.py scripts/bench/transformers_gpu.py \
  scripts/bench/bench_summary.py scripts/bench/profile_decode.sh scripts/bench/ncu_summary.py \
  "$out/bench/"
python3 - "$n" >"$out/bench/trace.jsonl" <<'PY'
import json, random, sys
rng = random.Random(0)
for _ in range(int(sys.argv[1])):
    print(json.dumps({"arrival": 0.0, "prompt_len": rng.randint(128, 1024), "output_len": 256}))
PY

cat >"$out/bench/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine (written by scripts/gpu-bench.sh): bash device-out/bench/run.sh ARCH...
# Time limits in seconds: TANDEM_SECS (90) per throughput run, DECODE_SECS (90) per decode table,
# HF_SECS (180) per transformers run, MODEL_SECS (120) to make a model, and BUDGET_SECS (540) for
# everything: no run goes past it. NO_OVERLAP_RUN=0 / NO_GRAPHS_RUN=0 skip those two runs.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="${OUT:-/tmp}"
# shellcheck source=/dev/null  # carried next to bin/ by scripts/gpu-check.sh
source "$here/../cuda-libs.sh"
export PYTHONUNBUFFERED=1
tandem="$here/../bin/tandem"
trace="$here/trace.jsonl"
deadline=$((SECONDS + ${BUDGET_SECS:-540}))
: >"$log/status.tsv"

# limited RUN ARCH SECS CMD...: CMD with its output in $log/RUN-ARCH.log, cut at SECS or at what
# is left of the budget (less a margin for the tables), skipped when under 20 s would be left;
# appends "ARCH RUN ok|failed|timeout|skipped SECONDS" to status.tsv.
limited() {
  local run=$1 arch=$2 secs=$3; shift 3
  local left=$((deadline - SECONDS - 20)) started=$SECONDS rc status
  ((secs > left)) && secs=$left
  if ((secs < 20)); then
    printf '%s\t%s\tskipped\t0\n' "$arch" "$run" >>"$log/status.tsv"
    echo "== $run ($arch): skipped, the budget is spent"
    return 1
  fi
  timeout -k 5 "$secs" "$@" >"$log/$run-$arch.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$arch" "$run" "$status" $((SECONDS - started)) >>"$log/status.tsv"
  echo "== $run ($arch): $status after $((SECONDS - started)) s (limit $secs s)"
  tail -n 3 "$log/$run-$arch.log"
  [[ $status == ok ]]
}

done_archs=()
for arch in "${@:-llama-3.2-1b}"; do
  dir=/tmp/tandem-models/$arch
  # A warm machine keeps the model from an earlier call (the tokenizer is written last).
  if [[ ! -f "$dir/tokenizer.json" ]]; then
    limited model "$arch" "${MODEL_SECS:-120}" python3 "$here/make_random_model.py" "$arch" "$dir"
  fi
  # KV capacity for every request at once (prompt <= 1024 + 256 output tokens).
  common=(bench throughput --device cuda --model "$dir" --trace "$trace" --max-num-seqs 256
          --max-batch-tokens 8192 --num-kv-blocks 24576)
  limited tandem "$arch" "${TANDEM_SECS:-90}" \
    "$tandem" "${common[@]}" --timeline "$log/timeline-$arch.csv"
  # The comparison the issue names comes second, so a short budget still measures it.
  limited hf "$arch" "${HF_SECS:-180}" python3 "$here/transformers_gpu.py" "$dir" "$trace" \
    --max-batch-tokens 8192 --max-requests 256
  # shellcheck disable=SC2054  # the comma-separated batch sizes are one argument
  decode=(bench decode --device cuda --model "$dir" --batch 1,16,64,256 --context 1024)
  limited decode "$arch" "${DECODE_SECS:-90}" "$tandem" "${decode[@]}"
  limited decode-nographs "$arch" "${DECODE_SECS:-90}" "$tandem" "${decode[@]}" --no-cuda-graphs
  # The same steps with the scalar decode-attention kernel: what the tensor-core one gains.
  limited decode-scalar "$arch" "${DECODE_SECS:-90}" "$tandem" "${decode[@]}" \
    --decode-attention scalar
  # Every product on cuBLAS: what the tuned skinny GEMM gains (the first run prints the picks).
  limited decode-cublas "$arch" "${DECODE_SECS:-90}" "$tandem" "${decode[@]}" --gemm cublas
  # Every kernel launched only after the one before has finished: what programmatic dependent
  # launch gains.
  limited decode-nopdl "$arch" "${DECODE_SECS:-90}" "$tandem" "${decode[@]}" --no-pdl
  if [[ "${NO_GRAPHS_RUN:-1}" == 1 ]]; then
    limited tandem-nographs "$arch" "${TANDEM_SECS:-90}" "$tandem" "${common[@]}" --no-cuda-graphs
  fi
  if [[ "${NO_OVERLAP_RUN:-1}" == 1 ]]; then
    limited tandem-noov "$arch" "${TANDEM_SECS:-90}" "$tandem" "${common[@]}" --no-overlap
  fi
  limited hf-defaults "$arch" "${HF_SECS:-180}" \
    python3 "$here/transformers_gpu.py" "$dir" "$trace" --defaults
  done_archs+=("$arch")
  # The tables so far after every model, so a call cut short still reports what finished.
  python3 "$here/bench_summary.py" "$log" "${done_archs[@]}"
done
RUN
chmod +x "$out/bench/run.sh"

cat >"$out/all.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine (written by scripts/gpu-bench.sh): every GPU check and benchmark in one command,
#   bash device-out/all.sh ARCH...
# the checks (device-out/run.sh), then, only if `tandem generate --device cuda` worked (else the
# minutes are kept for a rerun after a fix), the throughput bench on what is left of TOTAL_SECS
# (520). Only a few files come back from a remote run, so every log is packed into $OUT/logs.tgz.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
back="${OUT:-/tmp/tandem-out}"
mkdir -p "$back"
export OUT=/tmp/tandem-logs
rm -rf "$OUT" && mkdir -p "$OUT"
total=${TOTAL_SECS:-520}
timeout -k 5 $((total - 60)) bash "$here/run.sh" 2>&1 | tee "$OUT/check.log"
if grep -qP '^generate_cuda_f32\tok' "$OUT/generate.tsv" 2>/dev/null; then
  BUDGET_SECS=$((total - SECONDS)) bash "$here/bench/run.sh" "$@" 2>&1 | tee "$OUT/bench.log"
else
  echo "all.sh: generate on the GPU failed; the bench is skipped"
fi
tar czf "$back/logs.tgz" -C "$OUT" .
RUN
chmod +x "$out/all.sh"
du -sh "$out"
echo "gpu-bench: ready; device command: bash $out/bench/run.sh llama-3.2-1b (or qwen3-0.6b)"
echo "  or checks and bench in one command, on the GPU machine: bash $out/all.sh llama-3.2-1b (under 590 s)"

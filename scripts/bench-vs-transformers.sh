#!/usr/bin/env bash
# tandem's CPU path against transformers' fastest CPU mode, same machine, same workload:
# 32 concurrent requests x 64 new tokens, greedy, EOS ignored, prompts of 4-12 words, the default
# model in f32. tandem is measured through its HTTP server (`tandem bench serve`), transformers
# with a padded batch `generate` and with its continuous-batching manager; the faster counts.
# Creates target/bench-venv (torch + transformers from PyPI; several GB) unless BENCH_VENV is set.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BENCH_VENV:-target/bench-venv}
if ! "$venv/bin/python" -c "import transformers, torch, gguf, accelerate" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "transformers==5.24.0" "torch==2.15.0" gguf accelerate
fi
cargo build --release --bin tandem
gguf=$(./target/release/tandem generate --prompt hi --max-tokens 1 >/dev/null 2>&1; \
  "$venv/bin/python" -c 'import os; print(os.path.join(os.environ.get("TANDEM_HOME") or os.path.expanduser("~/.cache/tandem"), "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))')

port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./target/release/tandem serve --port "$port" --max-num-seqs 32 >target/bench-serve.log 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
# Warm-up, as the transformers side gets (a 2-token generate of the same batch): first-touch page
# faults of the workspace and the allocator's first growth stay out of the measurement.
./target/release/tandem bench serve --url "http://127.0.0.1:$port" \
  --num-prompts 32 --concurrency 32 --input-len 8 --output-len 2 >/dev/null 2>&1
tandem_out=$(./target/release/tandem bench serve --url "http://127.0.0.1:$port" \
  --num-prompts 32 --concurrency 32 --input-len 8 --output-len 64 2>/dev/null)
kill "$pid"; wait "$pid" 2>/dev/null || true; trap - EXIT
echo "$tandem_out"
tandem_tps=$(echo "$tandem_out" | awk -F: '/[Oo]utput token throughput/ {gsub(/[^0-9.]/, "", $2); print $2; exit}')

hf_out=$("$venv/bin/python" scripts/bench/transformers_cpu.py "$gguf")
echo "$hf_out"
hf_best=$(echo "$hf_out" | awk '{print $5}' | sort -g | tail -1)
echo
printf "%-34s %10s\n" "system" "tokens/s"
printf "%-34s %10s\n" "tandem (HTTP, 32 concurrent)" "$tandem_tps"
echo "$hf_out" | awk '{printf "%-34s %10s\n", "transformers " $2, $5}'
awk -v a="$tandem_tps" -v b="$hf_best" 'BEGIN { printf "ratio tandem / best transformers: %.2f\n", a / b }'

#!/usr/bin/env bash
# Quantised GGUF fixtures of the default model, made by llama.cpp's own quantiser so that tandem's
# K-quant loader and quantised CPU kernels can be judged against files it did not write:
# the default Q4_1 file dequantised to F32 (all metadata kept), then llama-quantize to each type.
# With RANDOM_1B=1 / RANDOM_3B=1, also a random-weight Llama-3.2-1B- / 3B-shaped model (F32,
# then Q4_K_M).
# Not part of the test command. Needs scripts/quant/build-llama-cpp.sh to have run.
#
# Env: QUANT_FIXTURES (default ~/.cache/tandem/quant-fixtures), LLAMA_CPP_DIR, PYTHON (a Python
#      with the gguf package and numpy; default /tmp/qvenv/bin/python), TYPES (default
#      "Q8_0 Q6_K Q5_K_M Q4_K_M"), RANDOM_1B and RANDOM_3B (default 0), THREADS (default 2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
home=${TANDEM_HOME:-$HOME/.cache/tandem}
out=${QUANT_FIXTURES:-$home/quant-fixtures}
quantize=${LLAMA_CPP_DIR:-$home/llama.cpp}/bin/llama-quantize
py=${PYTHON:-/tmp/qvenv/bin/python}
types=${TYPES:-Q8_0 Q6_K Q5_K_M Q4_K_M}
threads=${THREADS:-2}
src=$home/models/SmolLM2-135M-Instruct.Q4_1.gguf

[[ -x "$quantize" ]] || { echo "no $quantize: run scripts/quant/build-llama-cpp.sh" >&2; exit 1; }
[[ -f "$src" ]] || { echo "no $src: run \`tandem generate --prompt hi\` to fetch it" >&2; exit 1; }
"$py" -c 'import gguf, numpy' || { echo "$py lacks the gguf package or numpy" >&2; exit 1; }
mkdir -p "$out"

quantise() { # F32 file, type, output file
  if [[ ! -s "$3" ]]; then
    nice -n 19 "$quantize" "$1" "$3" "$2" "$threads" >"$3.log" 2>&1 \
      || { tail -20 "$3.log" >&2; exit 1; }
  fi
}

f32=$out/SmolLM2-135M-Instruct.F32.gguf
[[ -s "$f32" ]] || "$py" "$here/gguf_fixtures.py" to-f32 "$src" "$f32"
made=("$f32")
for t in $types; do
  quantise "$f32" "$t" "$out/SmolLM2-135M-Instruct.$t.gguf"
  made+=("$out/SmolLM2-135M-Instruct.$t.gguf")
done

# A random Llama-3.2-shaped model: F32, then Q4_K_M. $1: 1b or 3b; $2: GiB free it needs (its F32
# file plus the quantised one, with a margin).
random_model() {
  local avail
  avail=$(df --output=avail -k "$out" | tail -1)
  (( avail > $2 * 1024 * 1024 )) || { echo "under $2 GiB free in $out" >&2; exit 1; }
  local r32=$out/random-llama-$1.F32.gguf
  [[ -s "$r32" ]] || "$py" "$here/gguf_fixtures.py" random-llama "$src" "$r32" "$1"
  quantise "$r32" Q4_K_M "$out/random-llama-$1.Q4_K_M.gguf"
  made+=("$r32" "$out/random-llama-$1.Q4_K_M.gguf")
}
# About 4.7 GiB of F32 plus 0.8 GiB quantised.
[[ "${RANDOM_1B:-0}" == 1 ]] && random_model 1b 8
# About 12 GiB of F32 plus 1.9 GiB quantised.
[[ "${RANDOM_3B:-0}" == 1 ]] && random_model 3b 18

echo "llama.cpp: $(cat "$(dirname "$quantize")/../VERSION" 2>/dev/null || echo unknown)"
"$py" "$here/gguf_fixtures.py" summary "${made[@]}"

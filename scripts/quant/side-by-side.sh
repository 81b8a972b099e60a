#!/usr/bin/env bash
# llama.cpp's llama-server and tandem serving the same GGUF file, one after the other, through the
# same client (scripts/quant/bench_client.py): greedy /v1/completions, EOS ignored, 1 request x 128
# tokens and 32 concurrent x 64 tokens. Prints a Markdown table with each server's throughput and
# peak resident memory (VmHWM). Not part of the test command.
#
#   scripts/quant/side-by-side.sh MODEL.gguf
#
# Env: TANDEM_ARGS (extra flags for tandem serve, e.g. --dtype f32), LLAMA_CPP_DIR, THREADS (llama-server's -t; default 2), PYTHON (default python3),
#      SKIP_LLAMA / SKIP_TANDEM (=1 to leave one out), BENCH_SINGLE_TOKENS / BENCH_CONCURRENT /
#      BENCH_CONCURRENT_TOKENS (the client's sizes, default 128 / 32 / 64).
# llama.cpp's threads meet at a spinning barrier after every graph op, so when other processes
# hold a core, -t 2 on 2 cores can run several times slower than -t 1 and vary run to run: on a
# shared box, compare with THREADS=1 too and check the load average.
set -euo pipefail
[[ $# == 1 && -f "$1" ]] || { echo "usage: $0 MODEL.gguf" >&2; exit 2; }
model=$(realpath "$1")
cd "$(dirname "$0")/../.."
here=scripts/quant
server=${LLAMA_CPP_DIR:-$HOME/.cache/tandem/llama.cpp}/bin/llama-server
py=${PYTHON:-python3}
threads=${THREADS:-2}
slots=32
# Every slot gets ctx/slots positions: enough for the longest prompt plus 128 new tokens.
ctx=$((slots * 256))
name=$(basename "$model")

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pid=
stop() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=
}
trap stop EXIT

wait_ready() { # port
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "server exited before it was ready" >&2; return 1; }
    sleep 0.5
  done
  echo "server not ready after 300 s" >&2
  return 1
}

rows=()
measure() { # label, port, log; the server is $pid; appends a table row to rows
  wait_ready "$2" || { tail -20 "$3" >&2; return 1; }
  local row
  row=$("$py" "$here/bench_client.py" "http://127.0.0.1:$2" "$1")
  local hwm_kb
  hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  stop
  rows+=("$(awk -F'\t' -v kb="$hwm_kb" \
    '{printf "| %s | %s | %s | %.0f |", $1, $2, $3, kb / 1024}' <<<"$row")")
}

if [[ "${SKIP_LLAMA:-0}" != 1 ]]; then
  [[ -x "$server" ]] || { echo "no $server: run $here/build-llama-cpp.sh" >&2; exit 1; }
  port=$(free_port)
  "$server" -m "$model" -np "$slots" -t "$threads" -c "$ctx" --host 127.0.0.1 --port "$port" \
    >target/side-by-side-llama.log 2>&1 &
  pid=$!
  measure "llama.cpp $(awk '{print $2}' "$(dirname "$server")/../VERSION"), $name" \
    "$port" target/side-by-side-llama.log
fi
if [[ "${SKIP_TANDEM:-0}" != 1 ]]; then
  [[ -x target/release/tandem ]] || cargo build --release --bin tandem
  port=$(free_port)
  # shellcheck disable=SC2086 # TANDEM_ARGS is a list of flags
  ./target/release/tandem serve --model "$model" --port "$port" --max-num-seqs "$slots" \
    ${TANDEM_ARGS:-} >target/side-by-side-tandem.log 2>&1 &
  pid=$!
  measure "tandem${TANDEM_ARGS:+ $TANDEM_ARGS}, $name" "$port" target/side-by-side-tandem.log
fi

echo "| server, file | 1 x ${BENCH_SINGLE_TOKENS:-128} tok/s |" \
  "${BENCH_CONCURRENT:-32} x ${BENCH_CONCURRENT_TOKENS:-64} tok/s | peak resident MiB |"
echo "| --- | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"

#!/usr/bin/env bash
# Soaks a real `tandem serve` (on 127.0.0.1; the tiny test model unless --model says otherwise)
# with tests/soak.rs's mix of valid, malformed, oversized and vanishing clients, then stops it
# with SIGTERM.
#
#   bash scripts/soak.sh [--rounds N] [--model PATH|default] [SECONDS] [CLIENTS] [-- SERVE-ARGS...]
#     (default: 1 round of 300 seconds, 8 clients, the tiny test model; SERVE-ARGS go to
#     `tandem serve`, e.g. `-- --num-kv-blocks 128`)
#
# Pass: every valid request answered 200 with a complete body, nothing 5xx, the server back to
# idle (no request running or waiting, KV cache empty), its resident memory once idle within 10%
# of the level after warm-up (its peak within 25%), and a clean drain. The numbers are printed at the end.
#
# --rounds N (3 or more): N rounds of SECONDS each, back to back against the one server, its
# resident memory (VmRSS) read once it reports idle after each round. A leak grows every round;
# allocator retention does not: round 3 must be within 10% of round 2 (round 1 holds the warm-up).
# --model default serves the default model (SmolLM2-135M-Instruct).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=1
model=tests/models/tiny-llama
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --) break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
secs=300
clients=8
[[ $# -gt 0 && $1 != -- ]] && { secs=$1; shift; }
[[ $# -gt 0 && $1 != -- ]] && { clients=$1; shift; }
[[ $# -gt 0 && $1 == -- ]] && shift
serve_args=("$@")
model_args=(--model "$model")
[[ $model == default ]] && model_args=()

cargo build --release --bin tandem
cargo test --release --test soak --no-run

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=target/soak-server.log
./target/release/tandem serve "${model_args[@]}" "${serve_args[@]}" --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT

for _ in $(seq 600); do
  if python3 -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$pid" 2>/dev/null || { echo "the server exited; its log:"; cat "$log"; exit 1; }
  sleep 0.2
done

TANDEM_SOAK_ADDR="127.0.0.1:$port" TANDEM_SOAK_PID="$pid" TANDEM_SOAK_SECS="$secs" \
  TANDEM_SOAK_CLIENTS="$clients" TANDEM_SOAK_ROUNDS="$rounds" \
  cargo test --release --test soak -- --ignored --exact soak_external --nocapture

kill -TERM "$pid"
if ! wait "$pid"; then
  echo "the server did not drain cleanly; its log:"
  tail -n 50 "$log"
  exit 1
fi
trap - EXIT
echo "soak: the server drained and exited 0"

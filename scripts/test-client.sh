#!/usr/bin/env bash
# The OpenAI Python SDK tests (tests/client/) against a real `tandem serve` on the tiny model
# (with tests/client/chat_template.jinja: ChatML that lists tools briefly).
# Creates target/client-venv (openai + pytest from PyPI) on first use, builds the release binary,
# starts the server on a free port, waits for /health, runs pytest, then stops the server with
# SIGTERM and checks that it drains and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/client-venv
# Pinned so a new SDK release cannot change what CI tests.
packages=(openai==3.57.0 pytest==9.2.0)
if ! "$venv/bin/python" -c "import openai, pytest" 2>/dev/null; then
  python3 -m venv "$venv" || {
    echo "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    exit 1
  }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}"
fi

cargo build --release --bin tandem

port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=target/client-server.log
./target/release/tandem serve --model tests/models/tiny-llama --port "$port" \
  --chat-template tests/client/chat_template.jinja >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT

"$venv/bin/python" - "$port" "$pid" <<'PY' || { echo "the server did not become healthy; its log:"; cat "$log"; exit 1; }
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the server exited")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("timed out waiting for /health")
PY

PYTHONDONTWRITEBYTECODE=1 TANDEM_BASE_URL="http://127.0.0.1:${port}/v1" TANDEM_MODEL=tiny-llama \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/client "$@"

# Graceful shutdown: SIGTERM → drain → exit 0.
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
trap - EXIT
if [ "$status" -ne 0 ]; then
  echo "the server exited with status $status after SIGTERM; its log:"
  cat "$log"
  exit 1
fi
echo "client tests passed; the server drained and exited 0 on SIGTERM"

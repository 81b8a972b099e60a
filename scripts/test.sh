#!/usr/bin/env bash
# Every test: the Rust suite, then the OpenAI Python SDK against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked
bash scripts/test-client.sh

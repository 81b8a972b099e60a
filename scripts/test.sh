#!/usr/bin/env bash
# Every test: the Rust suite (with the CUDA kernels run on the CPU by the emulator: the
# kernel-emu feature, which needs a C++ compiler), a short run of every fuzz target, then the
# OpenAI Python SDK against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked --features kernel-emu
bash scripts/fuzz.sh "${TANDEM_FUZZ_SECS:-5}"
bash scripts/test-client.sh

#!/usr/bin/env bash
# tandem's dequantisers against the gguf Python package's on fresh random blocks: a pinned gguf
# in target/dequant-venv writes the blocks and its decoding (scripts/dequant_reference.py) with a
# random seed, printed so a failure can be reproduced with TANDEM_DEQUANT_SEED, then
# tests/dequant_reference.rs compares.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/dequant-venv
if ! "$venv/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'gguf==0.19.0' 'numpy==2.4.6'
fi
seed="${TANDEM_DEQUANT_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
echo "dequant reference seed: $seed"
"$venv/bin/python" scripts/dequant_reference.py "$dir" --seed "$seed"
TANDEM_DEQUANT_REFERENCE="$dir" \
  cargo test --release --locked --features kernel-emu --test dequant_reference

#!/usr/bin/env bash
# The kernel emulator's tests again under more seeds: each seed picks the order blocks and warps
# run in and where a launch's resident blocks interleave (kernels/emu/runtime.cc), so a race
# that one order hides can show under another. Seeds are the arguments (default: $TANDEM_EMU_SEEDS,
# else 2 3 4); tests are $TANDEM_EMU_SEED_TESTS (default: the cheap one, kernel_emu, ~1 min a
# seed on 2 cores; add kernel_emu_attention for the attention kernels, ~2 min a seed).
# (tests/emu_mutants.rs sets its own seeds.)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@")
if [ ${#seeds[@]} -eq 0 ]; then
  read -r -a seeds <<<"${TANDEM_EMU_SEEDS:-2 3 4}"
fi
tests=()
for t in ${TANDEM_EMU_SEED_TESTS:-kernel_emu}; do tests+=(--test "$t"); done
for seed in "${seeds[@]}"; do
  start=$SECONDS
  TANDEM_EMU_SEED=$seed cargo test --release --locked --features kernel-emu "${tests[@]}"
  echo "emulator seed $seed: $((SECONDS - start)) s"
done

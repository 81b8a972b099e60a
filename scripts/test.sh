#!/usr/bin/env bash
# Every test: the Rust suite (with the CUDA kernels run on the CPU by the emulator: the
# kernel-emu feature, which needs a C++ compiler), the dequantisers against the gguf Python
# package on fresh random blocks (scripts/dequant-check.sh), the emulator's kernel tests again
# under more seeds (scripts/emu-seeds.sh), the CUDA backend's tests on the emulated device (the
# pinned nvcc builds the PTX; without a GPU the kernels run in the emulator behind a CPU driver
# and cuBLAS, device/cuda/emulated.rs) with the unit tests of the CUDA-only modules, a short run
# of every fuzz target, then the OpenAI Python SDK against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked --features kernel-emu
bash scripts/dequant-check.sh
bash scripts/emu-seeds.sh
bash scripts/install-cuda-toolchain.sh >/dev/null
# Every test in this run has a device (the emulated one at least) and the default model, so one
# that reports itself skipped did not run: the run fails. (The CUDA tests already panic when the
# device will not open; this catches any other skip, the --lib tests' included.)
cuda_log=target/cuda-tests.log
cargo test --release --locked --features cuda,kernel-emu --lib \
  --test cuda_parity --test cuda_attention --test cuda_model --test cuda_engine --test cuda_cli \
  --test emu_driver_mutants \
  -- --show-output 2>&1 | tee "$cuda_log"
if grep -E '^skipped:' "$cuda_log"; then
  echo "the CUDA tests above were skipped on the emulated device" >&2
  exit 1
fi
bash scripts/fuzz.sh "${TANDEM_FUZZ_SECS:-5}"
bash scripts/test-client.sh

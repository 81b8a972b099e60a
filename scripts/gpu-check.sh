#!/usr/bin/env bash
# Builds, HERE (no GPU needed), everything a GPU machine needs to check the CUDA backend, into one
# ignored folder, device-out/ (kept under 64 MiB): the CUDA test binaries (cuda_parity:
# kernels; cuda_attention: attention; cuda_model: model and device sampler; cuda_engine:
# launch-ahead and graphs), the kernel microbenchmark, the tandem binary, tests/models and
# tests/fixtures, and run.sh. The GPU machine has no Rust and no network; run.sh only runs what
# is carried, finding cuBLAS inside the Python environment's nvidia/ packages.
#
# Then, on a machine with a GPU (about 3-5 minutes including the machine's start), with
# device-out/ copied there:
#
#   bash device-out/run.sh          # well inside 540 s
#
# It prints one table: each parity test's result (every kernel test runs in f32 and bf16), each
# kernel's achieved bandwidth against a device-to-device copy in both dtypes (`_bf16` rows), and
# `tandem generate --device cuda` on tests/models/tiny-llama in both dtypes against the CPU;
# then the worst parity error per op and dtype. Record the tables, the card and the date in
# benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=device-out
export CARGO_TERM_COLOR=never

bash scripts/install-cuda-toolchain.sh >/dev/null

# The test, bench and server executables, located through cargo's JSON messages (a failed build
# fails this script: pipefail).
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test --release --locked --features cuda --test cuda_parity --test cuda_attention \
  --test cuda_model --test cuda_engine --no-run --message-format=json >>"$json"
cargo bench --locked --features cuda --bench kernels --no-run --message-format=json >>"$json"
cargo build --release --locked --features cuda --bin tandem --message-format=json >>"$json"
exes=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("cuda_parity", "cuda_attention", "cuda_model", "cuda_engine", "kernels", "tandem"):
        print(m["target"]["name"], m["executable"])' "$json")

rm -rf "$out"
mkdir -p "$out/bin" "$out/tests"
while read -r name exe; do
  cp "$exe" "$out/bin/$name"
done <<<"$exes"
for f in "$out"/bin/*; do strip --strip-debug "$f" 2>/dev/null || true; done
for b in cuda_parity cuda_attention cuda_model cuda_engine kernels tandem; do
  [[ -x "$out/bin/$b" ]] || { echo "gpu-check: $b binary missing" >&2; exit 1; }
done
# Their embedded PTX (every kernel, two architectures) makes them ~60 MiB together, at the carry
# limit; gzipped they are ~4x smaller. cuda-libs.sh, sourced first by both run scripts on the GPU
# machine, restores them.
gzip -9 -f "$out"/bin/*
cp -r tests/models tests/fixtures "$out/tests/"
cp scripts/cuda-libs.sh "$out/"

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine: the CUDA parity tests, then the kernel microbenchmark, then one table.
# TEST_SECS (120) cuts each test binary, KERNELS_SECS (90) the microbenchmark.
# Written by scripts/gpu-check.sh; run from the repository root as `bash device-out/run.sh`.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="${OUT:-/tmp}"
source "$here/cuda-libs.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
date -u +"date: %Y-%m-%dT%H:%MZ"

# The tests find tests/models and tests/fixtures through CARGO_MANIFEST_DIR, baked in at build
# time as the build machine's checkout (BUILD_ROOT below): provide them there if it is absent.
root="__BUILD_ROOT__"
if [[ ! -d "$root/tests/fixtures" ]]; then
  mkdir -p "$root/tests" && cp -r "$here/tests/models" "$here/tests/fixtures" "$root/tests/"
fi

# The four CUDA test binaries share one log (the table below reads it).
: >"$log/cuda_parity.log"
for t in cuda_parity cuda_attention cuda_model cuda_engine; do
  echo "== $t"
  timeout "${TEST_SECS:-120}" "$here/bin/$t" --test-threads=1 --show-output 2>&1 \
    | tee -a "$log/cuda_parity.log"
done
echo "== kernels bench"
timeout "${KERNELS_SECS:-90}" "$here/bin/kernels" 2>&1 | tee "$log/kernels.log"

echo "== generate"
# Greedy, so f32 on the GPU should print the CPU's text; bf16 may drift after a few tokens.
gen() {  # gen NAME ARGS...: runs tandem generate, records "NAME<TAB>ok|FAILED<TAB>text"
  local name=$1; shift
  local text rc
  text=$(timeout 30 "$here/bin/tandem" generate --model "$here/tests/models/tiny-llama" \
    --prompt "Hello, world!" --max-tokens 16 "$@" 2>>"$log/generate.log"); rc=$?
  local status=ok; [[ $rc -eq 0 && -n "$text" ]] || status=FAILED
  printf '%s\t%s\t%s\n' "$name" "$status" "$(printf %s "$text" | tr '\n\t' '  ' | cut -c1-80)" \
    >>"$log/generate.tsv"
  echo "$name (rc $rc): $text"
}
: >"$log/generate.tsv"; : >"$log/generate.log"
gen generate_cpu --device cpu
gen generate_cuda_f32 --device cuda --dtype f32
gen generate_cuda_bf16 --device cuda --dtype bf16
tail -n 3 "$log/generate.log"

echo "== serve smoke test"
# Default (device sampling, steps launched ahead, CUDA graphs), then the host-sampling path:
# if only the first fails, the launch-ahead path is the culprit.
serve_smoke() {  # serve_smoke NAME PORT ARGS...
  local name=$1 port=$2; shift 2
  timeout 40 "$here/bin/tandem" serve --device cuda --model "$here/tests/models/tiny-llama" \
    --port "$port" "$@" >"$log/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 60); do curl -s "localhost:$port/health" >/dev/null 2>&1 && break; sleep 0.5; done
  local reply
  reply=$(curl -s -m 20 "localhost:$port/v1/completions" -H 'content-type: application/json' \
    -d '{"model":"tiny-llama","prompt":"Hello, world!","max_tokens":8,"temperature":0}' || true)
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  echo "$name: ${reply:-no answer (see $name.log)}" | cut -c1-300
  tail -n 3 "$log/$name.log"
}
serve_smoke serve 18123
serve_smoke serve_host_sampling 18124 --host-sampling --no-cuda-graphs

python3 - "$log/cuda_parity.log" "$log/kernels.log" "$log/generate.tsv" <<'PY'
import re, sys
tests, bench, errs = {}, {}, {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"test (\S+) \.\.\. (\w+)", line)
    if m and tests.get(m.group(1)) != "SKIPPED": tests[m.group(1)] = m.group(2)
    m = re.search(r"skipped: (\S+):", line)
    if m: tests[m.group(1)] = "SKIPPED"
    m = re.match(r"(f32|bf16) (\S+) .*: ok, \d+ elements, max \|err\| (\S+)", line)
    if m:
        key = (m.group(2), m.group(1))
        errs[key] = max(errs.get(key, 0.0), float(m.group(3)))
for line in open(sys.argv[2], errors="replace"):
    if line.startswith("BENCH\t"):
        _, name, shape, us, rate, unit, pct = line.rstrip("\n").split("\t")
        bench[name] = (shape, us, rate + " " + unit, pct)
gen = {}
for line in open(sys.argv[3], errors="replace"):
    parts = line.rstrip("\n").split("\t")
    if len(parts) == 3: gen[parts[0]] = (parts[1], parts[2])
cpu_text = gen.get("generate_cpu", ("", None))[1]
for name, (status, text) in gen.items():
    if name != "generate_cpu" and status == "ok":
        gen[name] = (status, text + ("  [= cpu]" if text == cpu_text else "  [differs from cpu]"))
names = list(dict.fromkeys(list(tests) + list(bench)))
print()
print(f"{'kernel':<26} {'parity':<8} {'shape':<34} {'us':>9} {'rate':>14} {'% copy':>7}")
for n in names:
    shape, us, rate, pct = bench.get(n, ("", "", "", ""))
    print(f"{n:<26} {tests.get(n, '-'):<8} {shape:<34} {us:>9} {rate:>14} {pct:>7}")
for name, (status, text) in gen.items():
    print(f"{name:<26} {status:<8} {text}")
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("model_bf16_vs_cpu:"): print(line.rstrip())
print()
print(f"{'op (parity)':<26} {'f32 max|err|':>14} {'bf16 max|err|':>14}")
for op in dict.fromkeys(k[0] for k in errs):
    f, b = errs.get((op, "f32")), errs.get((op, "bf16"))
    print(f"{op:<26} {f if f is not None else '-':>14} {b if b is not None else '-':>14}")
PY
RUN
sed -i "s|__BUILD_ROOT__|$PWD|" "$out/run.sh"
chmod +x "$out/run.sh"
du -sh "$out" "$out"/bin/*
size=$(du -sm "$out" | cut -f1)
if (( size > 60 )); then echo "gpu-check: $out is ${size} MiB, over the 64 MiB carry limit" >&2; exit 1; fi
echo "gpu-check: ready; on the GPU machine: bash $out/run.sh (under 540 s)"

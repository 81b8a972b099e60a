#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the untrusted-input paths: request bodies,
# chat templates, the GGUF and safetensors readers, incremental detokenization.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 seconds, every target)
#
# scripts/test.sh runs it for a few seconds per target; run it longer by hand. Targets are
# listed in fuzz/Cargo.toml; their bodies are fuzz/src/harness.rs. Each run starts from
# fuzz/seeds/<target> plus what earlier runs found (fuzz/corpus/<target>, not committed).
#
# The toolchain is the stable one: cargo fuzz needs nightly-only flags (-Z sanitizer, sancov),
# which RUSTC_BOOTSTRAP=1 unlocks on stable. Builds are release with debug assertions (overflow
# checks) and AddressSanitizer.
#
# A crash stops the run with the input in fuzz/artifacts/<target>/. Fix it, then copy the input
# to fuzz/regressions/<target>/ with a descriptive name: tests/fuzz_regressions.rs replays it in
# every `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(completions_body chat_body chat_template gguf safetensors detokenize)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

export RUSTC_BOOTSTRAP=1
flags=(--release --debug-assertions)
cd fuzz
cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${secs}s"
  if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"target/fuzz-$t.log" 2>&1; then
    tail -n 60 "target/fuzz-$t.log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/ (see above). Once fixed, copy it to"
    echo "fuzz/regressions/$t/ so tests/fuzz_regressions.rs keeps replaying it."
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "target/fuzz-$t.log" | tr '\n' ' ' || true
  echo
done
echo "fuzz: ${#targets[@]} targets, ${secs}s each: no crash"

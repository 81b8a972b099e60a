#!/usr/bin/env bash
# Per-token mask time of the nested schema in tests/structured_outputs.rs (mask_time_on_the_default_model)
# on a 128,256-token vocabulary: Llama 3's, from the vocabulary-only GGUF that llama.cpp's source
# ships (models/ggml-vocab-llama-bpe.gguf), so nothing is fetched and nothing large enters git.
#
#   bash scripts/bench/mask_time_128k.sh [VOCAB.gguf]
#
# Without an argument it looks in the llama.cpp source tree that scripts/quant/build-llama-cpp.sh
# unpacks under tandem's cache.
set -euo pipefail
cd "$(dirname "$0")/../.."
vocab="${1:-}"
if [ -z "$vocab" ]; then
    home="${TANDEM_HOME:-$HOME/.cache/tandem}"
    vocab=$(find "$home" -name ggml-vocab-llama-bpe.gguf 2>/dev/null | head -n 1)
fi
if [ -z "$vocab" ] || [ ! -f "$vocab" ]; then
    echo "no Llama 3 vocabulary GGUF: pass its path (llama.cpp's models/ggml-vocab-llama-bpe.gguf)" >&2
    exit 1
fi
echo "vocabulary: $vocab"
TANDEM_MASK_VOCAB="$vocab" cargo test --release --test structured_outputs -- --ignored --nocapture mask_time

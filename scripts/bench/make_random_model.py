"""Writes a random-weight model with a real architecture's configuration, for GPU benchmarks
on a machine without network access (scripts/gpu-bench.sh runs it there).

    python make_random_model.py {llama-3.2-1b,qwen3-0.6b} OUT_DIR [NUM_LAYERS]

(NUM_LAYERS shrinks the model, to check the files load without a GPU; the device is the GPU
when there is one.)

The weights are transformers' own initialisation in bf16, saved as safetensors; the tokenizer is
a word-level one with one token per id ("t0", "t1", ...), so every id the model can emit decodes.
Speed depends on shapes, not on what the weights say, and both engines load the same files.
"""

import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM

CONFIGS = {
    # Published configurations of meta-llama/Llama-3.2-1B and Qwen/Qwen3-0.6B.
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=8192),
        bos_token_id=1, eos_token_id=2,
    ),
    "qwen3-0.6b": dict(
        model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_theta=1000000.0, attention_bias=False, bos_token_id=1, eos_token_id=2,
    ),
}


def main():
    name, out = sys.argv[1], sys.argv[2]
    spec = dict(CONFIGS[name])
    if len(sys.argv) > 3:
        spec["num_hidden_layers"] = int(sys.argv[3])
    cfg = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out)
    vocab = {f"t{i}": i for i in range(cfg.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(f"{out}/tokenizer.json")
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params / 1e9:.2f} B parameters -> {out}", flush=True)


if __name__ == "__main__":
    main()

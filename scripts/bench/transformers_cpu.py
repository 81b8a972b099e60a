"""transformers' fastest CPU generation on the tandem CPU benchmark workload.

32 prompts of 4-12 words, 64 new tokens each, greedy, EOS ignored, the default model
(SmolLM2-135M-Instruct GGUF dequantized to float32). Runs a padded batch `generate` and the
continuous-batching manager (`generate_batch`) and prints one line per mode:
    transformers <mode> <output tokens> <seconds> <tokens/s>
Usage: python transformers_cpu.py GGUF_PATH [--modes padded,continuous]
"""

import argparse
import os
import random
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

WORDS = ("the a of to and in is it you that he was for on are with as his they be at one have "
         "this from or had by word but what some we can out other were all there when up use your "
         "how said an each she which do their time if will way about many then them write would "
         "like so these her long make thing see him two has look more day could go come did number "
         "sound no most people my over know water than call first who may down side been now find").split()


def prompts(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--modes", default="padded,continuous")
    args = ap.parse_args()
    torch.manual_seed(0)
    d, f = os.path.split(args.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    texts = prompts(args.num_prompts)
    n_out = args.output_len
    cfg = GenerationConfig(max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False,
                           eos_token_id=None, pad_token_id=tok.pad_token_id or 0)
    for mode in args.modes.split(","):
        if mode == "padded":
            tok.padding_side = "left"
            batch = tok(texts, return_tensors="pt", padding=True)
            with torch.inference_mode():
                model.generate(**batch, generation_config=GenerationConfig(max_new_tokens=2, do_sample=False, pad_token_id=cfg.pad_token_id))
                start = time.perf_counter()
                out = model.generate(**batch, generation_config=cfg)
                secs = time.perf_counter() - start
            tokens = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
        elif mode == "continuous":
            ids = [tok(t)["input_ids"] for t in texts]
            with torch.inference_mode():
                start = time.perf_counter()
                results = model.generate_batch(inputs=ids, generation_config=cfg)
                secs = time.perf_counter() - start
            tokens = sum(len(r.generated_tokens) for r in results.values())
        else:
            raise SystemExit(f"unknown mode {mode}")
        print(f"transformers {mode} {tokens} {secs:.3f} {tokens / secs:.1f}", flush=True)


if __name__ == "__main__":
    main()

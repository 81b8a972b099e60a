"""transformers' continuous batching (`generate_batch`) on the GPU, on a trace of requests.

    python transformers_gpu.py MODEL_DIR TRACE.jsonl [--defaults]

The trace is the simulator's JSONL (prompt_len, output_len per line; arrivals ignored: every
request is submitted at once, as `tandem bench throughput --trace` does). Greedy, EOS ignored,
bf16, its best settings as far as this version exposes them (CUDA graphs warmed up, async
batching where the config has it), or with `--defaults` generate_batch exactly as a user calls
it first (no continuous-batching config at all). Prints one line:
    transformers generate_batch <output tokens> <seconds> <tokens/s>
"""

import argparse
import inspect
import json
import random
import sys
import time

import torch
from transformers import AutoModelForCausalLM, GenerationConfig


def cb_config(limits):
    """The continuous-batching config with every speed option this version has switched on, and
    `limits` (batch limits, as tandem's run gets them) where this version has those fields."""
    try:
        from transformers.generation import ContinuousBatchingConfig
    except ImportError:
        return None, {}
    fields = set(inspect.signature(ContinuousBatchingConfig).parameters)
    if not torch.cuda.is_available():
        return ContinuousBatchingConfig(), {}  # a local smoke run: the GPU options need a GPU
    wanted = {"use_cuda_graph": True, "use_async_batching": True, "async_batching": True, **limits}
    kwargs = {k: v for k, v in wanted.items() if k in fields and v is not None}
    return ContinuousBatchingConfig(**kwargs), kwargs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("trace")
    ap.add_argument("--defaults", action="store_true",
                    help="no use_cuda_graph / use_async_batching overrides")
    # tandem's batch limits, for the best-settings run (transformers 5.17 with graphs and async
    # batching and its own limits ran the host out of memory on 256 requests, 2026-11-27).
    ap.add_argument("--max-batch-tokens", type=int)
    ap.add_argument("--max-requests", type=int)
    args = ap.parse_args()
    model_dir = args.model_dir
    reqs = [json.loads(line) for line in open(args.trace) if line.strip()]
    rng = random.Random(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                 device_map="cuda" if torch.cuda.is_available() else "cpu").eval()
    vocab = model.config.vocab_size
    inputs = [[rng.randrange(100, vocab) for _ in range(r["prompt_len"])] for r in reqs]
    out_len = max(r["output_len"] for r in reqs)
    assert all(r["output_len"] == out_len for r in reqs), "one output length per trace"
    gen = GenerationConfig(max_new_tokens=out_len, min_new_tokens=out_len, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    # The defaults run passes no config, so generate_batch picks whatever this version defaults to.
    limits = {"max_batch_tokens": args.max_batch_tokens,
              "max_requests_per_batch": args.max_requests}
    cb, used = (None, {}) if args.defaults else cb_config(limits)
    print(f"transformers continuous batching options: {used or 'defaults'}", flush=True)
    kwargs = {"continuous_batching_config": cb} if cb is not None else {}
    # No torch.inference_mode() here: generate_batch runs its loop on a thread of its own, where
    # the mode (thread-local) is off, and buffers it made on this thread under the mode then
    # refuse in-place updates (transformers 5.17 on the GPU machine, 2026-11-27). It switches
    # gradients off itself.
    # Warm-up on a few requests: compilation, graph capture, allocator.
    t0 = time.perf_counter()
    model.generate_batch(inputs=inputs[:8], generation_config=gen, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    print(f"warm-up done in {time.perf_counter() - t0:.1f} s", flush=True)
    start = time.perf_counter()
    results = model.generate_batch(inputs=inputs, generation_config=gen, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    secs = time.perf_counter() - start
    tokens = sum(len(r.generated_tokens) for r in results.values())
    expected = out_len * len(inputs)
    if tokens != expected:
        # A failed generation loop returns the requests it lost with no tokens: not a rate.
        sys.exit(f"transformers generated {tokens} of {expected} tokens: failed")
    print(f"transformers generate_batch {tokens} {secs:.3f} {tokens / secs:.1f}", flush=True)


if __name__ == "__main__":
    main()

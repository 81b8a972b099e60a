#!/usr/bin/env python3
"""Writes the walkthrough's sample traces (docs/traces/) in two public formats: an Azure LLM
inference trace (CSV) and a Mooncake trace (JSONL with block hashes). They are synthetic, drawn
from a fixed seed, shaped like what those traces are known for rather than copied from them:
bursty arrivals (a mix of short and long gaps), heavy-tailed prompt lengths, short outputs for
code completion and longer ones for conversation, and (Mooncake) prompts that share leading
blocks through popular system prompts and documents. Large enough (hundreds of requests) that
policies separate on the charts; small enough to commit. Standard library only.

    python3 scripts/sim/sample_traces.py [OUT_DIR]   # default: docs/traces
"""
import datetime
import json
import math
import os
import random
import sys

MOONCAKE_BLOCK = 512  # tokens per hash id, as the Mooncake traces use


def lognormal(rng, median, sigma, lo, hi):
    return max(lo, min(hi, int(round(rng.lognormvariate(math.log(median), sigma)))))


def bursty_gaps(rng, n, mean_s):
    """Gaps whose mean is `mean_s`: 80% short (a burst), 20% long (a lull)."""
    gaps = []
    for _ in range(n):
        if rng.random() < 0.8:
            gaps.append(rng.expovariate(1.0 / (0.25 * mean_s)))
        else:
            gaps.append(rng.expovariate(1.0 / (4.0 * mean_s)))
    return gaps


def azure_code(path, rng, n=600):
    start = datetime.datetime(2023, 11, 16, 18, 0, 0)
    t = 0.0
    with open(path, "w") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for gap in bursty_gaps(rng, n, 2.0):
            t += gap
            ts = start + datetime.timedelta(seconds=t)
            prompt = lognormal(rng, 700, 0.9, 8, 7000)
            output = lognormal(rng, 24, 1.0, 1, 1000)
            # The 2023 release writes seven fractional digits.
            f.write(f"{ts:%Y-%m-%d %H:%M:%S}.{ts.microsecond:06d}0,{prompt},{output}\n")


def mooncake(path, rng, n=600):
    # Shared leading blocks: a few popular prefixes (system prompts, documents), Zipf-like.
    prefixes = []
    next_id = 0
    for _ in range(12):
        blocks = rng.randint(1, 3)
        prefixes.append(list(range(next_id, next_id + blocks)))
        next_id += blocks
    weights = [1.0 / (k + 1) for k in range(len(prefixes))]
    t_ms = 0.0
    with open(path, "w") as f:
        for gap in bursty_gaps(rng, n, 2.0):
            t_ms += gap * 1000.0
            own = lognormal(rng, 300, 1.0, 1, 4000)
            shared = rng.choices(prefixes, weights)[0] if rng.random() < 0.7 else []
            total = len(shared) * MOONCAKE_BLOCK + own
            own_blocks = math.ceil(total / MOONCAKE_BLOCK) - len(shared)
            ids = shared + list(range(next_id, next_id + own_blocks))
            next_id += own_blocks
            output = lognormal(rng, 120, 0.9, 1, 1500)
            rec = {
                "timestamp": int(t_ms),
                "input_length": total,
                "output_length": output,
                "hash_ids": ids,
            }
            f.write(json.dumps(rec) + "\n")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "docs/traces"
    os.makedirs(out, exist_ok=True)
    azure_code(os.path.join(out, "azure_code_sample.csv"), random.Random(2023))
    mooncake(os.path.join(out, "mooncake_sample.jsonl"), random.Random(2025))


if __name__ == "__main__":
    main()

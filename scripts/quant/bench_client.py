"""Throughput client for scripts/quant/side-by-side.sh (standard library only).

  bench_client.py URL LABEL

Against an OpenAI-compatible server at URL: greedy /v1/completions with EOS ignored, first one
request of 128 tokens, then 32 concurrent requests of 64 tokens; tok/s = completion tokens (from
each response's usage) / wall time from the first send to the last answer. Prints
`LABEL<TAB>tok/s 1x128<TAB>tok/s 32x64`. The sizes can be changed (for a big model on a small
machine) with BENCH_SINGLE_TOKENS (128), BENCH_CONCURRENT (32), BENCH_CONCURRENT_TOKENS (64).
"""

import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

SUBJECTS = [
    "the ocean", "a small town", "the history of bread", "mountain weather", "a busy kitchen",
    "the night sky", "old libraries", "electric trains", "a garden in spring", "desert plants",
    "the first computers", "river fishing", "a jazz concert", "winter in the city", "honey bees",
    "paper maps", "a lighthouse keeper", "volcanoes", "a chess match", "the moon landing",
    "coffee farming", "a rainy afternoon", "ancient roads", "a bicycle trip", "clock making",
    "the arctic fox", "a market at dawn", "glass blowing", "the solar system", "a school play",
    "forest fires", "the printing press",
]
FORMS = ["Write a short story about {}.", "Tell me three facts about {}.",
         "Describe {} in simple words for a child.", "Explain why people care about {}."]


def prompts(n):
    return [FORMS[i % len(FORMS)].format(SUBJECTS[i % len(SUBJECTS)]) for i in range(n)]


def model_id(url):
    """The served model's name: tandem refuses requests that name another."""
    with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=60) as resp:
        return json.load(resp)["data"][0]["id"]


def complete(url, model, prompt, max_tokens, timeout=600):
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.load(resp)
    got = answer["usage"]["completion_tokens"]
    if got != max_tokens:
        raise SystemExit(f"asked for {max_tokens} tokens, got {got}: EOS not ignored?")
    return got


def run(url, model, n, max_tokens):
    batch = prompts(n)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        tokens = sum(pool.map(lambda p: complete(url, model, p, max_tokens), batch))
    return tokens / (time.perf_counter() - start)


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    url, label = argv
    model = model_id(url)
    complete(url, model, "Warm up.", 4)
    single = run(url, model, 1, int(os.environ.get("BENCH_SINGLE_TOKENS", 128)))
    concurrent = int(os.environ.get("BENCH_CONCURRENT", 32))
    batched = run(url, model, concurrent, int(os.environ.get("BENCH_CONCURRENT_TOKENS", 64)))
    print(f"{label}\t{single:.1f}\t{batched:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Token agreement between llama.cpp's llama-server and tandem serving the same GGUF file.

  agreement.py LLAMA_URL TANDEM_URL [TOKENS]     (TOKENS: continuation length, default 48)

Both servers must already be running. Each prompt is tokenised once by llama-server (/tokenize,
special tokens added as llama.cpp would) and both servers get those same token ids, so the
comparison is of the models' arithmetic, not of two tokenisers.

- Free run: greedy, EOS ignored, TOKENS tokens from each; how many agree before the first
  difference. llama.cpp's token ids come from its native /completion (return_tokens) and are
  turned into text one by one with /detokenize; tandem's per-token text comes from the legacy
  `logprobs.tokens` array (tandem returns no ids), so tokens are compared as text.
- Teacher-forced top-1: for every position of llama.cpp's continuation, tandem gets the prompt plus
  llama.cpp's tokens before that position and picks 1 greedy token; the count of positions where
  it picks llama.cpp's token. One early divergence cannot hide agreement after it this way.
Standard library only.
"""

import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are",
    "Water boils at 100 degrees Celsius because",
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "A recipe for pancakes:\n1.",
    "In 1969, the first humans to walk on the Moon were",
]


def post(url, path, body, timeout=600):
    req = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def model_id(url):
    with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=60) as resp:
        return json.load(resp)["data"][0]["id"]


def llama_tokens(llama, text):
    return post(llama, "/tokenize", {"content": text, "add_special": True, "parse_special": True})[
        "tokens"
    ]


def llama_piece(llama, token):
    return post(llama, "/detokenize", {"tokens": [token]})["content"]


def llama_continuation(llama, ids, n):
    answer = post(
        llama,
        "/completion",
        {
            "prompt": ids,
            "n_predict": n,
            "temperature": 0,
            "ignore_eos": True,
            "cache_prompt": False,
            "return_tokens": True,
        },
    )
    tokens = answer["tokens"]
    if len(tokens) != n:
        raise SystemExit(f"llama-server gave {len(tokens)} tokens, asked for {n}")
    return tokens


def tandem_pieces(tandem, model, ids, n):
    answer = post(
        tandem,
        "/v1/completions",
        {
            "model": model,
            "prompt": ids,
            "max_tokens": n,
            "temperature": 0,
            "ignore_eos": True,
            "logprobs": 1,
        },
    )
    pieces = answer["choices"][0]["logprobs"]["tokens"]
    if len(pieces) != n:
        raise SystemExit(f"tandem gave {len(pieces)} tokens, asked for {n}")
    return pieces


def agreeing_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    llama, tandem = argv[0], argv[1]
    n = int(argv[2]) if len(argv) == 3 else 48
    model = model_id(tandem)
    total_prefix = total_forced = 0
    print(f"| prompt | free-run agreeing prefix (of {n}) | teacher-forced top-1 (of {n}) |")
    print("| --- | ---: | ---: |")
    with ThreadPoolExecutor(max_workers=8) as pool:
        for prompt in PROMPTS:
            ids = llama_tokens(llama, prompt)
            ref = llama_continuation(llama, ids, n)
            ref_pieces = list(pool.map(lambda t: llama_piece(llama, t), ref))
            ours = tandem_pieces(tandem, model, ids, n)
            prefix = agreeing_prefix(ref_pieces, ours)
            forced = list(
                pool.map(lambda i: tandem_pieces(tandem, model, ids + ref[:i], 1)[0], range(n))
            )
            hits = sum(a == b for a, b in zip(forced, ref_pieces))
            total_prefix += prefix
            total_forced += hits
            print(f"| {json.dumps(prompt[:40])} | {prefix} | {hits} |")
            if prefix < n:
                print(
                    f"|  first difference at {prefix}: llama.cpp {json.dumps(ref_pieces[prefix])}"
                    f", tandem {json.dumps(ours[prefix])} | | |"
                )
    runs = len(PROMPTS)
    print(
        f"\nsummary: free-run agreeing prefix {total_prefix}/{runs * n} tokens "
        f"(mean {total_prefix / runs:.1f} of {n}); teacher-forced top-1 "
        f"{total_forced}/{runs * n} ({100 * total_forced / (runs * n):.1f}%)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

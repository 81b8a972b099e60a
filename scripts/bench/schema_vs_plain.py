"""32 concurrent chat requests with a JSON schema, then the same 32 unconstrained with each
request's max_tokens set to its constrained twin's output length (EOS ignored), against a running
`tandem serve`; prints output tokens per second of each batch, three rounds.

    tandem serve --port 18081 &
    python3 scripts/bench/schema_vs_plain.py [port]
"""

import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

PORT = sys.argv[1] if len(sys.argv) > 1 else "18081"
URL = f"http://127.0.0.1:{PORT}/v1/chat/completions"
SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 40},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 6, "maxItems": 6},
    "rating": {"enum": ["good", "bad", "fine"]}},
    "required": ["title", "tags", "rating"], "additionalProperties": False}
LENS = {}
def one(i, constrained):
    body = {"messages": [{"role": "user", "content": f"Describe book number {i} as JSON."}],
            "max_tokens": LENS.get(i, 64) if not constrained else 64, "temperature": 0}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "b", "schema": SCHEMA}}
    else:
        body["ignore_eos"] = True
    req = urllib.request.Request(URL, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        v = json.load(r)
    if constrained and v["choices"][0]["finish_reason"] == "stop":
        json.loads(v["choices"][0]["message"]["content"])  # a complete answer parses
    if constrained:
        LENS[i] = v["usage"]["completion_tokens"]
    return v["usage"]["completion_tokens"], v["choices"][0]["finish_reason"]
def run(constrained, n=32):
    t = time.time()
    with ThreadPoolExecutor(n) as ex:
        res = list(ex.map(lambda i: one(i, constrained), range(n)))
    dt = time.time() - t
    toks = sum(r[0] for r in res)
    fins = {}
    for r in res: fins[r[1]] = fins.get(r[1], 0) + 1
    return toks, dt, fins
for rnd in range(3):
    for c in (True, False):
        toks, dt, fins = run(c)
        print(f"round {rnd} {'schema' if c else 'plain '}: {toks} tokens in {dt:.2f} s = {toks/dt:.1f} tok/s {fins}", flush=True)

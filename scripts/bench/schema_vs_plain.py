"""32 concurrent chat requests with a JSON schema, then the same 32 unconstrained with each
request's max_tokens set to the rows its constrained twin sampled (EOS ignored), against a running
`tandem serve`; prints sampled tokens per second of each batch (a schema answer that stops also
sampled its end-of-sequence token, which its usage leaves out: it is counted here, so both
batches count the same rows), three rounds, and for the schema batches the masks the server
computed meanwhile and their mean time (from /metrics).

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
METRICS = f"http://127.0.0.1:{PORT}/metrics"
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
    finish = v["choices"][0]["finish_reason"]
    rows = v["usage"]["completion_tokens"] + (1 if constrained and finish == "stop" else 0)
    if constrained:
        LENS[i] = rows
    return rows, finish
def mask_counters():
    """(masks computed, seconds spent computing them) so far, from the server's /metrics."""
    with urllib.request.urlopen(METRICS, timeout=60) as r:
        text = r.read().decode()
    vals = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("tandem:grammar_masks_total", "tandem:grammar_mask_seconds_sum"):
            vals[parts[0]] = float(parts[1])
    return vals.get("tandem:grammar_masks_total", 0.0), vals.get("tandem:grammar_mask_seconds_sum", 0.0)
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
        before = mask_counters()
        toks, dt, fins = run(c)
        after = mask_counters()
        masks, secs = after[0] - before[0], after[1] - before[1]
        note = f", {masks:.0f} masks, {secs / masks * 1e6:.0f} µs each" if masks else ""
        print(f"round {rnd} {'schema' if c else 'plain '}: {toks} tokens in {dt:.2f} s = {toks/dt:.1f} tok/s {fins}{note}", flush=True)

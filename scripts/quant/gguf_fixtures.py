"""GGUF fixture writer for scripts/quant/make-quant-fixtures.sh (needs the gguf package, numpy).

  to-f32 SRC DST        dequantise every tensor of SRC to F32 and copy all of its metadata
  random-llama SRC DST [1b|3b]
                        a random-weight Llama-3.2-1B- (default) or 3B-shaped model in F32,
                        SRC's tokenizer
  summary FILE...       size, sha256 and tensor type counts of each file

Tensors are streamed one at a time (header and tensor table first, then each tensor's data), so a
multi-GB F32 file never sits in memory whole.
"""

import hashlib
import os
import sys
from collections import Counter

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize

# The Llama-3.2 shapes: 1B (hidden 2048, 16 layers, 32 query heads, 8 kv heads, FFN 8192) and
# 3B (hidden 3072, 28 layers, 24 query heads, 8 kv heads, FFN 8192), both with a 128k vocabulary
# and tied embeddings.
LLAMA_SHAPES = {
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256, ctx=131072),
    "3b": dict(hidden=3072, layers=28, heads=24, kv_heads=8, ffn=8192, vocab=128256, ctx=131072),
}
INIT_STD = 0.02


def copy_metadata(reader, writer, skip=()):
    """Copies every key of `reader` into `writer` except the GGUF header's own and `skip`."""
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in skip or name == "general.architecture":
            continue
        vtype = GGUFValueType(field.types[0])
        sub = GGUFValueType(field.types[-1]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)


def as_f32(tensor):
    """A tensor's values as float32, in numpy order (outermost GGML dimension first)."""
    return np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)


def write_streamed(writer, infos, produce):
    """Writes the table for `infos` [(name, numpy shape)], then each tensor from `produce`."""
    for name, shape in infos:
        writer.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, shape in infos:
        data = produce(name, shape)
        if tuple(data.shape) != tuple(shape):
            raise ValueError(f"{name}: made {data.shape}, declared {shape}")
        writer.write_tensor_data(data)
    writer.close()


def to_f32(src, dst):
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)
    copy_metadata(reader, writer, skip={"general.file_type"})
    writer.add_file_type(LlamaFileType.ALL_F32)
    by_name = {t.name: t for t in reader.tensors}
    # numpy order is the reverse of GGML's `ne` order that the reader reports.
    infos = [(t.name, tuple(int(d) for d in reversed(t.shape))) for t in reader.tensors]
    write_streamed(writer, infos, lambda name, _shape: as_f32(by_name[name]))


def padded_vocab(reader, vocab):
    """SRC's tokens, types and merges, padded with unused control tokens up to `vocab`."""
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = list(reader.fields["tokenizer.ggml.token_type"].contents())
    if len(tokens) > vocab:
        raise ValueError(f"source vocabulary {len(tokens)} is larger than {vocab}")
    pad = vocab - len(tokens)
    tokens += [f"<|reserved_{i}|>" for i in range(pad)]
    types += [3] * pad  # 3 = control: never produced by tokenising plain text
    return tokens, types


def random_llama(src, dst, size="1b", seed=0):
    shape = LLAMA_SHAPES[size]
    reader = GGUFReader(src)
    writer = GGUFWriter(dst, "llama")
    keep = {k for k in reader.fields if k.startswith("tokenizer.")}
    keep -= {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"}
    for name in sorted(keep):
        field = reader.fields[name]
        vtype = GGUFValueType(field.types[0])
        sub = GGUFValueType(field.types[-1]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    tokens, types = padded_vocab(reader, shape["vocab"])
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_name(f"random-llama-3.2-{size}-shape")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_context_length(shape["ctx"])
    writer.add_embedding_length(shape["hidden"])
    writer.add_block_count(shape["layers"])
    writer.add_feed_forward_length(shape["ffn"])
    writer.add_head_count(shape["heads"])
    writer.add_head_count_kv(shape["kv_heads"])
    writer.add_rope_dimension_count(shape["hidden"] // shape["heads"])
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape["vocab"])

    h, f, v = shape["hidden"], shape["ffn"], shape["vocab"]
    kv = h // shape["heads"] * shape["kv_heads"]
    # Tied embeddings, as in Llama-3.2-1B and 3B: no output.weight.
    infos = [("token_embd.weight", (v, h))]
    for i in range(shape["layers"]):
        p = f"blk.{i}."
        infos += [
            (p + "attn_norm.weight", (h,)),
            (p + "attn_q.weight", (h, h)),
            (p + "attn_k.weight", (kv, h)),
            (p + "attn_v.weight", (kv, h)),
            (p + "attn_output.weight", (h, h)),
            (p + "ffn_norm.weight", (h,)),
            (p + "ffn_gate.weight", (f, h)),
            (p + "ffn_up.weight", (f, h)),
            (p + "ffn_down.weight", (h, f)),
        ]
    infos.append(("output_norm.weight", (h,)))
    rng = np.random.default_rng(seed)

    def produce(name, shape_):
        if name.endswith("norm.weight"):
            return np.ones(shape_, dtype=np.float32)
        return rng.standard_normal(shape_, dtype=np.float32) * np.float32(INIT_STD)

    write_streamed(writer, infos, produce)


def summary(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    types = Counter(t.tensor_type.name for t in GGUFReader(path).tensors)
    mib = os.path.getsize(path) / (1 << 20)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(types.items()))
    print(f"{os.path.basename(path)}  {mib:.1f} MiB  sha256 {digest.hexdigest()}  [{kinds}]")


def main(argv):
    if len(argv) >= 2 and argv[0] == "summary":
        for path in argv[1:]:
            summary(path)
    elif len(argv) == 3 and argv[0] == "to-f32":
        to_f32(argv[1], argv[2])
    elif len(argv) in (3, 4) and argv[0] == "random-llama" and argv[3:] in ([], ["1b"], ["3b"]):
        random_llama(argv[1], argv[2], *argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

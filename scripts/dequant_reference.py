#!/usr/bin/env python3
"""Writes random GGML blocks and the gguf package's dequantisation of them, the reference that
tests/dequant_reference.rs compares tandem's decoders against.

Output directory layout (all little-endian, no headers):
  index.txt      one line per type: "<TYPE> <n_blocks> <block_size> <block_bytes>"
  <TYPE>.blocks  n_blocks * block_bytes raw block bytes
  <TYPE>.f32     n_blocks * block_size float32 values from gguf.quants.dequantize

Blocks are random bytes with every floating-point field replaced by a finite value (scales of
either sign with magnitude in [1e-3, 1e-1], plain floats in [-2, 2)), so every output is finite.
"""

import argparse
import pathlib

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants

# Byte offsets of each quantised type's f16 scale fields within one block, from the block layouts
# (the order of fields in GGML_QUANT_SIZES' size formulas).
F16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
    "IQ4_NL": [0],
    "IQ4_XS": [0],
}
PLAIN = ["F32", "F16", "BF16"]


def scales(rng: np.random.Generator, n: int) -> np.ndarray:
    magnitude = rng.uniform(1e-3, 1e-1, n)
    sign = rng.choice([-1.0, 1.0], n)
    return (magnitude * sign).astype(np.float16)


def random_blocks(name: str, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    qtype = GGMLQuantizationType[name]
    _, block_bytes = GGML_QUANT_SIZES[qtype]
    if name in PLAIN:
        values = rng.uniform(-2.0, 2.0, n_blocks).astype(np.float32)
        if name == "F32":
            raw = values.view(np.uint8)
        elif name == "F16":
            raw = values.astype(np.float16).view(np.uint8)
        else:  # BF16: the top half of the f32 bits, a finite value for a finite input
            raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return raw.reshape(n_blocks, block_bytes).copy()
    blocks = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    for at in F16_FIELDS[name]:
        blocks[:, at : at + 2] = scales(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path, help="directory to write")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--blocks", type=int, default=64, help="blocks per 256-element type")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for name in PLAIN + list(F16_FIELDS):
        qtype = GGMLQuantizationType[name]
        block_size, block_bytes = GGML_QUANT_SIZES[qtype]
        # The same number of elements for every type: more blocks of the smaller ones.
        n_blocks = args.blocks * 256 // block_size
        blocks = random_blocks(name, n_blocks, rng)
        values = np.asarray(quants.dequantize(blocks, qtype), dtype=np.float32)
        assert values.shape == (n_blocks, block_size), (name, values.shape)
        assert np.isfinite(values).all(), name
        (args.out / f"{name}.blocks").write_bytes(blocks.tobytes())
        (args.out / f"{name}.f32").write_bytes(values.astype("<f4").tobytes())
        index.append(f"{name} {n_blocks} {block_size} {block_bytes}")
    (args.out / "index.txt").write_text("\n".join(index) + "\n")
    print(f"wrote {len(index)} types to {args.out} (seed {args.seed})")


if __name__ == "__main__":
    main()

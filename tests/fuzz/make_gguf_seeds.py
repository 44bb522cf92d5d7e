#!/usr/bin/env python3
"""Writes the seed corpus of gguf_fuzz to tests/fuzz/corpus/gguf/: tiny GGUF files (a few hundred
bytes), valid ones covering every value type, nested arrays, quantized tensors and a non-default
alignment, and invalid ones with one defect each. The names carry no .gguf extension because
.gitignore ignores *.gguf. Deterministic: running it again rewrites the same bytes.

    python3 tests/fuzz/make_gguf_seeds.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")

# ggml type id -> (block size, bytes per block)
TYPES = {0: (1, 4), 1: (1, 2), 8: (32, 34), 12: (256, 144), 30: (1, 2)}


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def s(text):
    b = text.encode()
    return u64(len(b)) + b


def kv_str(key, value):
    return s(key) + u32(8) + s(value)


def kv_u32(key, value):
    return s(key) + u32(4) + u32(value)


def kv_raw(key, typ, payload):
    return s(key) + u32(typ) + payload


def tensor_size(dims, typ):
    n = 1
    for d in dims:
        n *= d
    block, size = TYPES[typ]
    return n // block * size


def gguf(kvs, tensors, version=3, alignment=32, n_kv=None, n_tensors=None, offsets=None, cut=0):
    out = b"GGUF" + u32(version)
    out += u64(len(tensors) if n_tensors is None else n_tensors)
    out += u64(len(kvs) if n_kv is None else n_kv)
    out += b"".join(kvs)
    nxt, end = 0, 0
    for i, (name, dims, typ) in enumerate(tensors):
        off = nxt if offsets is None or offsets[i] is None else offsets[i]
        out += s(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(typ) + u64(off)
        size = tensor_size(dims, typ) if typ in TYPES else 0
        nxt = (off + size + alignment - 1) // alignment * alignment
        end = off + size
    if tensors:
        out += b"\0" * (-len(out) % alignment)
        out += bytes((i * 7) & 0xFF for i in range(end))
    return out[: len(out) - cut] if cut else out


LLAMA = [
    kv_str("general.architecture", "llama"),
    kv_str("general.name", "seed"),
    kv_u32("general.file_type", 7),
    kv_u32("llama.context_length", 64),
    kv_u32("llama.embedding_length", 32),
    kv_u32("llama.attention.head_count", 2),
    kv_raw("tokenizer.ggml.tokens", 9, u32(8) + u64(3) + s("<s>") + s("a") + s("b")),
    kv_str("tokenizer.chat_template", "{{ m }}\n"),
]
TENSORS = [("tok", [32, 2], 8), ("norm", [4], 0)]

SCALARS = [
    kv_raw("u8", 0, b"\x01"),
    kv_raw("i8", 1, b"\xff"),
    kv_raw("u16", 2, b"\x01\x02"),
    kv_raw("i16", 3, b"\xfe\xff"),
    kv_raw("i32", 5, u32(0xFFFFFFFD)),
    kv_raw("f32", 6, struct.pack("<f", 1.5)),
    kv_raw("bool", 7, b"\x01"),
    kv_raw("u64", 10, u64(1 << 40)),
    kv_raw("i64", 11, u64(0xFFFFFFFFFFFFFFFC)),
    kv_raw("f64", 12, struct.pack("<d", -2.25)),
]
NESTED = kv_raw("nested", 9, u32(9) + u64(2) + u32(4) + u64(2) + u32(1) + u32(2) + u32(8) + u64(1) + s("x"))

SEEDS = {
    "valid_llama_q8_0": gguf(LLAMA, TENSORS),
    "valid_v2_scalars_no_tensors": gguf(SCALARS, [], version=2),
    "valid_nested_arrays": gguf([kv_str("general.architecture", "x"), NESTED], [("t", [8], 1)]),
    "valid_align64_bf16": gguf([kv_u32("general.alignment", 64)], [("a", [3], 30), ("b", [256], 12)], alignment=64),
    "valid_empty": gguf([], []),
    "invalid_magic": b"GGML" + gguf(LLAMA, TENSORS)[4:],
    "invalid_version_1": gguf(LLAMA, TENSORS, version=1),
    "invalid_truncated_data": gguf(LLAMA, TENSORS, cut=7),
    "invalid_truncated_kv": gguf(LLAMA, TENSORS)[:60],
    "invalid_absurd_n_kv": gguf(LLAMA, TENSORS, n_kv=1 << 40),
    "invalid_absurd_array": gguf([kv_raw("a", 9, u32(4) + u64(1 << 30))], []),
    "invalid_misaligned_offset": gguf(LLAMA, TENSORS, offsets=[None, 70]),
    "invalid_n_dims_5": gguf([], [("t", [1, 1, 1, 1, 1], 0)]),
    "invalid_ggml_type": gguf([], [("t", [4], 4)]),
    "invalid_alignment_3": gguf([kv_u32("general.alignment", 3)], [("t", [4], 0)]),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        assert len(data) <= 1024, (name, len(data))
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")


if __name__ == "__main__":
    main()

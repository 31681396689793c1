"""Random-weight GGUF files in the shapes and block types real downloads have (for the bench and
the tests: no download, no quantizer). Written with gguf-py, tensor by tensor (a 1B file never
sits in memory whole).

A block's quants are random bytes; its fp16 scales are set so every weight comes out finite and
of a sane size (about `sigma`), which is all a speed or agreement test needs. The Q4_K_M mix
follows llama.cpp's: Q4_K for most matrices, Q6_K for the output head (the embedding when tied)
and for attn_v / ffn_down in the layers its `use_more_bits` picks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from storyloom.engine.byte_pieces import byte_chars
from storyloom.engine.gguf_file import TYPES

# ggml type ids by name, for the mixes below
T = {name: tid for tid, (name, _, _) in TYPES.items()}

TINY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "e d", "Ġ w"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass
class Shape:
    arch: str = "llama"
    dim: int = 256
    ffn: int = 512
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int | None = None  # qwen3 sets it apart from dim / heads
    tied: bool = True
    context: int = 2048
    theta: float = 10000.0
    rope_factors: list[float] | None = None  # Llama 3: the rope_freqs tensor
    eps: float = 1e-5
    extra_meta: dict = field(default_factory=dict)


LLAMA_1B = Shape("llama", dim=2048, ffn=8192, layers=16, heads=32, kv_heads=8, tied=True, context=131072,
                 theta=500000.0)


def _more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_type(mix: str, name: str, layers: int, tied: bool) -> int:
    """The ggml type of matrix `name` in a file quantized as `mix` (q4_k_m, or one type for all)."""
    if mix != "q4_k_m":
        return T[mix.upper()]
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return T["Q6_K"]
    if name.startswith("blk.") and (name.endswith("attn_v.weight") or name.endswith("ffn_down.weight")):
        return T["Q6_K"] if _more_bits(int(name.split(".")[1]), layers) else T["Q4_K"]
    return T["Q4_K"]


def random_blocks(qtype: int, rows: int, cols: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """rows x cols weights of type `qtype` as GGUF stores them: uint8 [rows, bytes per row]
    (F32/F16/BF16 as their own dtype [rows, cols])."""
    if qtype not in TYPES:  # a type the native step does not read (the tests' refusals): any bytes
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        return np.frombuffer(rng.bytes(rows * (cols // block) * size), dtype=np.uint8).reshape(rows, -1)
    name, block, size = TYPES[qtype]
    if name == "F32":
        return (rng.standard_normal((rows, cols), dtype=np.float32) * sigma).astype(np.float32)
    if name == "F16":
        return (rng.standard_normal((rows, cols), dtype=np.float32) * sigma).astype(np.float16)
    if name == "BF16":
        w = (rng.standard_normal((rows, cols), dtype=np.float32) * sigma)
        return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, cols * 2)
    nblocks = rows * (cols // block)
    raw = np.frombuffer(rng.bytes(nblocks * size), dtype=np.uint8).reshape(nblocks, size).copy()
    jitter = rng.uniform(0.5, 1.5, nblocks).astype(np.float32)
    # d such that the weights' spread is about sigma (the std of the random levels, per format)
    d_for = {"Q4_0": 4.6, "Q4_1": 4.6, "Q5_0": 9.2, "Q8_0": 74.0, "Q4_K": 31.5 * 4.6, "Q5_K": 31.5 * 9.2,
             "Q6_K": 74.0 * 18.5}
    d = (sigma / d_for[name]) * jitter
    halves = {"d": d}
    if name == "Q4_1":
        halves["m"] = -7.5 * d
    if name == "Q4_K":
        halves["m"] = 7.5 * d
    if name == "Q5_K":
        halves["m"] = 15.5 * d
    d16 = halves["d"].astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    if name == "Q6_K":
        raw[:, 208:210] = d16
    else:
        raw[:, 0:2] = d16
        if "m" in halves:
            raw[:, 2:4] = halves["m"].astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(rows, (cols // block) * size)


def _tokenizer_fields(source: str | Path) -> list[tuple]:
    """(key, value, type, sub_type) of tokenizer.* metadata: `tiny` (a byte-level BPE of a few
    hundred tokens) or a GGUF file to copy them from (the default model's: real text)."""
    from gguf import GGUFValueType as V

    if str(source) == "tiny":
        tokens = list(byte_chars()) + [m.replace(" ", "") for m in TINY_MERGES] + SPECIALS
        types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
        eos = tokens.index("<|im_end|>")
        return [("tokenizer.ggml.model", "gpt2", V.STRING, None), ("tokenizer.ggml.pre", "gpt2", V.STRING, None),
                ("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
                ("tokenizer.ggml.token_type", types, V.ARRAY, V.INT32),
                ("tokenizer.ggml.merges", TINY_MERGES, V.ARRAY, V.STRING),
                ("tokenizer.ggml.bos_token_id", tokens.index("<|im_start|>"), V.UINT32, None),
                ("tokenizer.ggml.eos_token_id", eos, V.UINT32, None),
                ("tokenizer.ggml.padding_token_id", tokens.index("<|endoftext|>"), V.UINT32, None),
                ("tokenizer.ggml.add_bos_token", False, V.BOOL, None)]
    from gguf import GGUFReader

    reader = GGUFReader(source)
    out = []
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == V.ARRAY else None
        out.append((key, f.contents(), vtype, sub))
    return out


def vocab_size(tokenizer: str | Path) -> int:
    for key, value, *_ in _tokenizer_fields(tokenizer):
        if key == "tokenizer.ggml.tokens":
            return len(value)
    raise ValueError("no tokens in the tokenizer source")


def write(path: Path | str, shape: Shape, mix: str = "q8_0", tokenizer: str | Path = "tiny",
          seed: int = 0, sigma: float = 0.05, overrides: dict[str, int] | None = None) -> Path:
    """Write a random-weight model of `shape` in `mix` to `path`; returns the path.
    `overrides`: tensor name -> ggml type id, for matrices that differ from the mix."""
    overrides = overrides or {}
    from gguf import GGMLQuantizationType, GGUFWriter

    path = Path(path)
    rng = np.random.default_rng(seed)
    fields = _tokenizer_fields(tokenizer)
    vocab = next(len(v) for k, v, *_ in fields if k == "tokenizer.ggml.tokens")
    a = shape.arch
    head_dim = shape.head_dim or shape.dim // shape.heads
    w = GGUFWriter(path, a)
    w.add_string("general.name", f"random {a} {shape.dim}x{shape.layers} {mix}")
    w.add_uint32(f"{a}.block_count", shape.layers)
    w.add_uint32(f"{a}.context_length", shape.context)
    w.add_uint32(f"{a}.embedding_length", shape.dim)
    w.add_uint32(f"{a}.feed_forward_length", shape.ffn)
    w.add_uint32(f"{a}.attention.head_count", shape.heads)
    w.add_uint32(f"{a}.attention.head_count_kv", shape.kv_heads)
    w.add_float32(f"{a}.rope.freq_base", shape.theta)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", shape.eps)
    w.add_uint32(f"{a}.rope.dimension_count", head_dim)
    if shape.head_dim:
        w.add_uint32(f"{a}.attention.key_length", head_dim)
        w.add_uint32(f"{a}.attention.value_length", head_dim)
    w.add_uint32(f"{a}.vocab_size", vocab)
    for key, value in shape.extra_meta.items():
        if isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)
    for key, value, vtype, sub in fields:
        w.add_key_value(key, value, vtype, sub)

    # (name, rows, cols, kind): kind "m" matrix in the mix, "n" norm, "b" bias, "f" rope factors
    q_size, kv_size = shape.heads * head_dim, shape.kv_heads * head_dim
    plan = [("token_embd.weight", vocab, shape.dim, "m")]
    if shape.rope_factors is not None:
        plan.append(("rope_freqs.weight", 1, head_dim // 2, "f"))
    for i in range(shape.layers):
        p = f"blk.{i}."
        plan += [(p + "attn_norm.weight", 1, shape.dim, "n"), (p + "attn_q.weight", q_size, shape.dim, "m"),
                 (p + "attn_k.weight", kv_size, shape.dim, "m"), (p + "attn_v.weight", kv_size, shape.dim, "m"),
                 (p + "attn_output.weight", shape.dim, q_size, "m"), (p + "ffn_norm.weight", 1, shape.dim, "n"),
                 (p + "ffn_gate.weight", shape.ffn, shape.dim, "m"), (p + "ffn_up.weight", shape.ffn, shape.dim, "m"),
                 (p + "ffn_down.weight", shape.dim, shape.ffn, "m")]
        if a == "qwen2":
            plan += [(p + "attn_q.bias", 1, q_size, "b"), (p + "attn_k.bias", 1, kv_size, "b"),
                     (p + "attn_v.bias", 1, kv_size, "b")]
        if a == "qwen3":
            plan += [(p + "attn_q_norm.weight", 1, head_dim, "n"), (p + "attn_k_norm.weight", 1, head_dim, "n")]
    plan.append(("output_norm.weight", 1, shape.dim, "n"))
    if not shape.tied:
        plan.append(("output.weight", vocab, shape.dim, "m"))

    def make(name, rows, cols, kind):
        if kind == "m":
            qtype = overrides.get(name) or mix_type(mix, name, shape.layers, shape.tied)
            return qtype, random_blocks(qtype, rows, cols, rng, sigma)
        if kind == "f":
            return T["F32"], np.asarray(shape.rope_factors, dtype=np.float32)
        scale = 1.0 if kind == "n" else 0.0
        return T["F32"], (scale + 0.1 * rng.standard_normal(cols)).astype(np.float32)

    # tensor infos first (sizes only), then the data one tensor at a time
    for name, rows, cols, kind in plan:
        qtype = (overrides.get(name) or mix_type(mix, name, shape.layers, shape.tied)) if kind == "m" else T["F32"]
        from gguf import GGML_QUANT_SIZES

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        nbytes = rows * (cols // block) * size
        ne = (rows, cols) if rows > 1 else (cols,)
        w.add_tensor_info(name, ne, np.dtype(np.float32), nbytes, raw_dtype=GGMLQuantizationType(qtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, rows, cols, kind in plan:
        _, data = make(name, rows, cols, kind)
        w.write_tensor_data(data)
    w.close()
    return path

"""Decode-step speed on random GGUF blocks of a given shape (no model file needed). Prints JSON.

    python -m storyloom.engine.native.bench_step [--kind q4_k_m|q8_0|smollm2] [--batch 1 4] [--steps 32]

Defaults to a Llama-3.2-1B shape (hidden 2048, ffn 8192, 16 layers, 32 heads, 8 KV heads, vocab
128256, tied Q6_K/Q8_0 embedding). Q4_K_M mixes types as llama.cpp's quantizer does: Q6_K for
attn_v and ffn_down in the first and last eighth of the layers and every third between, Q4_K
elsewhere. smollm2 is the embedded default model as the transformers packer gives it to the step:
SmolLM2-135M's shape (hidden 576, ffn 1536, 30 layers, 9 heads, 3 KV heads, vocab 49152), EXACT
Q4_1 matrices and an EXACT Q8_0 head, in 16-row tiles where the build has them (sl_tile). Beside
each batch's tokens a second, cpu_ms: the median step's CPU time, steadier than the clock when
other programs share the cores. The full-file bench beside llama.cpp is `storyloom bench engine`
on a .gguf."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import time

import numpy as np

from storyloom.engine import native

SCALE_AT = {native.Q4_K: ([0, 2], 3e-4), native.Q6_K: ([208], 6e-5), native.Q8_0: ([0], 8e-4),
            native.Q4_0: ([0], 8e-3), native.Q4_1: ([0, 2], 8e-3), native.Q5_0: ([0], 4e-3),
            native.Q5_K: ([0, 2], 1.5e-4)}


def random_blocks(kind: int, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    n = rows * cols // native.block_size(kind)
    data = rng.integers(0, 256, (n, native.type_bytes(kind)), dtype=np.uint8)
    offsets, size = SCALE_AT[kind]
    for at in offsets:
        data[:, at:at + 2] = (rng.uniform(0.2, 1, n) * size).astype(np.float16).view(np.uint8).reshape(n, 2)
    return data.reshape(rows, -1)


def _more_bits(i: int, n: int) -> bool:  # llama.cpp's use_more_bits
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


SMOLLM2 = dict(layers=30, dim=576, inter=1536, heads=9, kv_heads=3, vocab=49152)


def build(kind: str, layers=16, dim=2048, inter=8192, heads=32, kv_heads=8, vocab=128256, threads=2, lib=None):
    rng = np.random.default_rng(0)
    hd = dim // heads
    keep: list = []
    exact = kind == "smollm2"

    def mat(t, rows, cols, tile=True):
        data = random_blocks(t, rows, cols, rng)
        m = native.Matrix()
        m.type, m.rows, m.cols, m.bias = t, rows, cols, None
        m.flags = native.EXACT if exact else 0
        if exact and tile and lib is not None:  # in 16-row tiles where the build has them, as NativeLlama does
            tiles = np.empty_like(data)
            if lib.sl_tile(t, rows, cols, data.ctypes.data, tiles.ctypes.data):
                data, m.flags = tiles, m.flags | native.TILED
        keep.append(data)
        m.data = data.ctypes.data
        return m

    def vec(n):
        v = rng.uniform(0.5, 1.5, n).astype(np.float32)
        keep.append(v)
        return v.ctypes.data

    arr = (native.Layer * layers)()
    for i in range(layers):
        base = {"q8_0": native.Q8_0, "smollm2": native.Q4_1}.get(kind, native.Q4_K)
        more = base if kind != "q4_k_m" else (native.Q6_K if _more_bits(i, layers) else native.Q4_K)
        L = arr[i]
        L.norm1, L.norm2, L.q_norm, L.k_norm = vec(dim), vec(dim), None, None
        L.q, L.k, L.v, L.o = mat(base, heads * hd, dim), mat(base, kv_heads * hd, dim), mat(more, kv_heads * hd, dim), mat(base, dim, heads * hd)
        L.gate, L.up, L.down = mat(base, inter, dim), mat(base, inter, dim), mat(more, dim, inter)
    m = native.Model()
    m.layers, m.dim, m.intermediate, m.heads, m.kv_heads, m.head_dim = layers, dim, inter, heads, kv_heads, hd
    m.vocab, m.threads, m.eps, m.rope_neox = vocab, threads, 1e-5, 0
    m.embed = mat(native.Q6_K if kind == "q4_k_m" else native.Q8_0, vocab, dim, tile=False)
    # (the default model's is tied too: an EXACT Q8_0 head; tiled, a copy, as the embedding is read by rows)
    m.lm_head = mat(native.Q8_0, vocab, dim) if exact else m.embed
    m.final_norm = vec(dim)
    freq = (1.0 / 500000 ** (np.arange(0, hd, 2) / hd)).astype(np.float32)
    keep.append(freq)
    m.inv_freq = freq.ctypes.data
    m.layer = ctypes.cast(arr, ctypes.POINTER(native.Layer))
    weight_bytes = sum(a.nbytes for a in keep if a.dtype == np.uint8)
    if m.lm_head.data != m.embed.data:  # the step reads the embedding's rows of its tokens alone
        weight_bytes -= m.embed.rows * native.row_bytes(m.embed.type, dim)
    return m, (keep, arr), weight_bytes


def run(lib, m, batch: int, steps: int, start: int = 16) -> tuple[float, float]:
    """(tokens a second by the clock, the median step's milliseconds of this process's CPU time:
    under another program's load, what a step costs without the time it waited for a core)"""
    capacity = start + steps + 1
    cache = np.zeros((m.layers, 2, batch, m.kv_heads, capacity, m.head_dim), np.float32)
    scratch = np.zeros(lib.sl_scratch_floats(ctypes.byref(m), batch, capacity), np.float32)
    logits = np.zeros((batch, m.vocab), np.float32)
    tokens = np.arange(batch, dtype=np.int64) + 5
    def step(pos):
        assert lib.sl_step(ctypes.byref(m), tokens.ctypes.data, batch, pos, cache.ctypes.data, capacity,
                           logits.ctypes.data, scratch.ctypes.data) == 0
    for pos in range(start):  # fill some cache, warm up
        if pos >= start - 2:
            step(pos)
    cpu = []
    t0 = time.perf_counter()
    for pos in range(start, start + steps):
        c0 = time.process_time()
        step(pos)
        cpu.append(time.process_time() - c0)
    return steps / (time.perf_counter() - t0), statistics.median(cpu) * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", nargs="+", default=["q4_k_m", "q8_0"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--level", default=None)
    p.add_argument("--vocab", type=int, default=128256, help="49152: the default model's tokenizer, as make_bench_gguf.py writes")
    args = p.parse_args()
    lib = native.build(native.compiler(), args.level)
    out = {"isa": lib.sl_isa().decode(), "threads": args.threads, "load_average": os.getloadavg()}
    for kind in args.kind:
        shape = SMOLLM2 if kind == "smollm2" else {"vocab": args.vocab}
        m, keep, size = build(kind, threads=args.threads, lib=lib, **shape)
        row = {"weights_gb": round(size / 1e9, 3)}
        for batch in args.batch:
            tok_s, cpu_ms = run(lib, m, batch, args.steps)
            row[f"tok_s_batch{batch}"], row[f"cpu_ms_batch{batch}"] = round(tok_s, 2), round(cpu_ms, 3)
        out[kind] = row
        del keep
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

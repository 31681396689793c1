#!/usr/bin/env python3
"""Write the random-weight GGUFs that `storyloom bench engine --model FILE.gguf` is measured on.

The 1B Llama-3.2 shape (hidden 2048, ffn 8192, 16 layers, 32 heads, 8 KV heads, tied head) with
the default model's tokenizer (so prompts are real text), in Q8_0 and in llama.cpp's Q4_K_M mix.
Random weights: the speed of every kernel is the same as a trained model's; the text is not.

    python scripts/make_bench_gguf.py [--out FOLDER] [--mix q8_0,q4_k_m] [--shape 1b|tiny]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storyloom.engine import default_model, gguf_synth  # noqa: E402
from storyloom.paths import models_dir  # noqa: E402

SHAPES = {"1b": gguf_synth.LLAMA_1B, "tiny": gguf_synth.Shape("llama", dim=256, ffn=512, layers=2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="folder (default: the models folder's bench/)")
    p.add_argument("--mix", default="q8_0,q4_k_m", help="comma-separated: q8_0, q4_k_m, q4_0, q6_k, ...")
    p.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = args.out or models_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = default_model.gguf_file()  # the default model's own GGUF: its tokenizer metadata
    for mix in args.mix.split(","):
        path = out / f"llama-{args.shape}-random-{mix.upper()}.gguf"
        start = time.perf_counter()
        tmp = path.with_suffix(".gguf.part")
        gguf_synth.write(tmp, SHAPES[args.shape], mix, tokenizer=tokenizer, seed=args.seed)
        tmp.replace(path)
        print(f"{path} ({path.stat().st_size / 2**20:.0f} MiB, {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A .gguf model run straight from its file: tokens through the native C step, prompts in torch.

The file is memory-mapped and its matrices stay in their GGUF blocks (Q4_K, Q6_K, Q8_0, ...):
the C step (engine/native) reads them where they lie, one token (or one token per candidate)
per call. Several tokens at once (a prompt, a scored continuation) run layer by layer in torch:
a short prompt's matrices through the C library's sl_matmul (8 rows per pass over the blocks);
a long one (64+ tokens, on CPUs with bf16 units) is compute-bound, so each matrix is dequantized
to bf16 by sl_dequant_bf16 into one reused buffer (whole, or a chunk of rows at a time for an
embedding-sized head) and multiplied by torch: one pass over the weights, and no copy of them
stays in memory. Without the C library (or before it reads GGUF blocks) the same torch forward
runs everything in fp32, dequantizing with gguf-py: correct, slow, what the tests compare with.

Rope: llama/mistral GGUFs have their q/k rows permuted by llama.cpp's converter and rotate
adjacent pairs (GGML's normal mode); qwen2/qwen3 rotate halves (NEOX). The KV cache holds keys
in the file's own row order either way, so the torch and C sides agree on it.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from storyloom.engine import native
from storyloom.engine.fast_llama import KVState, cpu_has_bf16_units, ensure_cache
from storyloom.engine.gguf_file import F32, TYPES, Header, Plan, TensorInfo

log = logging.getLogger(__name__)

BF16_PROMPT_MIN = 64    # prompts this long run their matmuls in bf16 (where the CPU has bf16 units)
MAX_BATCH = 8           # the C step's widest batch (decode_step.c MAXB); wider ones run in torch
WHOLE_ELEMENTS = 24 << 20  # matrices up to this size are dequantized in one call, one matmul
CHUNK_ELEMENTS = 4 << 20   # bigger ones (embedding-sized heads) a chunk of rows at a time


def prompt_threads(limit: int | None = None) -> int:
    """Threads for a prompt's torch work: the cores not taken by other runnable tasks right now
    (/proc/loadavg's running count, which is instantaneous, unlike the load averages). torch's
    OpenMP teams wait for their slowest thread at every operation: a team wider than the free
    cores runs at the speed of a descheduled thread (measured: a 500-token 1B prompt under a load
    of 16 on 2 cores took 71 s on 2 threads, 14 s on 1)."""
    limit = limit or torch.get_num_threads()
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return limit
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or limit)
    return max(1, min(limit, cores - max(0, running - 1)))  # (running counts this thread)


def native_gguf():
    """The C library when it reads GGUF blocks (the interface of native_interface.md), else None."""
    lib = native.library()
    if lib is None or not hasattr(lib, "sl_dequant_bf16") or not hasattr(native.Layer, "_fields_"):
        return None
    if "q_norm" not in {name for name, *_ in native.Layer._fields_}:
        return None
    return lib


class Weight:
    """One tensor's bytes in the memory-mapped file, as rows of blocks."""

    def __init__(self, mm: np.ndarray, info: TensorInfo):
        self.info = info
        self.type, self.rows, self.cols = info.type, info.rows, info.cols
        _, block, size = TYPES[info.type]
        self.row_bytes = (info.cols // block) * size
        self.bytes = mm[info.offset: info.offset + info.nbytes].reshape(self.rows, self.row_bytes)
        self.ptr = self.bytes.ctypes.data

    def numpy_rows(self, rows) -> np.ndarray:
        """fp32 rows (a slice or index array) by gguf-py's reference dequantizer."""
        from gguf import GGMLQuantizationType, quants

        data = self.bytes[rows]
        if self.type == F32:
            return data.view(np.float32).reshape(-1, self.cols)
        if self.type == 1:
            return data.view(np.float16).astype(np.float32).reshape(-1, self.cols)
        return quants.dequantize(data, GGMLQuantizationType(self.type)).reshape(-1, self.cols)

    def vector(self) -> torch.Tensor:
        """A norm or bias as its own fp32 tensor (small; copied out of the file)."""
        return torch.from_numpy(self.numpy_rows(slice(None)).reshape(-1).copy())


class _Layer:
    def __init__(self, w: dict[str, Weight], i: int, plan: Plan):
        p = f"blk.{i}."
        self.norm1, self.norm2 = w[p + "attn_norm.weight"].vector(), w[p + "ffn_norm.weight"].vector()
        self.q, self.k, self.v = w[p + "attn_q.weight"], w[p + "attn_k.weight"], w[p + "attn_v.weight"]
        self.o = w[p + "attn_output.weight"]
        self.gate, self.up, self.down = w[p + "ffn_gate.weight"], w[p + "ffn_up.weight"], w[p + "ffn_down.weight"]
        self.bias = {n: w[p + f"attn_{n}.bias"].vector() for n in "qkv"} if plan.biases else {}
        self.q_norm = w[p + "attn_q_norm.weight"].vector() if plan.qk_norm else None
        self.k_norm = w[p + "attn_k_norm.weight"].vector() if plan.qk_norm else None


def inv_freq(plan: Plan, factors: torch.Tensor | None) -> torch.Tensor:
    """Rope frequencies with the file's scaling: Llama 3's rope_freqs divide them, linear
    scaling divides the positions (the same thing)."""
    d = plan.head_dim
    freq = 1.0 / (plan.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if factors is not None:
        freq = freq / factors.double()
    return (freq / plan.rope_linear).float().contiguous()


class GGUFForward:
    """forward(ids, state) / expand(state, batch) over a memory-mapped GGUF (the interface
    TransformersGenerator's decode loop drives); weights shared, state per generation."""

    def __init__(self, header: Header, plan: Plan, lib=None):
        self.path, self.plan, self.lib = header.path, plan, lib
        self.mm = np.memmap(header.path, dtype=np.uint8, mode="r")
        weights = {name: Weight(self.mm, info) for name, info in header.tensors.items() if info.type in TYPES}
        self.embed = weights["token_embd.weight"]
        self.lm_head = weights.get("output.weight", self.embed)
        self.final_norm = weights["output_norm.weight"].vector()
        factors = weights["rope_freqs.weight"].vector() if plan.rope_factors else None
        self.inv_freq = inv_freq(plan, factors)
        self.layers = [_Layer(weights, i, plan) for i in range(plan.layers)]
        self.heads, self.kv_heads, self.head_dim = plan.heads, plan.kv_heads, plan.head_dim
        self.vocab, self.eps = plan.vocab, plan.eps
        self.bf16 = cpu_has_bf16_units()
        self.kinds = dict(plan.kinds)
        self._structs: dict[str, object] = {}
        self.model = self._native_model() if lib is not None else None

    # -- the C side's view of the weights ------------------------------------------------------
    def _matrix(self, w: Weight, bias: torch.Tensor | None = None):
        m = native.Matrix()
        m.type, m.rows, m.cols = w.type, w.rows, w.cols
        m.data = w.ptr
        m.bias = bias.data_ptr() if bias is not None else None
        self._structs[w.info.name] = m  # sl_matmul's view of it (bias included)
        return m

    def _native_model(self):
        plan = self.plan
        layers = (native.Layer * plan.layers)()
        for i, L in enumerate(self.layers):
            c = layers[i]
            c.norm1, c.norm2 = L.norm1.data_ptr(), L.norm2.data_ptr()
            c.q_norm = L.q_norm.data_ptr() if L.q_norm is not None else None
            c.k_norm = L.k_norm.data_ptr() if L.k_norm is not None else None
            c.q, c.k, c.v = (self._matrix(getattr(L, n), L.bias.get(n)) for n in "qkv")
            c.o, c.gate, c.up, c.down = (self._matrix(getattr(L, n)) for n in ("o", "gate", "up", "down"))
        self._c_layers = layers  # the struct array lives as long as the model
        m = native.Model()
        m.layers, m.dim, m.intermediate = plan.layers, plan.dim, plan.intermediate
        m.heads, m.kv_heads, m.head_dim, m.vocab = plan.heads, plan.kv_heads, plan.head_dim, plan.vocab
        m.threads, m.eps, m.rope_neox = torch.get_num_threads(), float(plan.eps), int(plan.rope_neox)
        m.embed = self._matrix(self.embed)
        m.final_norm = self.final_norm.data_ptr()
        m.inv_freq = self.inv_freq.data_ptr()
        m.lm_head = self._matrix(self.lm_head)
        m.layer = ctypes.cast(layers, ctypes.POINTER(native.Layer))
        return m

    # -- dequantizing ----------------------------------------------------------------------------
    def _dequant(self, w: Weight, start: int, stop: int, out: torch.Tensor, threads: int | None = None) -> None:
        """Rows start..stop of `w` into `out` ([stop-start, cols], fp32 or bf16)."""
        if self.lib is not None:
            fn = self.lib.sl_dequant_bf16 if out.dtype == torch.bfloat16 else self.lib.sl_dequant
            fn(w.type, ctypes.c_void_p(w.ptr + start * w.row_bytes), stop - start, w.cols,
               ctypes.c_void_p(out.data_ptr()), threads or torch.get_num_threads())
        else:
            out.copy_(torch.from_numpy(w.numpy_rows(slice(start, stop))))

    def _rows(self, w: Weight, ids: torch.Tensor) -> torch.Tensor:
        """fp32 rows `ids` of `w` (the embedding lookup)."""
        flat = ids.reshape(-1)
        if self.lib is None:
            return torch.from_numpy(w.numpy_rows(flat.numpy())).reshape(*ids.shape, w.cols)
        out = torch.empty(flat.numel(), w.cols)
        for j, row in enumerate(flat.tolist()):
            # one thread: a row is microseconds of work, less than waking a team for it
            self._dequant(w, row, row + 1, out[j: j + 1], threads=1)
        return out.reshape(*ids.shape, w.cols)

    def linear(self, x: torch.Tensor, w: Weight, wide: bool, bias: torch.Tensor | None = None,
               buffers: dict | None = None) -> torch.Tensor:
        """x @ W^T (+ bias), fp32 out. With the C library, rows go to its kernels, which read
        the blocks where they lie (8 rows per pass over W), unless `wide`: a long prompt is
        compute-bound, and there W is dequantized to bf16 (whole, or a chunk of rows at a time
        for embedding-sized heads) into one buffer kept in `buffers` and multiplied by torch on
        the CPU's bf16 units. Without the library, the same in fp32 (dequantized by gguf-py)."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, w.cols)
        n = flat.shape[0]
        struct = self._structs.get(w.info.name)
        if struct is not None and not wide:
            xin = flat.float().contiguous()
            out = torch.empty(n, w.rows)
            self.lib.sl_matmul(ctypes.byref(struct), xin.data_ptr(), n, out.data_ptr(), torch.get_num_threads())
            return out.view(*lead, w.rows)  # (sl_matmul adds the bias itself)
        dtype = torch.bfloat16 if wide else torch.float32
        xin = flat.to(dtype)
        whole = w.rows * w.cols <= WHOLE_ELEMENTS
        step = w.rows if whole else max(1, min(w.rows, CHUNK_ELEMENTS // w.cols))
        buffers = {} if buffers is None else buffers
        buf = buffers.get(dtype)
        if buf is None or buf.numel() < step * w.cols:
            buf = buffers[dtype] = torch.empty(step * w.cols, dtype=dtype)
        if whole:
            weight = buf[: w.rows * w.cols].view(w.rows, w.cols)
            self._dequant(w, 0, w.rows, weight)
            out = torch.mm(xin, weight.t()).float()
        else:
            out = torch.empty(n, w.rows)
            for start in range(0, w.rows, step):
                stop = min(w.rows, start + step)
                chunk = buf[: (stop - start) * w.cols].view(stop - start, w.cols)
                self._dequant(w, start, stop, chunk)
                out[:, start:stop] = torch.mm(xin, chunk.t())
        if bias is not None:
            out += bias
        return out.view(*lead, w.rows)

    # -- pieces ----------------------------------------------------------------------------------
    def _rope_tables(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(start, start + count, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq[None, :]  # [T, head_dim / 2]
        return angles.cos(), angles.sin()

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, T, heads, D] rotated; cos/sin [T, D/2]."""
        cos, sin = cos[:, None, :], sin[:, None, :]
        if self.plan.rope_neox:  # halves
            half = x.shape[-1] // 2
            a, b = x[..., :half], x[..., half:]
            return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
        pairs = x.unflatten(-1, (-1, 2))  # adjacent pairs
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, weight.shape, weight, self.eps)

    def _ensure(self, state: KVState, batch: int, needed: int) -> None:
        ensure_cache(state, len(self.layers), self.kv_heads, self.head_dim, batch, needed)

    def expand(self, state: KVState, batch: int) -> None:
        """Copy a single cached row for `batch` rows (candidates share the prompt)."""
        if state.cache is not None and state.cache.shape[2] != batch:
            self._ensure(state, batch, state.length + 1)

    # -- the forward -----------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, state: KVState, all_logits: bool = False) -> torch.Tensor:
        """ids [batch, T] following what `state` holds; the last position's logits [batch, vocab]
        (every position's, [batch, T, vocab], with `all_logits`)."""
        batch, count = ids.shape
        if self.model is not None and not all_logits and count == 1 and batch <= MAX_BATCH:
            logits = self._step(ids[:, 0], state)
            if logits is not None:
                return logits
        return self._torch(ids, state, all_logits)

    def _step(self, tokens: torch.Tensor, state: KVState) -> torch.Tensor | None:
        batch, pos = tokens.shape[0], state.length
        self._ensure(state, batch, pos + 1)
        cache = state.cache
        capacity = cache.shape[4]
        lib, model = self.lib, self.model
        model.threads = torch.get_num_threads()
        need = lib.sl_scratch_floats(ctypes.byref(model), batch, capacity)
        scratch = getattr(state, "scratch", None)
        if scratch is None or scratch.numel() < need:
            scratch = state.scratch = torch.empty(need)  # per generation: threads never share one
        tokens = tokens.to(torch.int64).contiguous()
        logits = torch.empty(batch, self.vocab)
        status = lib.sl_step(ctypes.byref(model), tokens.data_ptr(), batch, pos, cache.data_ptr(),
                             capacity, logits.data_ptr(), scratch.data_ptr())
        if status != 0:
            log.warning("the native step refused a token (status %s); using torch", status)
            return None
        state.length = pos + 1
        return logits

    def _torch(self, ids: torch.Tensor, state: KVState, all_logits: bool) -> torch.Tensor:
        wanted = torch.get_num_threads()
        threads = prompt_threads(wanted)
        if threads != wanted:
            torch.set_num_threads(threads)
        try:
            return self._torch_forward(ids, state, all_logits)
        finally:
            if threads != wanted:
                torch.set_num_threads(wanted)
            if ids.numel() >= BF16_PROMPT_MIN:
                # a long prompt's activations (~150 MB for 500 tokens of a 1B model) go back to
                # the system: the allocator would keep them (native sets it to), and resident
                # memory is the file plus the KV cache, not the file plus the largest prompt
                native.release_free_memory()

    def _torch_forward(self, ids: torch.Tensor, state: KVState, all_logits: bool) -> torch.Tensor:
        batch, count = ids.shape
        start = state.length
        end = start + count
        self._ensure(state, batch, end)
        cache = state.cache
        wide = self.bf16 and batch * count >= BF16_PROMPT_MIN
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        cos, sin = self._rope_tables(start, count)
        h = self._rows(self.embed, ids).float()  # [B, T, hidden], the residual stream
        rows = count
        bufs: dict = {}  # one dequantization buffer per dtype, reused by every matrix

        def linear(x, w, bias=None, wide=wide):
            return self.linear(x, w, wide, bias, bufs)

        for i, L in enumerate(self.layers):
            x = self._norm(h, L.norm1)
            q = linear(x, L.q, L.bias.get("q")).view(batch, rows, heads, dim)
            k = linear(x, L.k, L.bias.get("k")).view(batch, count, kv_heads, dim)
            v = linear(x, L.v, L.bias.get("v")).view(batch, count, kv_heads, dim)
            if L.q_norm is not None:
                q, k = self._norm(q, L.q_norm), self._norm(k, L.k_norm)
            q, k = self._rotate(q, cos[-rows:], sin[-rows:]), self._rotate(k, cos, sin)
            k, v = k.transpose(1, 2), v.transpose(1, 2)  # [B, kv_heads, T, D]
            cache[i, 0, :, :, start:end] = k
            cache[i, 1, :, :, start:end] = v
            if i == len(self.layers) - 1 and not all_logits and rows > 1:
                # every position's keys and values are cached; past them only the last position
                # matters (the next token), so the rest of the last layer runs on it alone
                q, h, rows = q[:, -1:], h[:, -1:], 1
            q = q.transpose(1, 2)
            if start == 0 and rows == count and count > 1:  # a fresh prompt attends to itself
                at = (lambda t: t.to(torch.bfloat16)) if wide else (lambda t: t)
                attn = F.scaled_dot_product_attention(at(q), at(k), at(v), is_causal=True, enable_gqa=True)
            else:
                keys, values = cache[i, 0, :, :, :end], cache[i, 1, :, :, :end]
                mask = None
                if rows > 1:
                    mask = torch.ones(rows, end, dtype=torch.bool).tril(diagonal=end - rows)
                attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
            attn = attn.transpose(1, 2).reshape(batch, rows, heads * dim)
            h = h + linear(attn, L.o)  # (a new tensor: h may be a view of the embedding rows)
            x = self._norm(h, L.norm2)
            gate = linear(x, L.gate)
            h += linear(F.silu(gate, inplace=True).mul_(linear(x, L.up)), L.down)
        state.length = end
        last = h if all_logits else h[:, -1]
        return linear(self._norm(last, self.final_norm), self.lm_head, wide=False)


# -- the Generator ---------------------------------------------------------------------------------
def _generator_class():
    from storyloom.engine.backends.transformers_backend import TransformersGenerator
    from storyloom.engine.generate import GenerationStats, ModelInfo

    class GGUFGenerator(TransformersGenerator):
        """TransformersGenerator's decode loop, streaming, batching, scoring and constrained
        decoding, over a GGUFForward instead of a transformers model."""

        def __init__(self, fast: GGUFForward, tokenizer, name: str, header: Header, extra: dict):
            self.model = None  # no transformers model: every path goes through `fast`
            self.fast = fast
            self.tokenizer = tokenizer
            plan = fast.plan
            params = sum(info.rows * info.cols for info in header.tensors.values())
            self.info = ModelInfo(name=name, backend="native-gguf", parameters=params,
                                  dtype=", ".join(sorted(plan.kinds)), context_length=plan.context_length,
                                  location=str(header.path), chat_template=bool(getattr(tokenizer, "chat_template", None)),
                                  extra=extra)
            self.last_stats = GenerationStats()
            eos = header.get("tokenizer.ggml.eos_token_id", tokenizer.eos_token_id)
            eot = header.get("tokenizer.ggml.eot_token_id")
            self.eos_ids = {int(t) for t in (eos, eot, tokenizer.eos_token_id) if t is not None}
            pad = header.get("tokenizer.ggml.padding_token_id", tokenizer.pad_token_id)
            self.pad_id = int(pad) if pad is not None else 0
            self.stop_strings = tuple(t for t in getattr(tokenizer, "all_special_tokens", ())
                                      if t and len(t) > 2 and t.startswith("<") and t.endswith(">"))

    return GGUFGenerator


def route(path: Path | str, engine: str = "native") -> tuple[str, str]:
    """("native" or "transformers", why in one line): the path a .gguf file takes. `engine` is
    STORYLOOM_ENGINE (only the native engines run GGUF blocks)."""
    from storyloom.engine.gguf_file import GGUFError, plan, read

    try:
        result = plan(read(path))
    except GGUFError as exc:
        return "transformers", f"transformers conversion: {exc}"
    if isinstance(result, str):
        return "transformers", f"transformers conversion: {result}"
    if not engine.startswith("native"):
        return "transformers", f"transformers conversion: STORYLOOM_ENGINE={engine} asks for it"
    if native.library() is None:
        return "transformers", f"transformers conversion: the native step is unavailable ({native.unavailable()})"
    if native_gguf() is None:
        return "transformers", "transformers conversion: this build of the native step cannot read GGUF blocks"
    return "native", f"native GGUF blocks: {result.describe()}"


def load(path: Path, header: Header, plan: Plan, name: str, lib=None, extra: dict | None = None):
    """A Generator for the GGUF at `path` (lib: the C library, or None for torch alone)."""
    from storyloom.engine import gguf_tokenizer

    tokenizer = gguf_tokenizer.load(path, header)
    if len(tokenizer) > plan.vocab:
        from storyloom.engine.models import ModelError

        raise ModelError(f"{path.name} does not fit its tokenizer: {len(tokenizer)} tokens, "
                         f"an embedding of {plan.vocab}.")
    fast = GGUFForward(header, plan, lib)
    info = {"engine": "native-gguf" if lib is not None else "torch-gguf",
            "weights": ", ".join(f"{n} {k}" for k, n in sorted(plan.kinds.items(), key=lambda kv: -kv[1])),
            "rope": "halves (neox)" if plan.rope_neox else "adjacent pairs", **(extra or {})}
    if lib is not None:
        info["isa"] = native.isa() if hasattr(native, "isa") else "?"
    return _generator_class()(fast, tokenizer, name, header, info)

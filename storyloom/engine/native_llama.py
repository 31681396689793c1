"""The default decode path: the torch lean forward for prompts, the native C step for tokens.

Decoding one token is ~800 small operations; from Python each costs a few microseconds of
dispatch, which was most of the time per token. The C step (engine/native/decode_step.c) runs
all layers in one call, on GGUF blocks. A transformers model's weights are packed into those
blocks without changing them: a matrix whose values lie exactly on GGUF's Q4_1 or Q8_0 grid with
fp16 scales (the default model is a converted Q4_1 GGUF) becomes that block type, anything else
stays fp32 (F32 blocks, the model's own tensor). One kernel set serves these and .gguf files;
these matrices are flagged EXACT (fp32 inputs rather than llama.cpp's 8-bit ones), so the greedy
text stays the library forward's.

Prompts fill the same KV cache: a long fresh one (64+ tokens, on CPUs with bf16 units) in
`_prefill`, bf16 matmuls and attention in torch with the elementwise work in C; anything else
(short prompts, several tokens fed at once, batches above 8) through FastLlama in fp32.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import time
import weakref
from pathlib import Path

import torch

from storyloom.engine import native
from storyloom.engine.fast_llama import BF16_PROMPT_MIN, FastLlama, KVState, select_rows, supported
from storyloom.paths import models_dir

MAX_BATCH = 8  # the C step's limit; larger batches use the torch forward
log = logging.getLogger(__name__)


def _exact(rebuilt: torch.Tensor, groups: torch.Tensor) -> bool:
    tolerance = 1e-6 * float(groups.abs().max()) + 1e-12
    return float(rebuilt.sub_(groups).abs_().max()) <= tolerance


def _q4_1(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(levels 0..15, step, low), both fp16, when every group of 32 lies on its own 16-level grid
    with fp16 scales (as a converted GGUF's do), else None."""
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    step = (high - low).div_(15).half()
    low = low.half()
    q = (groups - low.float()).div_(torch.where(step > 0, step.float(), 1)).round_().clamp_(0, 15)
    return (q, step, low) if _exact(torch.addcmul(low.float(), q, step.float()), groups) else None


def _q8_0(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(levels -127..127, step in fp16) for groups of 32 scaled by their largest magnitude, when
    every weight lies on that grid; else None."""
    step = groups.abs().amax(-1, keepdim=True).div_(127).half()
    q = groups.div(torch.where(step > 0, step.float(), 1)).round_().clamp_(-127, 127)
    return (q, step) if _exact(q * step.float(), groups) else None


def _halves_as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)  # [..., 1] fp16 -> [..., 2] bytes


def pack(weight: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(ggml type, [rows, row bytes] uint8 GGUF blocks) for a [rows, cols] matrix, exactly: Q4_1
    or Q8_0 when its values lie on that grid, else F32 (a view of the weights as they are)."""
    w = weight.detach().float().contiguous()
    rows, cols = w.shape
    if cols % 32 == 0:
        groups = w.view(rows, cols // 32, 32)
        sample = groups[:8]  # most matrices off a grid show it in their first rows: skip the full pass
        if _q4_1(sample) is not None and (found := _q4_1(groups)) is not None:
            q, step, low = found
            q = q.to(torch.uint8)
            nibbles = q[..., :16] | (q[..., 16:] << 4)  # GGUF: low nibbles the first 16, high the last
            blocks = torch.cat([_halves_as_bytes(step), _halves_as_bytes(low), nibbles], dim=-1)
            return native.Q4_1, blocks.reshape(rows, -1).contiguous()
        if _q8_0(sample) is not None and (found := _q8_0(groups)) is not None:
            q, step = found
            blocks = torch.cat([_halves_as_bytes(step), q.to(torch.int8).view(torch.uint8)], dim=-1)
            return native.Q8_0, blocks.reshape(rows, -1).contiguous()
    return native.F32, w.view(torch.uint8).view(rows, cols * 4)


PACK_FORMAT = "2"  # bump when pack() changes what it writes (2: GGUF blocks, one tensor each)
STALE_TMP_S = 3600  # a pack's temp file untouched this long was abandoned (a killed process)
CACHED_TYPES = (native.Q4_1, native.Q8_0)  # what the cache holds (fp32 is the model's own)


def cached_parts_fit(blocks: torch.Tensor, kind: int, rows: int, cols: int) -> bool:
    """Does a cached matrix have exactly the shape and type the C step will read for a rows x cols
    weight of ggml type `kind`? (A wrong shape is an out-of-bounds read there: a segfault at best.)"""
    if kind not in CACHED_TYPES or cols % native.block_size(kind):
        return False
    return (tuple(blocks.shape) == (rows, native.row_bytes(kind, cols)) and blocks.dtype == torch.uint8
            and blocks.is_contiguous())


def _read_pack_cache(path: Path | None) -> dict[str, torch.Tensor] | None:
    """The cached packs, only from a file and folder that are the user's own and not writable by
    others (a planted cache would be code-adjacent: its sizes drive the C step's reads)."""
    if path is None or not path.is_file():
        return None
    if native.untrusted(path) or native.untrusted(path.parent):
        log.warning("pack cache %s is not the user's own or is writable by others; packing again", path)
        return None
    try:
        from safetensors.torch import load_file

        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any damage means the same: pack again and rewrite it
        log.warning("pack cache %s is unreadable (%s: %s); packing again", path, type(exc).__name__, exc)
        return None


def _sweep_packs(path: Path) -> None:
    """Remove this model's other packs, half-written ones, packs of models whose folder is gone
    (a bench's temporary copy, a deleted model) and packs of an older PACK_FORMAT."""
    place = path.name.split("-")[1]
    for old in path.parent.glob("packed-*"):
        if old == path:
            continue
        try:
            if old.suffix == ".tmp":
                # another process may be writing it right now: only an abandoned one goes
                if time.time() - old.stat().st_mtime > STALE_TMP_S:
                    old.unlink(missing_ok=True)
                continue
            if old.name.startswith(f"packed-{place}-"):
                old.unlink(missing_ok=True)
                continue
            from safetensors import safe_open

            with safe_open(str(old), "pt") as f:
                meta = f.metadata() or {}
                # a model gone, or a pack of an older layout (which no load reads again)
                gone = not Path(meta.get("folder", "")).is_dir() or meta.get("format") != PACK_FORMAT
            if gone:
                old.unlink(missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - a pack we cannot read is of no use to anyone
            log.info("removing unreadable pack cache %s (%s: %s)", old, type(exc).__name__, exc)
            old.unlink(missing_ok=True)


def _write_pack_cache(path: Path, tensors: dict[str, torch.Tensor], folder: Path) -> bool:
    """Written beside its final name and renamed; a full disk or a read-only folder only means
    the next load packs again."""
    try:
        from safetensors.torch import save_file

        from storyloom.paths import private_dir

        private_dir(path.parent)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")  # one per writer
        try:
            save_file(tensors, str(tmp), metadata={"folder": str(folder), "format": PACK_FORMAT})
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return True
    except Exception as exc:  # noqa: BLE001 - the pack is an optimisation; the model runs without it
        log.warning("could not write pack cache %s (%s: %s); the next load packs again", path,
                    type(exc).__name__, exc)
        return False


def _model_folder(model) -> Path | None:
    folder = Path(str(getattr(model.config, "_name_or_path", "") or ""))
    return folder.resolve() if folder.is_dir() else None


def _pack_cache(model) -> Path | None:
    """Where this model's packed weights are kept between runs: keyed by its folder and the size
    and time of its weight files, so a changed model is packed again. None for in-memory models."""
    folder = _model_folder(model)
    if folder is None:
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if not files:
        return None
    place = hashlib.sha256(f"{folder}".encode()).hexdigest()[:12]
    stamp = [PACK_FORMAT] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    state = hashlib.sha256("|".join(stamp).encode()).hexdigest()[:12]
    return models_dir() / "native" / f"packed-{place}-{state}.safetensors"


class NativeLlama:
    """FastLlama's interface (forward, expand) with single-token steps done in C."""

    def __init__(self, fast: FastLlama, model, lib: ctypes.CDLL):
        self.fast = fast
        self.lib = lib
        # per KVState: how many leading positions every row's cache holds alike (expanded from one
        # row, so candidates share the prompt); the C step reads those from row 0 alone
        self._shared: weakref.WeakKeyDictionary[KVState, int] = weakref.WeakKeyDictionary()
        self._shared_lock = threading.Lock()
        self.kinds: dict[str, int] = {}
        self._keep: list[torch.Tensor] = []  # every tensor the C side points into
        cache = _pack_cache(model)
        if cache is not None and cache.parent.is_dir():
            _sweep_packs(cache)
        cached = _read_pack_cache(cache)
        self.pack_cache = "read" if cached is not None else "none"  # or "written", below
        self.pack_cache_bad = False
        packed: dict[str, torch.Tensor] = {}  # what gets written to the cache

        def matrix(name: str, weight: torch.Tensor) -> native.Matrix:
            return self._matrix(name, weight, cached, packed)

        config = model.config
        inner = model.model
        layers = (native.Layer * len(inner.layers))()
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            layers[i].norm1 = self._ptr(layer.input_layernorm.weight)
            layers[i].norm2 = self._ptr(layer.post_attention_layernorm.weight)
            layers[i].q_norm = layers[i].k_norm = None
            for field, weight in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj),
                                  ("o", attn.o_proj), ("gate", mlp.gate_proj), ("up", mlp.up_proj),
                                  ("down", mlp.down_proj)):
                setattr(layers[i], field, matrix(f"{i}.{field}", weight.weight))
        self._layers = layers
        m = native.Model()
        m.layers, m.dim = len(inner.layers), config.hidden_size
        m.intermediate = fast.intermediate
        m.heads, m.kv_heads, m.head_dim = fast.heads, fast.kv_heads, fast.head_dim
        m.vocab, m.eps = model.lm_head.weight.shape[0], float(fast.eps)
        m.threads = torch.get_num_threads()
        m.rope_neox = 1  # transformers' rotate_half
        m.embed = self._f32_matrix(fast.embed)
        m.final_norm = self._ptr(inner.norm.weight)
        m.inv_freq = self._ptr(fast.inv_freq)
        m.lm_head = matrix("lm_head", model.lm_head.weight)
        m.layer = ctypes.cast(layers, ctypes.POINTER(native.Layer))
        self.model = m
        self.vocab = m.vocab
        packed_bytes = sum(t.numel() * t.element_size() for t in packed.values())
        if cache is not None and (cached is None or self.pack_cache_bad) and packed_bytes > 256 << 10:
            # (small ones pack at once; a cache that did not fit the model is replaced)
            self.pack_cache = "written" if _write_pack_cache(cache, packed, _model_folder(model)) else "none"
        native.release_free_memory()

    @classmethod
    def build(cls, model) -> "NativeLlama | None":
        if supported(model):
            return None
        lib = native.library()  # before the torch side is built, which would go unused without it
        if lib is None:
            return None
        return cls(FastLlama(model, fuse=False), model, lib)  # prompts only: no stacked fp32 copies

    def _ptr(self, tensor: torch.Tensor) -> int:
        tensor = tensor.detach().float().contiguous()
        self._keep.append(tensor)
        return tensor.data_ptr()

    def _f32_matrix(self, weight: torch.Tensor) -> native.Matrix:
        w = weight.detach().float().contiguous()
        self._keep.append(w)
        m = native.Matrix()
        m.type, m.rows, m.cols, m.data, m.bias = native.F32, w.shape[0], w.shape[1], w.data_ptr(), None
        return m

    def _matrix(self, name: str, weight: torch.Tensor, cached: dict[str, torch.Tensor] | None,
                packed: dict[str, torch.Tensor]) -> native.Matrix:
        """`weight` packed (or read back from `cached`) for the C side; what was packed here is
        added to `packed`, for the cache."""
        rows, cols = weight.shape
        found = [(int(key.rsplit("@", 1)[1]), t) for key, t in (cached or {}).items()
                 if key.rsplit("@", 1)[0] == name and key.rsplit("@", 1)[1].isdigit()]
        if found and not cached_parts_fit(found[0][1], found[0][0], rows, cols):
            self.pack_cache_bad = True  # packed again here, and the cache rewritten
            found = []
        if found:
            kind, blocks = found[0]
        else:
            kind, blocks = pack(weight)
        if kind in CACHED_TYPES:  # fp32 is the model's own weights: nothing worth keeping
            packed[f"{name}@{kind}"] = blocks
        label = native.TYPE_NAMES[kind]
        self.kinds[label] = self.kinds.get(label, 0) + 1
        m = native.Matrix()
        m.type, m.rows, m.cols = kind, rows, cols
        m.flags = native.EXACT  # fp32 inputs, as the library's forward: its greedy text, token for token
        if kind in CACHED_TYPES:  # in 16-row tiles where the build has their kernels (the cache keeps GGUF rows)
            tiles = torch.empty_like(blocks)
            if self.lib.sl_tile(kind, rows, cols, blocks.data_ptr(), tiles.data_ptr()):
                blocks = tiles
                m.flags |= native.TILED
        self._keep.append(blocks)
        m.data, m.bias = blocks.data_ptr(), None
        return m

    # -- FastLlama's interface -----------------------------------------------------------
    def expand(self, state: KVState, batch: int) -> None:
        single = state.cache is not None and state.cache.shape[2] == 1
        self.fast.expand(state, batch)
        if single and batch > 1:  # every row a copy of the one: alike up to its length
            with self._shared_lock:
                self._shared[state] = state.length

    def shared_prefix(self, state: KVState) -> int:
        """Leading positions alike in every row of `state`'s cache: what it was expanded from,
        less whatever a rewind (a lower state.length) has since given up to be written again."""
        with self._shared_lock:
            if state not in self._shared:
                return 0
            shared = self._shared[state] = min(self._shared[state], state.length)
            return shared

    def keep_rows(self, state: KVState, rows: list[int]) -> None:
        """Go on with only these batch rows: the step skips the others' cache rows where they lie
        (moving the kept ones cost about a step each time a candidate finished)."""
        held = state.rows if state.rows is not None else list(range(state.cache.shape[2]))
        state.rows = [held[r] for r in rows]

    @staticmethod
    def compact(state: KVState) -> None:
        """Move the kept rows' caches together (for the torch forward, which reads every row)."""
        if state.rows is not None:
            select_rows(state, state.rows)
            state.rows = None

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, state: KVState, all_logits: bool = False) -> torch.Tensor:
        batch, count = ids.shape
        step = not all_logits and count == 1 and batch <= MAX_BATCH and state.length > 0  # the C step's case
        if state.rows is not None and not step:
            self.compact(state)
        shared = self.shared_prefix(state)  # before anything is written at state.length and on
        if all_logits:  # scoring: every position's logits, from the torch forward
            return self.fast.forward(ids, state, all_logits=True)
        if batch == 1 and state.length == 0 and count >= BF16_PROMPT_MIN and self.fast.bf16:
            return self._prefill(ids, state)
        if not step:
            return self.fast.forward(ids, state)
        pos = state.length
        rows = state.rows
        cached = state.cache.shape[2] if rows is not None else batch
        self.fast._ensure(state, cached, pos + 1)
        cache = state.cache
        tokens = ids.reshape(batch).to(torch.int64).contiguous()
        capacity = cache.shape[4]
        logits = torch.empty(batch, self.vocab)
        scratch = torch.empty(self.lib.sl_scratch_floats(ctypes.byref(self.model), batch, capacity))
        self.model.threads = torch.get_num_threads()
        status = self.lib.sl_step_rows(ctypes.byref(self.model), tokens.data_ptr(), batch,
                                       (ctypes.c_int * batch)(*rows) if rows is not None else None, cached, pos,
                                       cache.data_ptr(), capacity, logits.data_ptr(), scratch.data_ptr(),
                                       shared if batch > 1 else 0)
        if status != 0:
            self.compact(state)
            return self.fast.forward(ids, state)
        state.length = pos + 1
        return logits

    def _prefill(self, ids: torch.Tensor, state: KVState) -> torch.Tensor:
        """A long fresh prompt: matmuls and attention in torch (bf16 units), the rest in C."""
        fast, lib, threads = self.fast, self.lib, torch.get_num_threads()
        count = ids.shape[1]
        fast._ensure(state, 1, count)
        cache = state.cache
        capacity = cache.shape[4]
        heads, kv_heads, dim = fast.heads, fast.kv_heads, fast.head_dim
        hidden = self.model.dim
        cos, sin = fast._rope(0, count)
        half = dim // 2
        cos, sin = cos[:, 0, :half].contiguous(), sin[:, 0, :half].contiguous()
        h = fast.embed[ids[0]].contiguous()  # [T, hidden] fp32, the residual stream
        xn = torch.empty(count, hidden, dtype=torch.bfloat16)  # normed input of each matmul
        q = torch.empty(count, heads, dim, dtype=torch.bfloat16)
        k = torch.empty(count, kv_heads, dim, dtype=torch.bfloat16)
        v = torch.empty(count, kv_heads, dim, dtype=torch.bfloat16)
        rows = count  # positions whose output is still needed
        for i, (norm1, qkv, o_proj, norm2, gate_up, down) in enumerate(fast.layers):
            lib.sl_norm_bf16(h.data_ptr(), norm1.data_ptr(), rows, hidden, fast.eps, xn.data_ptr(), threads)
            projected = qkv(xn, True)
            lib.sl_rope_split(projected.data_ptr(), count, 0, cos.data_ptr(), sin.data_ptr(), heads, kv_heads, dim,
                              q.data_ptr(), k.data_ptr(), v.data_ptr(), cache[i, 0, 0].data_ptr(),
                              cache[i, 1, 0].data_ptr(), capacity, threads, 1)
            if i == len(fast.layers) - 1:
                # The cache has every position's keys and values now; beyond them only the last
                # position's output matters (the next token), so the rest of the layer runs on it.
                rows, q, h, xn = 1, q[-1:], h[-1:].contiguous(), xn[-1:]
            attn = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                is_causal=rows > 1, enable_gqa=True)
            out = o_proj(attn[0].transpose(0, 1).reshape(rows, heads * dim), True).contiguous()
            lib.sl_add_bf16(h.data_ptr(), out.data_ptr(), h.numel(), threads)
            lib.sl_norm_bf16(h.data_ptr(), norm2.data_ptr(), rows, hidden, fast.eps, xn.data_ptr(), threads)
            out = down(gate_up.swiglu(xn), True).contiguous()
            lib.sl_add_bf16(h.data_ptr(), out.data_ptr(), h.numel(), threads)
        state.length = count
        logits = torch.empty(1, self.vocab)
        self.model.threads = threads
        lib.sl_head(ctypes.byref(self.model), h[-1].data_ptr(), 1, logits.data_ptr())
        return logits

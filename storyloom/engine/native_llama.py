"""The default decode path: the torch lean forward for prompts, the native C step for tokens.

Decoding one token is ~800 small operations; from Python each costs a few microseconds of
dispatch, which was most of the time per token. The C step (engine/native/decode_step.c) runs
all layers in one call. Its weights are packed from the transformers model without changing
them: a matrix whose values lie exactly on GGUF's Q4_1 or Q8_0 grid (the default model is a
converted Q4_1 GGUF) is stored in that format, anything else stays fp32. `quantize=True` packs
off-grid matrices as Q8_0 instead (smaller, faster, log-probs move slightly): opt-in.

Prompts fill the same KV cache: a long fresh one (64+ tokens, on CPUs with bf16 units) in
`_prefill`, bf16 matmuls and attention in torch with the elementwise work in C; anything else
(short prompts, several tokens fed at once, batches above 8) through FastLlama in fp32.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import time
from pathlib import Path

import torch

from storyloom.engine import native
from storyloom.engine.fast_llama import BF16_PROMPT_MIN, FastLlama, KVState, supported
from storyloom.paths import models_dir

MAX_BATCH = 8  # the C step's limit; larger batches use the torch forward
log = logging.getLogger(__name__)


def _exact(rebuilt: torch.Tensor, groups: torch.Tensor) -> bool:
    tolerance = 1e-6 * float(groups.abs().max()) + 1e-12
    return float(rebuilt.sub_(groups).abs_().max()) <= tolerance


def _narrowed(scales: list[torch.Tensor], rebuild, groups: torch.Tensor) -> list[torch.Tensor]:
    """The scales in fp16 when the weights rebuilt from those are still exact (GGUF keeps its
    scales in fp16, so a converted GGUF's are), else as they are: fewer bytes read per token."""
    half = [s.half() for s in scales]
    return half if _exact(rebuild(*[h.float() for h in half]), groups) else scales


def _q4_1(groups: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """(levels 0..15, [step, low]) when every group of 32 lies on its own 16-level grid, else None."""
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    step = (high - low).div_(15)
    q = (groups - low).div_(torch.where(step > 0, step, 1)).round_().clamp_(0, 15)
    def rebuild(step, low):
        return torch.addcmul(low, q, step)
    return (q, _narrowed([step, low], rebuild, groups)) if _exact(rebuild(step, low), groups) else None


def _q8_0(groups: torch.Tensor, exact: bool) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """(levels -127..127, [step]) for groups of 32 scaled by their largest magnitude; None when
    `exact` and some weight is off that grid."""
    step = groups.abs().amax(-1, keepdim=True).div_(127)
    q = groups.div(torch.where(step > 0, step, 1)).round_().clamp_(-127, 127)
    def rebuild(step):
        return q * step
    if not exact:
        return q, [step]
    return (q, _narrowed([step], rebuild, groups)) if _exact(rebuild(step), groups) else None


def pack(weight: torch.Tensor, quantize: bool = False) -> tuple[int, list[torch.Tensor]]:
    """(format, [q, scale, min]) for a [rows, cols] matrix, exact unless `quantize`."""
    w = weight.detach().float().contiguous()
    rows, cols = w.shape
    if cols % native.GROUP == 0:
        groups = w.view(rows, cols // native.GROUP, native.GROUP)
        sample = groups[:8]  # most matrices off a grid show it in their first rows: skip the full pass
        if _q4_1(sample) is not None and (found := _q4_1(groups)) is not None:
            q, scales = found
            q = q.to(torch.uint8)
            half = native.GROUP // 2
            packed = (q[..., :half] | (q[..., half:] << 4)).reshape(rows, cols // 2).contiguous()
            return native.Q4_1, [packed, *[s.reshape(rows, -1).contiguous() for s in scales]]
        if quantize or _q8_0(sample, True) is not None:
            found = _q8_0(groups, exact=not quantize)
            if found is not None:
                q, scales = found
                return native.Q8_0, [q.to(torch.int8).reshape(rows, cols).contiguous(),
                                     *[s.reshape(rows, -1).contiguous() for s in scales]]
    return native.F32, [w]


PACK_FORMAT = "1"  # bump when pack() changes what it writes
STALE_TMP_S = 3600  # a pack's temp file untouched this long was abandoned (a killed process)


def cached_parts_fit(parts: list[torch.Tensor], rows: int, cols: int) -> bool:
    """Do a cached matrix's tensors have exactly the shapes and types the C step will read for a
    rows x cols weight? (A wrong shape is an out-of-bounds read there: a segfault at best.)"""
    if cols % native.GROUP or len(parts) not in (2, 3):
        return False
    groups = cols // native.GROUP
    q, scales = parts[0], parts[1:]
    want_q = ((rows, cols // 2), torch.uint8) if len(parts) == 3 else ((rows, cols), torch.int8)
    if (tuple(q.shape), q.dtype) != want_q or not q.is_contiguous():
        return False
    return all(tuple(s.shape) == (rows, groups) and s.dtype == scales[0].dtype and s.is_contiguous()
               and s.dtype in (torch.float16, torch.float32) for s in scales)


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
    """Remove this model's other packs, half-written ones, and packs of models whose folder is
    gone (a bench's temporary copy, a deleted model)."""
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
                gone = not Path((f.metadata() or {}).get("folder", "")).is_dir()
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
            save_file(tensors, str(tmp), metadata={"folder": str(folder)})
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


def _pack_cache(model, quantize: bool) -> Path | None:
    """Where this model's packed weights are kept between runs: keyed by its folder and the size
    and time of its weight files, so a changed model is packed again. None for in-memory models."""
    folder = _model_folder(model)
    if folder is None:
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if not files:
        return None
    place = hashlib.sha256(f"{folder}|{quantize}".encode()).hexdigest()[:12]
    stamp = [PACK_FORMAT] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    state = hashlib.sha256("|".join(stamp).encode()).hexdigest()[:12]
    return models_dir() / "native" / f"packed-{place}-{state}.safetensors"


class NativeLlama:
    """FastLlama's interface (forward, expand) with single-token steps done in C."""

    def __init__(self, fast: FastLlama, model, lib: ctypes.CDLL, quantize: bool = False):
        self.fast = fast
        self.lib = lib
        self.kinds: dict[str, int] = {}
        self._keep: list[torch.Tensor] = []  # every tensor the C side points into
        cache = _pack_cache(model, quantize)
        if cache is not None and cache.parent.is_dir():
            _sweep_packs(cache)
        cached = _read_pack_cache(cache)
        self.pack_cache = "read" if cached is not None else "none"  # or "written", below
        self.pack_cache_bad = False
        packed: dict[str, torch.Tensor] = {}  # what gets written to the cache

        def matrix(name: str, weights: list[torch.Tensor]) -> native.Matrix:
            return self._matrix(name, weights, quantize, cached, packed)

        config = model.config
        inner = model.model
        layers = (native.Layer * len(inner.layers))()
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            layers[i].norm1 = self._ptr(layer.input_layernorm.weight)
            layers[i].norm2 = self._ptr(layer.post_attention_layernorm.weight)
            layers[i].qkv = matrix(f"{i}.qkv", [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            layers[i].o = matrix(f"{i}.o", [attn.o_proj.weight])
            layers[i].gate_up = matrix(f"{i}.gate_up", [mlp.gate_proj.weight, mlp.up_proj.weight])
            layers[i].down = matrix(f"{i}.down", [mlp.down_proj.weight])
        self._layers = layers
        m = native.Model()
        m.layers, m.dim = len(inner.layers), config.hidden_size
        m.intermediate = fast.intermediate
        m.heads, m.kv_heads, m.head_dim = fast.heads, fast.kv_heads, fast.head_dim
        m.vocab, m.eps = model.lm_head.weight.shape[0], float(fast.eps)
        m.threads = torch.get_num_threads()
        m.embed = self._ptr(fast.embed)
        m.final_norm = self._ptr(inner.norm.weight)
        m.inv_freq = self._ptr(fast.inv_freq)
        m.lm_head = matrix("lm_head", [model.lm_head.weight])
        m.layer = ctypes.cast(layers, ctypes.POINTER(native.Layer))
        self.model = m
        self.vocab = m.vocab
        packed_bytes = sum(t.numel() * t.element_size() for t in packed.values())
        if cache is not None and (cached is None or self.pack_cache_bad) and packed_bytes > 256 << 10:
            # (small ones pack at once; a cache that did not fit the model is replaced)
            self.pack_cache = "written" if _write_pack_cache(cache, packed, _model_folder(model)) else "none"
        native.release_free_memory()

    @classmethod
    def build(cls, model, quantize: bool = False) -> "NativeLlama | None":
        if supported(model):
            return None
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        heads = config.num_attention_heads
        if max(config.hidden_size, config.intermediate_size, heads * head_dim) > 4096 or head_dim > 512:
            return None  # beyond the C step's fixed buffers (its o-projection reads heads x head_dim)
        lib = native.library()  # before the torch side is built, which would go unused without it
        if lib is None:
            return None
        return cls(FastLlama(model, fuse=False), model, lib, quantize)  # prompts only: no stacked fp32 copies

    def _ptr(self, tensor: torch.Tensor) -> int:
        tensor = tensor.detach().float().contiguous()
        self._keep.append(tensor)
        return tensor.data_ptr()

    def _matrix(self, name: str, weights: list[torch.Tensor], quantize: bool,
                cached: dict[str, torch.Tensor] | None, packed: dict[str, torch.Tensor]) -> native.Matrix:
        """The stacked `weights` packed (or read back from `cached`) for the C side; what was
        packed here is added to `packed`, for the cache."""
        rows, cols = sum(w.shape[0] for w in weights), weights[0].shape[1]
        parts = [cached[f"{name}.{k}"] for k in range(3) if f"{name}.{k}" in cached] if cached else []
        if parts and not cached_parts_fit(parts, rows, cols):
            self.pack_cache_bad = True  # packed again here, and the cache rewritten
            parts = []
        if parts:
            kind = native.Q4_1 if len(parts) == 3 else native.Q8_0
            packed.update({f"{name}.{k}": part for k, part in enumerate(parts)})  # kept if rewritten
        else:
            weight = weights[0] if len(weights) == 1 else torch.cat(weights)
            kind, parts = pack(weight, quantize)
            if kind != native.F32:  # fp32 is the model's own weights: nothing worth keeping
                packed.update({f"{name}.{k}": part for k, part in enumerate(parts)})
        label = {native.Q4_1: "q4_1", native.Q8_0: "q8_0", native.F32: "f32"}[kind]
        self.kinds[label] = self.kinds.get(label, 0) + 1
        self._keep.extend(parts)
        m = native.Matrix()
        m.kind, m.rows, m.cols = kind, rows, cols
        m.half_scales = int(len(parts) > 1 and parts[1].dtype == torch.float16)
        m.q = parts[0].data_ptr()
        m.scale = parts[1].data_ptr() if len(parts) > 1 else None
        m.minv = parts[2].data_ptr() if len(parts) > 2 else None
        return m

    # -- FastLlama's interface -----------------------------------------------------------
    def expand(self, state: KVState, batch: int) -> None:
        self.fast.expand(state, batch)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, state: KVState) -> torch.Tensor:
        batch, count = ids.shape
        if batch == 1 and state.length == 0 and count >= BF16_PROMPT_MIN and self.fast.bf16:
            return self._prefill(ids, state)
        if count != 1 or batch > MAX_BATCH or state.length == 0:
            return self.fast.forward(ids, state)
        pos = state.length
        self.fast._ensure(state, batch, pos + 1)
        cache = state.cache
        tokens = ids.reshape(batch).to(torch.int64).contiguous()
        capacity = cache.shape[4]
        logits = torch.empty(batch, self.vocab)
        scratch = torch.empty(self.lib.sl_scratch_floats(ctypes.byref(self.model), batch, capacity))
        self.model.threads = torch.get_num_threads()
        status = self.lib.sl_step(ctypes.byref(self.model), tokens.data_ptr(), batch, pos, cache.data_ptr(),
                                  capacity, logits.data_ptr(), scratch.data_ptr())
        if status != 0:
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
                              cache[i, 1, 0].data_ptr(), capacity, threads)
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

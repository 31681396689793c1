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

import torch

from storyloom.engine import native
from storyloom.engine.fast_llama import BF16_PROMPT_MIN, FastLlama, KVState

MAX_BATCH = 8  # the C step's limit; larger batches use the torch forward


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


class NativeLlama:
    """FastLlama's interface (forward, expand) with single-token steps done in C."""

    def __init__(self, fast: FastLlama, model, lib: ctypes.CDLL, quantize: bool = False):
        self.fast = fast
        self.lib = lib
        self.kinds: dict[str, int] = {}
        self._keep: list[torch.Tensor] = []  # every tensor the C side points into
        config = model.config
        inner = model.model
        layers = (native.Layer * len(inner.layers))()
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            layers[i].norm1 = self._ptr(layer.input_layernorm.weight)
            layers[i].norm2 = self._ptr(layer.post_attention_layernorm.weight)
            layers[i].qkv = self._matrix(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), quantize)
            layers[i].o = self._matrix(attn.o_proj.weight, quantize)
            layers[i].gate_up = self._matrix(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), quantize)
            layers[i].down = self._matrix(mlp.down_proj.weight, quantize)
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
        m.lm_head = self._matrix(model.lm_head.weight, quantize)
        m.layer = ctypes.cast(layers, ctypes.POINTER(native.Layer))
        self.model = m
        self.vocab = m.vocab
        native.release_free_memory()

    @classmethod
    def build(cls, model, quantize: bool = False) -> "NativeLlama | None":
        fast = FastLlama.build(model, fuse=False)  # it runs prompts only: no stacked fp32 copies
        lib = native.library() if fast is not None else None
        if lib is None:
            return None
        config = model.config
        if config.hidden_size > 4096 or fast.intermediate > 4096 or fast.head_dim > 512:
            return None  # beyond the C step's fixed buffers
        return cls(fast, model, lib, quantize)

    def _ptr(self, tensor: torch.Tensor) -> int:
        tensor = tensor.detach().float().contiguous()
        self._keep.append(tensor)
        return tensor.data_ptr()

    def _matrix(self, weight: torch.Tensor, quantize: bool) -> native.Matrix:
        kind, parts = pack(weight, quantize)
        name = {native.Q4_1: "q4_1", native.Q8_0: "q8_0", native.F32: "f32"}[kind]
        self.kinds[name] = self.kinds.get(name, 0) + 1
        self._keep.extend(parts)
        m = native.Matrix()
        m.kind, m.rows, m.cols = kind, weight.shape[0], weight.shape[1]
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

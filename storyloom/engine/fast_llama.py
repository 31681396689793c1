"""A lean forward pass for Llama-shaped models (SmolLM2 is one).

The transformers model stays the source of truth: this reads its weights once (fusing q/k/v and
gate/up into single matmuls when it decodes with them), keeps a preallocated KV cache, and runs the
same arithmetic with a fraction of the Python per token. Models it does not understand get `None` from `build` and
the library's own forward is used instead.

Decoding and short prompts run in fp32 (greedy output matches the library's). Long prompts are
compute-bound, so on CPUs with bf16 matrix units (AMX, AVX512-BF16) they run their matmuls and
attention in bf16 (about 2.5x faster) while the residual stream and the KV cache stay fp32; the
bench reports how far that moves the log-probs that follow.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from storyloom.engine.kv_cache import capacity_for

log = logging.getLogger(__name__)
BF16_PROMPT_MIN = 64  # prompts at least this long use bf16 matmuls where the CPU has bf16 units


@functools.cache
def cpu_has_bf16_units() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("amx_bf16", "avx512_bf16"))


def _mkldnn_linear(x: torch.Tensor, packed: torch.Tensor, post: str = "none") -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, post, [], "")


# oneDNN's prepacked layout pays for big matrices and costs for small ones. Measured on whole
# 500-token prompts of SmolLM2-135M (2 cores, AMX): gate/up (with SiLU fused) 153 -> 138 ms,
# down 142 -> 135, q/k/v (0.55M weights) 138 -> 135, o (0.33M) 139 -> 144.
PREPACK_MIN_WEIGHTS = 512 * 1024


class _Linear:
    """y = x W^T for W made of one or more stacked matrices (q/k/v, gate/up).

    fp32 uses the model's own tensors, stacked into one copy only when `fuse` (one matmul per
    token instead of three: worth the memory on the lean path, which decodes with them). Long
    prompts use a bf16 copy, stacked, in oneDNN's packed layout where that is faster; with
    `halves` (gate/up) the two stay apart so `swiglu` can fuse SiLU and the product into them."""

    def __init__(self, weights: list[torch.Tensor], bf16: bool, fuse: bool = True, halves: bool = False):
        own = [w.detach().float().contiguous() for w in weights]
        self.sizes = [w.shape[0] for w in own]
        self.out_features = sum(self.sizes)
        self.parts = [torch.cat(own)] if fuse and len(own) > 1 else own
        self.wide: list[torch.Tensor] = []
        self.packed = False
        if bf16:
            wide = [w.to(torch.bfloat16) for w in own] if halves else [torch.cat(own).to(torch.bfloat16)]
            self.wide = wide
            if halves or wide[0].numel() >= PREPACK_MIN_WEIGHTS:
                try:
                    self.wide = [torch.ops.mkldnn._reorder_linear_weight(w, 512) for w in wide]
                    self.packed = True
                except (RuntimeError, AttributeError) as exc:  # this torch build has no oneDNN prepack
                    log.debug("oneDNN weight prepack unavailable, plain matmuls: %s", exc)

    def __call__(self, x: torch.Tensor, wide: bool = False) -> torch.Tensor:
        if wide:
            x = x.to(torch.bfloat16)
            outs = [_mkldnn_linear(x, w) if self.packed else F.linear(x, w) for w in self.wide]
        else:
            outs = [F.linear(x, w) for w in self.parts]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def each(self, x: torch.Tensor) -> list[torch.Tensor]:
        """fp32 outputs of the stacked matrices, one per matrix."""
        if len(self.parts) == 1:
            return list(F.linear(x, self.parts[0]).split(self.sizes, dim=-1))
        return [F.linear(x, w) for w in self.parts]

    def swiglu(self, x: torch.Tensor) -> torch.Tensor:
        """silu(gate(x)) * up(x) in bf16, for a fused [gate; up] matrix."""
        x = x.to(torch.bfloat16)
        gate, up = self.wide
        if self.packed:
            activated = _mkldnn_linear(x, gate, "swish")
            return torch.ops.mkldnn._linear_pointwise.binary(x, activated, up, None, "mul")
        return F.silu(F.linear(x, gate)).mul_(F.linear(x, up))


def supported(model) -> str | None:
    """None when the lean path can run this model, else why not."""
    config = model.config
    if getattr(config, "model_type", "") != "llama":
        return f"model type {getattr(config, 'model_type', '?')!r}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "biases"
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        return "rope scaling"
    if getattr(config, "hidden_act", "silu") != "silu":
        return "activation"
    if next(model.parameters()).device.type != "cpu":
        return "not on the CPU"
    return None


def _rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        params = getattr(config, "rope_parameters", None) or {}
        theta = params.get("rope_theta", 10000.0)
    return float(theta)


class KVState:
    """One generation's cache: [layers, 2, batch, kv_heads, capacity, head_dim] and its filled length."""

    def __init__(self) -> None:
        self.cache: torch.Tensor | None = None
        self.length = 0  # lowering it forgets what follows (a rewind)
        # the native step's: the cache row of each batch row, where finished rows were left in
        # place (NativeLlama.keep_rows); None: row b is batch row b (all that the torch forward reads)
        self.rows: list[int] | None = None


def select_rows(state: KVState, rows: list[int]) -> None:
    """Keep only these cache rows, in this order (the batch rows still going)."""
    cache, filled = state.cache, state.length
    kept = cache.new_empty((*cache.shape[:2], len(rows), *cache.shape[3:]))
    for j, row in enumerate(rows):
        # only the filled positions move: the cache has room for the whole turn beyond them,
        # and copying that too was most of the cost of shrinking
        kept[:, :, j, :, :filled] = cache[:, :, row, :, :filled]
    state.cache = kept


def ensure_cache(state: KVState, layers: int, kv_heads: int, head_dim: int, batch: int, needed: int) -> None:
    """Room in `state` for `batch` rows of `needed` positions; a single cached row is copied to
    every row of a larger batch (candidates share their prompt)."""
    cache = state.cache
    if cache is not None and cache.shape[2] == batch and cache.shape[4] >= needed:
        return
    capacity = capacity_for(needed)
    fresh = torch.empty(layers, 2, batch, kv_heads, capacity, head_dim)
    if cache is not None and state.length:
        old = cache[:, :, :, :, : state.length]
        fresh[:, :, :, :, : state.length] = old.expand(-1, -1, batch, -1, -1, -1) if cache.shape[2] == 1 else old
    state.cache = fresh


class FastLlama:
    """The weights, shared; each generation brings its own KVState (threads never share one)."""

    def __init__(self, model, bf16_prompts: bool | None = None, fuse: bool = True):
        config = model.config
        inner = model.model
        self.bf16 = cpu_has_bf16_units() if bf16_prompts is None else bf16_prompts
        wide = self.bf16
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.embed = inner.embed_tokens.weight.detach().float()
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append((
                layer.input_layernorm.weight.detach().float(),
                _Linear([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], wide, fuse),
                _Linear([attn.o_proj.weight], wide),
                layer.post_attention_layernorm.weight.detach().float(),
                _Linear([mlp.gate_proj.weight, mlp.up_proj.weight], wide, fuse, halves=True),
                _Linear([mlp.down_proj.weight], wide),
            ))
        self.norm = inner.norm.weight.detach().float()
        # Scoring asks for every position's logits: there the head is most of the work, so it
        # gets a bf16 copy too (the last position of a prompt, which sampling reads, stays fp32).
        self.lm_head = _Linear([model.lm_head.weight], wide)
        self.intermediate = self.layers[0][4].out_features // 2
        dim = self.head_dim
        self.inv_freq = 1.0 / (_rope_theta(config) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    @classmethod
    def build(cls, model, bf16_prompts: bool | None = None, fuse: bool = True) -> "FastLlama | None":
        return None if supported(model) else cls(model, bf16_prompts, fuse)

    # -- pieces -------------------------------------------------------------------------
    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, weight.shape, weight, self.eps)

    def _rope(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions start.., shaped to broadcast over [B, T, heads, dim]."""
        positions = torch.arange(start, start + count, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]
        return emb.cos(), emb.sin()

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def _ensure(self, state: KVState, batch: int, needed: int) -> None:
        ensure_cache(state, len(self.layers), self.kv_heads, self.head_dim, batch, needed)

    # -- the forward ----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, state: KVState, all_logits: bool = False) -> torch.Tensor:
        """ids [batch, T] following what `state` holds; returns the last position's logits [batch, vocab]
        (every position's, [batch, T, vocab], with `all_logits`: scoring)."""
        batch, count = ids.shape
        start = state.length
        self._ensure(state, batch, start + count)
        cache = state.cache
        cos, sin = self._rope(start, count)
        h = self.embed[ids]  # [B, T, hidden]
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        q_size, kv_size = heads * dim, kv_heads * dim
        end = start + count
        # compute-bound: long prompts, and scoring (every position's logits, read as log-probs
        # that bf16 moves by about 0.005; sampling reads only a prompt's last position)
        wide = self.bf16 and (all_logits or batch * count >= BF16_PROMPT_MIN)
        if wide:
            cos, sin = cos.to(torch.bfloat16), sin.to(torch.bfloat16)
        for i, (norm1, qkv, o_proj, norm2, gate_up, down) in enumerate(self.layers):
            x = self._norm(h, norm1)
            projected = qkv(x, wide)
            # q and k rotate together: one set of ops for both
            qk = self._rotate(projected[..., : q_size + kv_size].view(batch, count, heads + kv_heads, dim), cos, sin)
            q = qk[:, :, :heads].transpose(1, 2)
            k = qk[:, :, heads:].transpose(1, 2)
            v = projected[..., q_size + kv_size:].view(batch, count, kv_heads, dim).transpose(1, 2)
            cache[i, 0, :, :, start:end] = k
            cache[i, 1, :, :, start:end] = v
            if count == 1:  # the cache is fp32: so must a bf16 query be (scoring one position)
                attn = F.scaled_dot_product_attention(q.float() if wide else q, cache[i, 0, :, :, :end],
                                                      cache[i, 1, :, :, :end], enable_gqa=True)
            elif start == 0:  # a fresh prompt: attend to itself, causally
                attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                mask = torch.ones(count, end, dtype=torch.bool).tril(diagonal=start)
                attn = F.scaled_dot_product_attention(q.float(), cache[i, 0, :, :, :end], cache[i, 1, :, :, :end],
                                                      attn_mask=mask, enable_gqa=True)
            h = h + o_proj(attn.transpose(1, 2).reshape(batch, count, q_size), wide)
            x = self._norm(h, norm2)
            if wide:
                h = h + down(gate_up.swiglu(x), True)
            else:
                gate, up = gate_up.each(x)
                h = h + down(F.silu(gate, inplace=True).mul_(up))
        state.length = end
        if all_logits:
            return self.lm_head(self._norm(h, self.norm), wide).float()
        return self.lm_head(self._norm(h[:, -1], self.norm)).float()

    def expand(self, state: KVState, batch: int) -> None:
        """Copy a single cached row for `batch` rows (candidates share the prompt)."""
        if state.cache is not None and state.cache.shape[2] != batch:
            self._ensure(state, batch, state.length + 1)

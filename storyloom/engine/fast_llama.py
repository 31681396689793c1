"""A lean forward pass for Llama-shaped models (SmolLM2 is one), for decoding token by token.

The transformers model stays the source of truth: this reads its weights once, fuses q/k/v and
gate/up into single matmuls, keeps a preallocated KV cache, and runs the same arithmetic with a
fraction of the Python per token. Models it does not understand get `None` from `build` and
the library's own forward is used instead.

Weights can stay fp32 (greedy output matches the library's) or go int8 per output channel for
decoding (`_weight_int8pack_mm`, a quarter of the memory traffic) with bf16 for prefill (the
CPU's bf16 matrix units); log-probs move slightly (the bench reports by how much).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from storyloom.engine.kv_cache import capacity_for

DTYPES = ("fp32", "int8")


class _Linear:
    """y = x W^T. fp32 keeps the weights as they are. int8 keeps two copies: int8 with one scale
    per output row for decoding (memory-bound: a quarter of the bytes), and bf16 for prefill
    (compute-bound: the CPU's bf16 matrix units)."""

    def __init__(self, weight: torch.Tensor, dtype: str):
        weight = weight.detach().float().contiguous()
        self.out_features = weight.shape[0]
        self.kind = dtype
        if dtype == "int8":
            scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            self.weight = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            self.scales = scales.to(torch.bfloat16).contiguous()  # the fast CPU kernel wants bf16 in and out
            self.wide = weight.to(torch.bfloat16)
        else:
            self.weight = weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "int8":
            shape = x.shape
            rows = x.reshape(-1, shape[-1]).to(torch.bfloat16)
            if rows.shape[0] > 4:  # prefill
                return F.linear(rows, self.wide).view(*shape[:-1], self.out_features)
            y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scales)
            return y.view(*shape[:-1], self.out_features)  # bf16: an fp32 residual add promotes it
        return F.linear(x, self.weight)


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


class FastLlama:
    """The weights, shared; each generation brings its own KVState (threads never share one)."""

    def __init__(self, model, dtype: str = "fp32"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        config = model.config
        inner = model.model
        self.dtype = dtype
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
                _Linear(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), dtype),
                _Linear(attn.o_proj.weight, dtype),
                layer.post_attention_layernorm.weight.detach().float(),
                _Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), dtype),
                _Linear(mlp.down_proj.weight, dtype),
            ))
        self.norm = inner.norm.weight.detach().float()
        self.lm_head = _Linear(model.lm_head.weight, dtype)
        self.intermediate = self.layers[0][4].out_features // 2
        dim = self.head_dim
        self.inv_freq = 1.0 / (_rope_theta(config) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    @classmethod
    def build(cls, model, dtype: str = "fp32") -> "FastLlama | None":
        return None if supported(model) else cls(model, dtype)

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
        cache = state.cache
        if cache is not None and cache.shape[2] == batch and cache.shape[4] >= needed:
            return
        capacity = capacity_for(needed)
        fresh = torch.empty(len(self.layers), 2, batch, self.kv_heads, capacity, self.head_dim)
        if cache is not None and state.length:
            old = cache[:, :, :, :, : state.length]
            fresh[:, :, :, :, : state.length] = old.expand(-1, -1, batch, -1, -1, -1) if cache.shape[2] == 1 else old
        state.cache = fresh

    # -- the forward ----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, state: KVState) -> torch.Tensor:
        """ids [batch, T] following what `state` holds; returns the last position's logits [batch, vocab]."""
        batch, count = ids.shape
        start = state.length
        self._ensure(state, batch, start + count)
        cache = state.cache
        cos, sin = self._rope(start, count)
        h = self.embed[ids]  # [B, T, hidden]
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        q_size, kv_size = heads * dim, kv_heads * dim
        end = start + count
        for i, (norm1, qkv, o_proj, norm2, gate_up, down) in enumerate(self.layers):
            x = self._norm(h, norm1)
            projected = qkv(x).float()
            # q and k rotate together: one set of ops for both
            qk = self._rotate(projected[..., : q_size + kv_size].view(batch, count, heads + kv_heads, dim), cos, sin)
            q = qk[:, :, :heads].transpose(1, 2)
            cache[i, 0, :, :, start:end] = qk[:, :, heads:].transpose(1, 2)
            cache[i, 1, :, :, start:end] = projected[..., q_size + kv_size:].view(batch, count, kv_heads, dim).transpose(1, 2)
            keys = cache[i, 0, :, :, :end]
            values = cache[i, 1, :, :, :end]
            if count == 1:
                attn = F.scaled_dot_product_attention(q, keys, values, enable_gqa=True)
            elif start == 0 and self.dtype == "int8":  # prefill of a fresh prompt, in bf16 like its matmuls
                attn = F.scaled_dot_product_attention(q.to(torch.bfloat16), keys.to(torch.bfloat16),
                                                      values.to(torch.bfloat16), is_causal=True, enable_gqa=True)
            else:
                mask = torch.ones(count, end, dtype=torch.bool).tril(diagonal=start)
                attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
            h = h + o_proj(attn.transpose(1, 2).reshape(batch, count, q_size))
            x = self._norm(h, norm2)
            gate, up = gate_up(x).split(self.intermediate, dim=-1)
            h = h + down(F.silu(gate, inplace=True).mul_(up))
        state.length = end
        return self.lm_head(self._norm(h[:, -1], self.norm)).float()

    def expand(self, state: KVState, batch: int) -> None:
        """Copy a single cached row for `batch` rows (candidates share the prompt)."""
        if state.cache is not None and state.cache.shape[2] != batch:
            self._ensure(state, batch, state.length + 1)

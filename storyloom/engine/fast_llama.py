"""A lean forward pass for Llama-shaped models (SmolLM2 is one).

The transformers model stays the source of truth: this reads its weights once, fuses q/k/v and
gate/up into single matmuls, keeps a preallocated KV cache, and runs the same arithmetic with a
fraction of the Python per token. Models it does not understand get `None` from `build` and
the library's own forward is used instead.

Decoding and short prompts run in fp32 (greedy output matches the library's). Long prompts are
compute-bound, so on CPUs with bf16 matrix units (AMX, AVX512-BF16) they run their matmuls and
attention in bf16 (about 2.5x faster) while the residual stream and the KV cache stay fp32; the
bench reports how far that moves the log-probs that follow.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from storyloom.engine.kv_cache import capacity_for

BF16_PROMPT_MIN = 64  # prompts at least this long use bf16 matmuls where the CPU has bf16 units


@functools.cache
def cpu_has_bf16_units() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("amx_bf16", "avx512_bf16"))


class _Linear:
    """y = x W^T in fp32, and in bf16 for long prompts (a bf16 copy of W is kept for that)."""

    def __init__(self, weight: torch.Tensor, bf16: bool):
        self.weight = weight.detach().float().contiguous()
        self.out_features = self.weight.shape[0]
        self.wide = self.weight.to(torch.bfloat16) if bf16 else None
        if bf16:
            self.wide = torch.ops.mkldnn._reorder_linear_weight(self.wide, 512)

    def __call__(self, x: torch.Tensor, wide: bool = False) -> torch.Tensor:
        if wide:
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.wide, None, "none", [], "")
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

    def __init__(self, model, bf16_prompts: bool | None = None):
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
                _Linear(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), wide),
                _Linear(attn.o_proj.weight, wide),
                layer.post_attention_layernorm.weight.detach().float(),
                _Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), wide),
                _Linear(mlp.down_proj.weight, wide),
            ))
        self.norm = inner.norm.weight.detach().float()
        self.lm_head = _Linear(model.lm_head.weight, False)
        self.intermediate = self.layers[0][4].out_features // 2
        dim = self.head_dim
        self.inv_freq = 1.0 / (_rope_theta(config) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    @classmethod
    def build(cls, model, bf16_prompts: bool | None = None) -> "FastLlama | None":
        return None if supported(model) else cls(model, bf16_prompts)

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
        wide = self.bf16 and count >= BF16_PROMPT_MIN
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
            if count == 1:
                attn = F.scaled_dot_product_attention(q, cache[i, 0, :, :, :end], cache[i, 1, :, :, :end], enable_gqa=True)
            elif start == 0:  # a fresh prompt: attend to itself, causally
                attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                mask = torch.ones(count, end, dtype=torch.bool).tril(diagonal=start)
                attn = F.scaled_dot_product_attention(q.float(), cache[i, 0, :, :, :end], cache[i, 1, :, :, :end],
                                                      attn_mask=mask, enable_gqa=True)
            h = h + o_proj(attn.transpose(1, 2).reshape(batch, count, q_size), wide)
            x = self._norm(h, norm2)
            gate, up = gate_up(x, wide).split(self.intermediate, dim=-1)
            h = h + down(F.silu(gate) * up, wide)
        state.length = end
        return self.lm_head(self._norm(h[:, -1], self.norm)).float()

    def expand(self, state: KVState, batch: int) -> None:
        """Copy a single cached row for `batch` rows (candidates share the prompt)."""
        if state.cache is not None and state.cache.shape[2] != batch:
            self._ensure(state, batch, state.length + 1)

"""A KV cache that grows in place instead of by torch.cat.

transformers' DynamicLayer concatenates every step, copying the whole cache for each new
token: the cost grows with the prompt (quadratic over a turn) and with the batch (four
candidates copy four caches). This layer writes into a preallocated buffer and hands out a
view of the filled part, so the model sees exactly what DynamicLayer would give it.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

ROOM = 256  # extra positions allocated beyond what is needed now


def capacity_for(needed: int) -> int:
    """Positions to allocate when `needed` no longer fit: room to grow, amortised like a list."""
    return needed + max(ROOM, needed // 2)


class InPlaceLayer(DynamicLayer):
    _buf_k: torch.Tensor | None = None
    _buf_v: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        have = self.get_seq_length()
        need = have + key_states.shape[-2]
        buf = self._buf_k
        # Rebuild when there is no buffer yet, it is full, or `keys` was replaced by a method
        # inherited from DynamicLayer (batch_repeat_interleave, crop, batch_select_indices).
        if (buf is None or need > buf.shape[-2] or buf.shape[0] != key_states.shape[0]
                or (have and self.keys.data_ptr() != buf.data_ptr())):
            capacity = capacity_for(need)
            self._buf_k = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[-1]))
            self._buf_v = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[-1]))
            if have:
                self._buf_k[:, :, :have] = self.keys
                self._buf_v[:, :, :have] = self.values
        self._buf_k[:, :, have:need] = key_states
        self._buf_v[:, :, have:need] = value_states
        self.keys = self._buf_k[:, :, :need]
        self.values = self._buf_v[:, :, :need]
        return self.keys, self.values


def new_cache(config) -> DynamicCache:
    """A DynamicCache whose full-attention layers grow in place (sliding ones stay as they are)."""
    cache = DynamicCache(config=config)
    cache.layers = [InPlaceLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache

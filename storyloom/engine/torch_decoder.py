"""The torch side of constrained decoding (see constrained.py): a local model's KV cache,
logits, sampler and random state, stepped one chosen token at a time."""
from __future__ import annotations

import os
from typing import Sequence

import torch

from storyloom.engine.logits import choose_next
from storyloom.engine.sampling import SamplerSettings


class TorchDecoder:
    """A ConstrainedDecoder over a local generator's decode state (decode_state/encode/decode)."""

    def __init__(self, generator, text: str, seed: int | None = None):
        self.generator = generator
        self.rng = torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
        self.state = generator.decode_state(generator.encode(text))
        self.logits = self.state.logits[0]
        self.history: list[int] = []

    def mark(self) -> tuple:
        return self.state.length, self.logits, len(self.history)

    def rewind(self, mark: tuple) -> None:
        length, logits, history = mark
        self.state.crop(length)
        self.logits = logits
        del self.history[history:]

    def step(self, token: int) -> None:
        self.logits = self.state.feed(torch.tensor([[token]]))[0]
        self.history.append(token)

    def sample(self, allowed: Sequence[int], settings: SamplerSettings) -> tuple[int, float]:
        logits = self.logits.float()
        index = torch.tensor(list(allowed), dtype=torch.long)
        masked = torch.full_like(logits, float("-inf"))
        masked[index] = logits[index]
        # the penalty looks only at its own window (repetition_range) of the text so far
        token = int(choose_next(masked[None], torch.tensor([self.history], dtype=torch.long), settings, self.rng)[0])
        return token, float(torch.log_softmax(logits, -1)[token])

    def decode(self, ids: Sequence[int]) -> str:
        return self.generator.decode(ids)

"""Constrained decoding: the caller says which tokens may come next, the engine picks one.

Poetry (modes/poetry) decides which tokens keep a line scannable; the engine holds the model's
side of it (KV cache, logits, sampler, random state) behind this interface, so modes never touch
torch. A backend that cannot expose its logits serves the same constraint as a grammar instead
(capabilities.grammar). This module imports no torch: modes import it.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from storyloom.engine.sampling import SamplerSettings


class ConstrainedDecoder(Protocol):
    """The model's state over a text, advanced one chosen token at a time, with marks to rewind to.
    The tokens fed since the start are the repetition penalty's history."""

    def mark(self) -> object:
        """A point to come back to (opaque to the caller)."""

    def rewind(self, mark: object) -> None: ...

    def step(self, token: int) -> None:
        """Feed one token (the one sample() chose, or any other)."""

    def sample(self, allowed: Sequence[int], settings: SamplerSettings) -> tuple[int, float]:
        """Draw the next token among `allowed` (the sampler's filters and repetition penalty over
        those only), with its log-prob under the unconstrained model (how much it was forced)."""

    def decode(self, ids: Sequence[int]) -> str: ...


def steers_tokens(generator) -> bool:
    """Can a ConstrainedDecoder pick every token of this generator? (The one place that asks.)"""
    return generator.capabilities.token_steering


def open_decoder(generator, text: str, seed: int | None = None) -> ConstrainedDecoder:
    """A decoder over `text` (the prompt so far), its sampling seeded with `seed` (None: random)."""
    make = getattr(generator, "constrained_decoder", None)
    if make is None:
        from storyloom import StoryloomError

        raise StoryloomError(f"{generator.name} does not let StoryLoom pick each token.")
    return make(text, seed)

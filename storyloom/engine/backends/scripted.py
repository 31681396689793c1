"""A generator that replays queued outputs: deterministic tests and demos without a model."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Iterable, Iterator, Sequence

from storyloom.engine.generate import (
    Cancel, Capabilities, GenerationStats, Generator, ModelInfo, StopScanner, TokenChoice,
)
from storyloom.engine.sampling import SamplerSettings

# The scripted model's alternatives at every token: fixed words, so screens are reproducible.
ALTERNATIVES = (" suddenly", " quietly", " the", " a", " lantern", " river", " door", " and", " then", " cold",
                " old")


class ScriptedGenerator(Generator):
    """Streams queued texts word by word; records every prompt it was given."""

    capabilities = Capabilities(stream=True, batch=True, token_logprobs=True, scoring=True, seed=False)

    def __init__(self, outputs: Iterable[str] = (), context_length: int = 2048, delay: float = 0.0,
                 default: str = "Nothing happens."):
        self.queue = deque(outputs)
        self.prompts: list[str] = []
        self.delay = delay
        self.default = default
        self.release = threading.Event()  # for tests that hold a generation open
        self.release.set()
        self.info = ModelInfo(name="scripted", backend="scripted", context_length=context_length)
        self.last_stats = GenerationStats()

    def push(self, *outputs: str) -> None:
        self.queue.extend(outputs)

    def _next(self) -> str:
        return self.queue.popleft() if self.queue else self.default

    def _stream(self, prompt: str, settings: SamplerSettings, cancel: Cancel | None) -> Iterator[str]:
        self.prompts.append(prompt)
        text = self._next()
        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)][: settings.max_new_tokens]
        scanner = StopScanner(settings.stop)
        so_far = ""
        for piece in pieces:
            self.release.wait(10)
            if cancel is not None and cancel.is_set():
                break
            if self.delay:
                time.sleep(self.delay)
            so_far += piece
            out = scanner.feed(so_far)
            if out:
                yield out
            if scanner.stopped:
                break
        else:
            rest = scanner.finish(so_far)
            if rest:
                yield rest
        # Report a fixed simulated speed (100 tok/s) so screens showing it are reproducible.
        self.last_stats = GenerationStats(len(prompt.split()), len(pieces), len(pieces) / 100, 0.01)

    def candidates(self, prompt: str, n: int, settings: SamplerSettings | None = None,
                   cancel: Cancel | None = None, on_step: Callable[[int], None] | None = None,
                   grammar: str | None = None, enough=None, record=None, complete=None) -> list[str]:
        """The next n queued outputs; one progress step per candidate. All n are drawn (`enough`
        never cuts them short), so tests queue whole batches."""
        if grammar is not None:
            self._check_grammar()
        settings = settings or SamplerSettings()
        out = []
        for i in range(n):
            out.append("".join(self._stream(prompt, settings, cancel)))
            if on_step is not None:
                on_step(i + 1)
        return out

    def score_many(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Fewer repeated words score higher: minus words per distinct word."""
        return [-(len(words) / len(set(words))) if words else -0.0
                for words in (c.split() for c in continuations)]

    def token_choices(self, prompt: str, text: str, top: int = 10) -> list[TokenChoice]:
        """Words as tokens: each word 40% likely, then ALTERNATIVES at 30%, 10%, 5%, ..."""
        self.prompts.append(prompt)
        out, at = [], 0
        for i, word in enumerate(text.split(" ")):
            piece = word if i == 0 else " " + word
            if piece.strip():
                others = [(a, round(0.3 / 2 ** k, 4)) for k, a in enumerate(a for a in ALTERNATIVES if a != piece)]
                out.append(TokenChoice(at, piece, 0.4, tuple(sorted([(piece, 0.4), *others],
                                                                     key=lambda x: -x[1])[:top])))
            at += len(piece)
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

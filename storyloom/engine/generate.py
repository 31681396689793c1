"""The Generator interface every backend implements, and the text plumbing they share.

stream(prompt, settings, cancel) yields text pieces as tokens arrive; candidates() makes n
continuations of one prompt in one batched call; score() is the mean token log-prob of a
continuation, used for ranking.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from storyloom.engine.sampling import SamplerSettings


class Cancel(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ModelInfo:
    name: str
    backend: str
    parameters: int | None = None
    dtype: str | None = None
    context_length: int | None = None
    location: str | None = None
    chat_template: bool = False
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Modes ask these, never which backend runs (see backends/__init__.py).

    stream          text arrives piece by piece (else one piece at the end)
    batch           n candidates of one prompt in one call (a batch, or `n` in one request)
    token_logprobs  each generated token's log-prob and its top alternatives
    scoring         score_many(prompt, continuations): log-probs of given text (co-write ranking)
    grammar         the grammar dialect `stream(..., grammar=...)` accepts ("gbnf"), or None
    token_steering  decode_state()/encode()/decode(): a constrained decoder may pick every token
    exact_tokens    count_tokens() is the model's own tokenizer (else a safe over-estimate)
    seed            a seed makes sampling repeatable
    parallel        how many generations it serves at once (a server's slots; 1 on this computer,
                    where two would only share the same cores)
    """

    stream: bool = True
    batch: bool = False
    token_logprobs: bool = False
    scoring: bool = False
    grammar: str | None = None
    token_steering: bool = False
    exact_tokens: bool = True
    seed: bool = True
    parallel: int = 1


@dataclass(frozen=True)
class TokenChoice:
    """One token of a text: where it starts in the text, its text, its probability under the
    model, and the model's likeliest tokens at that place (text, probability), best first."""

    start: int
    text: str
    probability: float
    alternatives: tuple[tuple[str, float], ...]


TOP_ALTERNATIVES = 10


@dataclass
class RowLogprobs:
    """One candidate as the model scored it while writing it: where each token ends in the
    candidate's text, and its log-prob under the model itself (before any sampler reshaped it).
    Ranking reads these instead of running the text through the model a second time."""

    ends: list[int]
    logprobs: list[float]

    def mean(self, start: int, end: int) -> float | None:
        """Mean log-prob of the tokens that make text[start:end] (a token cut by either edge
        counts); None where no token does."""
        picked = [lp for i, lp in enumerate(self.logprobs)
                  if self.ends[i] > start and (i == 0 or self.ends[i - 1] < end)]
        return sum(picked) / len(picked) if picked else None


class Generator:
    """Base class: subclasses implement _stream, candidates, score_many, count_tokens.

    `capabilities` says which of these are real; `stop_strings` are the backend's own end-of-turn
    markers (chat tokens), which modes add to their own stops instead of hard-coding a format.
    """

    info: ModelInfo
    last_stats: GenerationStats
    capabilities: Capabilities = Capabilities()
    stop_strings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def context_length(self) -> int:
        return self.info.context_length or 2048

    def stream(
        self, prompt: str, settings: SamplerSettings | None = None, cancel: Cancel | None = None,
        grammar: str | None = None,
    ) -> Iterator[str]:
        """Text pieces as they arrive. `grammar` (in the dialect capabilities.grammar names)
        restricts the output; backends without grammar support refuse it."""
        settings = settings or SamplerSettings()
        if grammar is None:
            yield from self._stream(prompt, settings, cancel)
        else:
            self._check_grammar()
            yield from self._stream(prompt, settings, cancel, grammar=grammar)

    def generate(
        self, prompt: str, settings: SamplerSettings | None = None, cancel: Cancel | None = None,
        grammar: str | None = None,
    ) -> str:
        return "".join(self.stream(prompt, settings, cancel, grammar))

    def _check_grammar(self) -> None:
        if not self.capabilities.grammar:
            from storyloom import StoryloomError

            raise StoryloomError(f"{self.name} cannot follow a grammar.")

    def _stream(self, prompt: str, settings: SamplerSettings, cancel: Cancel | None) -> Iterator[str]:
        raise NotImplementedError

    def candidates(
        self, prompt: str, n: int, settings: SamplerSettings | None = None, cancel: Cancel | None = None,
        on_step: Callable[[int], None] | None = None, grammar: str | None = None,
        enough: Callable[[list[str], list[bool]], bool] | None = None,
        record: list[RowLogprobs] | None = None, complete: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """n continuations in one batched call; `on_step(k)` after each decoding step (progress);
        `grammar` as in stream(). `enough(texts, finished)`, called after each step (or each
        finished candidate), may end the call early: True returns the unfinished ones as far as
        they got (a backend that cannot stop part-way draws them all). A backend that knows its
        tokens' log-probs while writing appends one RowLogprobs per candidate to `record`
        (others leave it empty). `complete(text)` True ends that candidate there, as a stop
        string would (its text is kept whole: the caller cuts it); the others write on."""
        raise NotImplementedError

    def token_choices(self, prompt: str, text: str, top: int = TOP_ALTERNATIVES) -> list[TokenChoice]:
        """Each token of `text` after `prompt` with its probability and the `top` alternatives
        (where capabilities.token_logprobs says the backend can)."""
        from storyloom import StoryloomError

        raise StoryloomError(f"{self.name} does not give token probabilities.")

    def ignored_samplers(self, settings: SamplerSettings) -> list[str]:
        """Samplers `settings` turns on that this backend does not apply (a remote server's gaps)."""
        return []

    def score(self, prompt: str, continuation: str) -> float:
        return self.score_many(prompt, [continuation])[0]

    def score_many(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """Plain completion format; instruct backends override with their chat template."""
        return "\n\n".join(m["content"] for m in messages) + "\n\n"


class StopScanner:
    """Feeds on the growing decoded text and says how much of it is safe to show.

    Text that could be the start of a stop string is held back until it is known not to be;
    once a stop string appears, everything from it on is dropped.
    """

    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(s for s in stops if s)
        self.emitted = 0
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the new piece of `text` that may be shown now."""
        if self.stopped:
            return ""
        cut = None
        for stop in self.stops:
            at = text.find(stop, max(0, self.emitted - len(stop) + 1))
            if at != -1 and (cut is None or at < cut):
                cut = at
        if cut is not None:
            self.stopped = True
            piece, self.emitted = text[self.emitted:cut], max(self.emitted, cut)
            return piece
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:k]):
                    hold = k
                    break
        safe = max(self.emitted, len(text) - hold)
        piece, self.emitted = text[self.emitted:safe], safe
        return piece

    def finish(self, text: str) -> str:
        """The stream ended: release anything held back (unless a stop was hit)."""
        if self.stopped:
            return ""
        piece = self.feed(text)
        rest, self.emitted = text[self.emitted:], len(text)
        return piece + rest


def cut_at_stops(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one was found."""
    stops = tuple(stops)
    if not any(stop and stop in text for stop in stops):  # the common case: asked of every row each step
        return text, False
    scanner = StopScanner(stops)
    kept = scanner.feed(text)
    if scanner.stopped:
        return kept, True
    return kept + scanner.finish(text), False


class Stopwatch:
    def __init__(self, prompt_tokens: int = 0):
        self.stats = GenerationStats(prompt_tokens=prompt_tokens)
        self._t0 = time.perf_counter()

    def token(self, count: int = 1) -> None:
        if self.stats.first_token_seconds is None:
            self.stats.first_token_seconds = time.perf_counter() - self._t0
        self.stats.new_tokens += count

    def done(self) -> GenerationStats:
        self.stats.seconds = time.perf_counter() - self._t0
        return self.stats

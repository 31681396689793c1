"""Lines written by an engine that follows a grammar but does not let StoryLoom pick each token
(a llama.cpp or vLLM server): each line is asked for under its grammar (grammar.py), several
times, and only a line the scanner passes is kept. The writing loop, backtracking and time cap
are compose.py's, the same as for the local path.
"""
from __future__ import annotations

import random
import time
from typing import Callable

from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.poetry.compose import LINE_CANDIDATES, LINE_TRIES, Poem, PoemLine, plain
from storyloom.modes.poetry.constrain import Lexicon, RhymeRule
from storyloom.modes.poetry.grammar import line_grammar
from storyloom.modes.poetry.scan import last_word


class _Until:
    """The caller's cancel flag, also set once the poem's time is up (a request in flight stops too)."""

    def __init__(self, deadline: float, cancel):
        self.deadline, self.cancel = deadline, cancel

    def is_set(self) -> bool:
        return time.monotonic() > self.deadline or (self.cancel is not None and self.cancel.is_set())


class GrammarWriter:
    """The poem so far is plain text; a mark is that text."""

    def __init__(self, generator, lexicon: Lexicon, text: str, seed: int | None):
        self.generator = generator
        self.lexicon = lexicon
        self.text = text
        self.rng = random.Random(seed)  # each request's seed; None: from the system's randomness

    def mark(self) -> str:
        return self.text

    def skip(self, mark: str) -> None:
        self.text = mark + "\n"

    def _ask(self, prompt: str, n: int, grammar: str, settings: SamplerSettings, cancel: _Until) -> list[str]:
        """n lines under the grammar: at once where the backend batches or serves requests side by
        side (and its candidates() takes a grammar), else one after the other."""
        gen, caps = self.generator, self.generator.capabilities
        at_once = caps.batch or getattr(caps, "parallel", 1) > 1
        if n > 1 and at_once:
            return gen.candidates(prompt, n, settings.with_(seed=self.rng.randrange(2**31)), cancel, grammar=grammar)
        out = []
        for _ in range(n):
            if cancel.is_set():
                break
            out.append(gen.generate(prompt, settings.with_(seed=self.rng.randrange(2**31)), cancel, grammar=grammar))
        return out

    def best_line(self, mark: str, templates: tuple[str, ...], rule: RhymeRule, verify: Callable[[str], bool],
                  settings: SamplerSettings, deadline: float, cancel, poem: Poem | None = None,
                  keep: int = LINE_CANDIDATES, avoid: frozenset[str] = frozenset()) -> PoemLine | None:
        """Up to LINE_TRIES lines asked for; of those the scanner passes, the likeliest (when the
        backend can score text; else the first) is kept and the poem goes on after it."""
        self.text = mark
        grammar = line_grammar(self.lexicon, templates, rule)
        if grammar is None:
            return None  # no word of the lexicon can end this line: the caller backtracks
        scoring = self.generator.capabilities.scoring
        keep = keep if scoring else 1
        line_settings = settings.with_(stop=("\n",), max_new_tokens=4 * max(len(t) for t in templates) + 12)
        until = _Until(deadline, cancel)
        found: list[str] = []
        tries = 0
        while tries < LINE_TRIES and len(found) < keep and not until.is_set():
            texts = self._ask(mark, min(keep - len(found), LINE_TRIES - tries), grammar, line_settings, until)
            if not texts:
                break
            for raw in texts:
                tries += 1
                if poem is not None:
                    poem.line_tries += 1
                text = raw.split("\n")[0].strip()
                # the scanner has the last word: a server that ignored the grammar is caught here
                if text and plain(text) not in avoid and text not in found and verify(text):
                    found.append(text)
        if not found:
            return None
        scores = self.generator.score_many(mark, found) if scoring else [0.0] * len(found)
        best, score = max(zip(found, scores), key=lambda pair: pair[1])
        self.text = mark + best + "\n"
        try:
            tokens = self.generator.count_tokens(best)
        except NotImplementedError:
            tokens = len(best.split())
        return PoemLine(best, True, last_word(best), score * tokens if scoring else 0.0, tokens)

"""Lines written by an engine that follows a grammar but does not let StoryLoom pick each token
(a llama.cpp or vLLM server): each line is asked for under its grammar (grammar.py), several
times, and only a line the scanner passes is kept, ranked as the local path ranks (compose.pick).
The writing loop, backtracking and time budget are compose.py's, the same as for the local path;
the first request of a line is never cut short by the line's budget (a slow server still gets
its line).
"""
from __future__ import annotations

import random
import time
from typing import Callable

from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.poetry.compose import LINE_CANDIDATES, Poem, PoemLine, phrases, pick, plain
from storyloom.modes.poetry.constrain import Lexicon, RhymeRule
from storyloom.modes.poetry.grammar import line_grammar
from storyloom.modes.poetry.scan import last_word


ASK_TRIES = 12  # lines asked for per slot at most (a server's lines are not drawn side by side)


class _Until:
    """The caller's cancel flag, also set once the poem's time is up (a request in flight stops too)."""

    def __init__(self, deadline: float | None, cancel):
        self.deadline, self.cancel = deadline, cancel

    def is_set(self) -> bool:
        return ((self.deadline is not None and time.monotonic() > self.deadline)
                or (self.cancel is not None and self.cancel.is_set()))


class GrammarWriter:
    """Each line is asked for after its context (plain text: the heading and the last lines)."""

    def __init__(self, generator, lexicon: Lexicon, seed: int | None):
        self.generator = generator
        self.lexicon = lexicon
        self.rng = random.Random(seed)  # each request's seed; None: from the system's randomness

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
                  keep: int = LINE_CANDIDATES, avoid: frozenset[str] = frozenset(),
                  judge: Callable[[str], float] | None = None, openings: frozenset = frozenset(),
                  plan=None, topical: bool = False, more: int = 0, closing: bool = False,
                  repeats: Callable[[str], int] | None = None,
                  banned: frozenset[tuple[str, str]] = frozenset()) -> PoemLine | None:
        """Up to ASK_TRIES lines asked for after `mark` (the context); of those the scanner passes
        (openings are the verifier's to check here), the best (compose.pick, by the model's score
        when the backend can score text, else the critic and the order drawn) is kept. (`plan` is
        the token path's: a grammar engine's rhyme words are not planned, see plan.py; so are `topical`
        and `more`.) A `closing` line's grammar ends it on . ! or ?. A line that says a `banned`
        phrase (compose.phrases) is let go, as one said before is (the grammar cannot bar it)."""
        grammar = line_grammar(self.lexicon, templates, rule, closing)
        if grammar is None:
            return None  # no word of the lexicon can end this line: the caller backtracks
        scoring = self.generator.capabilities.scoring
        keep = keep if scoring else 1
        line_settings = settings.with_(stop=("\n",), max_new_tokens=4 * max(len(t) for t in templates) + 12)
        found: list[str] = []
        tries = 0
        while tries < ASK_TRIES and len(found) < keep:
            until = _Until(deadline if found else None, cancel)  # the first line is always waited for
            if until.is_set():
                break
            texts = self._ask(mark, min(keep - len(found), ASK_TRIES - tries), grammar, line_settings, until)
            if not texts:
                break
            for raw in texts:
                tries += 1
                if poem is not None:
                    poem.line_tries += 1
                text = raw.split("\n")[0].strip()
                # the scanner has the last word: a server that ignored the grammar is caught here
                if text and plain(text) not in avoid and text not in found and verify(text) \
                        and not phrases(text) & banned:
                    found.append(text)
        if not found:
            return None
        scores = self.generator.score_many(mark, found) if scoring else [0.0] * len(found)
        lines = []
        for text, score in zip(found, scores):
            try:
                tokens = self.generator.count_tokens(text)
            except NotImplementedError:
                tokens = len(text.split())
            line = PoemLine(text, True, last_word(text), score * tokens if scoring else 0.0, max(tokens, 1))
            line.penalty = judge(text) if judge else 0.0
            line.repeats = repeats(text) if repeats else 0
            lines.append(line)
        return pick(lines)

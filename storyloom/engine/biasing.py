"""Phrase bias on text, not tokens (no torch here): NovelAI's lorebook phrase bias.

A phrase ("Mira", "Lady Ashworth") is many tokens, and which ones depends on what comes before
it (" Mira" after a word, "Mira" after a newline). So, like banning.py, it works on the decoded
text: at each step it looks at what the text so far ends with. If the text ends with the start
of a phrase (" Lady Ash"), the token that goes on with the phrase ("worth") is raised; if not,
the first token of the phrase as it would follow this text is raised. A phrase the text already
holds (whole words, any case) is no longer pushed: a name said once in a turn is enough.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Sequence

MAX_PHRASES = 32  # per generation: each costs a few string checks per token
MAX_BIAS = 20.0  # in logits; more than this is a ban's mirror image (the phrase every time)
OPENERS = "([{“‘"


def _alnum(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class PhraseBias:
    """Phrases and their bias in logits (added before temperature, as llama.cpp's logit_bias)."""

    def __init__(self, phrases: Sequence[tuple[str, float]], encode: Callable[[str], list[int]]):
        chosen: dict[str, float] = {}
        for phrase, bias in phrases:
            phrase = " ".join(phrase.split())
            if phrase and bias and phrase.lower() not in {p.lower() for p in chosen}:
                chosen[phrase] = float(bias)
        self.phrases = tuple(chosen.items())[:MAX_PHRASES]
        self._patterns = [re.compile(r"(?<!\w)" + re.escape(p) + r"(?!\w)", re.IGNORECASE) for p, _ in self.phrases]
        self._first = lru_cache(maxsize=1024)(lambda text: (encode(text) or [None])[0])

    def __bool__(self) -> bool:
        return bool(self.phrases)

    def used(self, text: str) -> list[str]:
        """The phrases `text` already holds (a phrase that ends the text counts: it is complete)."""
        return [p for (p, _), pattern in zip(self.phrases, self._patterns) if pattern.search(text)]

    def pushes(self, text: str, before: str = "") -> dict[int, float]:
        """Token id -> bias for the next token after `text` (this generation's output so far);
        `before` is the prompt's last character (what the output's first token follows)."""
        out: dict[int, float] = {}
        for (phrase, bias), pattern in zip(self.phrases, self._patterns):
            if pattern.search(text):
                continue  # said already
            rest = self._rest(phrase, text, before)
            token = self._first(rest)
            if token is not None and abs(bias) > abs(out.get(token, 0.0)):
                out[token] = bias  # two phrases on one token: the larger bias, not the sum
        return out

    @staticmethod
    def _rest(phrase: str, text: str, before: str) -> str:
        """What is left of `phrase` to write after `text`: the phrase after its begun part, or
        all of it (with a space in front unless the text ends in a space or an opening mark)."""
        for k in range(min(len(phrase) - 1, len(text)), 0, -1):
            if text.endswith(phrase[:k]):
                edge = text[-k - 1] if len(text) > k else before
                if not edge or not _alnum(edge):
                    return phrase[k:]
        last = text[-1] if text else before
        if not last or last.isspace() or last in OPENERS or (last == '"' and text.count('"') % 2 == 1):
            return phrase
        return " " + phrase


def check(phrases) -> tuple[tuple[str, float], ...]:
    """Phrase-bias pairs as settings hold them; ValueError says what is wrong."""
    if isinstance(phrases, (str, bytes)) or not isinstance(phrases, (list, tuple)):
        raise ValueError("must be a list of [phrase, bias] pairs")
    out = []
    for pair in phrases:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError("must be a list of [phrase, bias] pairs")
        phrase, bias = pair
        if not isinstance(phrase, str) or not phrase.strip() or len(phrase) > 100:
            raise ValueError("needs phrases of 1 to 100 characters")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -MAX_BIAS <= bias <= MAX_BIAS:
            raise ValueError(f"needs biases between -{MAX_BIAS:g} and {MAX_BIAS:g}")
        out.append((phrase, float(bias)))
    if len(out) > 200:
        raise ValueError("takes at most 200 phrases")
    return tuple(out)

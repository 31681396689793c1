"""Text helpers the modes share: sentence ends, a cached token counter, trimming to a budget."""
from __future__ import annotations

import re
from typing import Callable, Sequence

# A sentence ends at . ! ? or … (closing quotes and brackets included), before a space or the end.
SENTENCE_END = re.compile(r"""[.!?…]["'”’)\]]*(?=\s|$)""")


# A special token spelled out as text (<|im_end|>, <|eot_id|>, <|endoftext|>...): whatever the chat
# format, what follows it is not story. Backends stop on their own markers (Generator.stop_strings);
# this catches one that reached the text anyway (a server that prints them, say).
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def cut_special(text: str) -> str:
    """`text` up to the first spelled-out special token."""
    found = _SPECIAL_TOKEN.search(text)
    return text[: found.start()] if found else text


class TokenCounter:
    """Counts tokens with a cache, since the same turns are counted every turn."""

    def __init__(self, count: Callable[[str], int]):
        self._count = count
        self._cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            n = self._cache[text] = self._count(text)
        return n


def fit_text(text: str, count: TokenCounter, budget: int, keep_end: bool) -> str:
    """Trim text (by words) until it fits `budget` tokens."""
    if budget <= 0:
        return ""
    if count(text) <= budget:
        return text
    words = text.split(" ")
    lo, hi = 0, len(words)
    while lo < hi:  # binary search for the most words that fit
        mid = (lo + hi + 1) // 2
        part = " ".join(words[-mid:] if keep_end else words[:mid])
        lo, hi = (mid, hi) if count(part) <= budget else (lo, mid - 1)
    return " ".join(words[-lo:] if keep_end else words[:lo]) if lo else ""


def latest_that_fit(pieces: Sequence[str], count: Callable[[str], int], room: int) -> list[str]:
    """As many of the last `pieces` as fit in `room` tokens, in their order. When even the
    last one alone is too long, its end is kept (the most recent words)."""
    kept: list[str] = []
    used = 0
    for piece in reversed(pieces):
        cost = count(piece)
        if used + cost > room:
            if not kept:
                piece = fit_text(piece, count, room - used, keep_end=True)
                if piece:
                    kept.append(piece)
            break
        kept.append(piece)
        used += cost
    kept.reverse()
    return kept

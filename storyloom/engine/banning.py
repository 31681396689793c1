"""Phrase banning on text, not tokens (no torch here).

A banned phrase can form from any tokens (" dr" + "agon", or one token " dragon"), so it is
found in the decoded text: when one appears, the decode loop backs up to the token where it
began and bans that token there (as koboldcpp's anti-slop and exllamav2's banned strings do).
Matching ignores case and respects word edges: banning "dragon" leaves "dragonfly" alone.
Text that could still become a banned phrase is held back from the screen until it cannot.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence


def _edge(phrase: str, at_start: bool) -> str:
    ch = phrase[0] if at_start else phrase[-1]
    if not (ch.isalnum() or ch == "_"):
        return ""
    return r"(?<!\w)" if at_start else r"(?!\w)"


@dataclass(frozen=True)
class Match:
    start: int  # the character where the banned phrase begins
    phrase: str


class PhraseBan:
    def __init__(self, phrases: Sequence[str]):
        self.phrases = tuple(p for p in dict.fromkeys(p.strip() for p in phrases) if p)
        self.lowered = tuple(p.lower() for p in self.phrases)
        self._patterns = [re.compile(_edge(p, True) + re.escape(p) + _edge(p, False), re.IGNORECASE)
                          for p in self.phrases]

    def __bool__(self) -> bool:
        return bool(self.phrases)

    def find(self, text: str, final: bool = False) -> Match | None:
        """The earliest banned phrase in `text`. A phrase that ends a word at the very end of the
        text is only a match when `final` (the next token could still make it "dragonfly")."""
        best: Match | None = None
        for phrase, pattern in zip(self.phrases, self._patterns):
            for m in pattern.finditer(text):
                if not final and m.end() == len(text) and _edge(phrase, False):
                    continue
                if best is None or m.start() < best.start:
                    best = Match(m.start(), phrase)
                break
        return best

    def hold(self, text: str) -> int:
        """How many characters at the end of `text` could begin a banned phrase (keep them back)."""
        low = text.lower()
        hold = 0
        for phrase in self.lowered:
            for k in range(min(len(phrase), len(low)), hold, -1):
                if low.endswith(phrase[:k]) and (k == len(low) or not _edge(phrase, True)
                                                 or not (low[-k - 1].isalnum() or low[-k - 1] == "_")):
                    hold = k
                    break
        return hold


def token_at(offsets: Sequence[int], char: int) -> int:
    """The index of the token whose text holds character `char`, given each token's start offset."""
    lo, hi = 0, len(offsets) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if offsets[mid] <= char:
            lo = mid
        else:
            hi = mid - 1
    return lo

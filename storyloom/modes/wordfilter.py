"""The word filter: profanity, slurs and sexual words kept out of what the model writes.

On by default in every mode (config.toml `word_filter = false` turns it off): poetry leaves the
words out of its vocabulary, and the critic (modes/critic.py) fails a candidate that has one, so
adventure, co-write and tree turns are drawn again or ranked below clean ones. The list is data
(assets/word_filter.txt). Pure Python: no model, no UI.
"""
from __future__ import annotations

import re
from functools import lru_cache

from storyloom.paths import assets_dir

FILE = "word_filter.txt"
_WORD = re.compile(r"[A-Za-z]+")
_enabled = True  # the app and the CLI set it from the settings (set_enabled); tests may too


def set_enabled(on: bool) -> None:
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled


@lru_cache(maxsize=1)
def _lists() -> tuple[frozenset[str], tuple[str, ...]]:
    words, stems = set(), []
    for line in (assets_dir() / FILE).read_text(encoding="utf-8").splitlines():
        line = line.strip().lower()
        if not line or line.startswith("#"):
            continue
        if line.endswith("*"):
            stems.append(line[:-1])
        else:
            words.add(line)
    return frozenset(words), tuple(stems)


@lru_cache(maxsize=65_536)
def blocked(word: str) -> bool:
    """Is this one word on the list (whatever the filter's setting)?"""
    word = word.lower().strip("'")
    words, stems = _lists()
    return word in words or word.startswith(stems)


def found(text: str) -> list[str]:
    """The filtered words in a text, in order (none when the filter is off). Words joined by an
    apostrophe or a hyphen are checked part by part (fuck's, bull-shit)."""
    if not _enabled:
        return []
    return [w for w in _WORD.findall(text) if blocked(w)]

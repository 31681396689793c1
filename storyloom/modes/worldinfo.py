"""World info that behaves: which entries enter the next prompt, and why.

An entry fires when a key appears in the text it scans (the new action and its last
`scan_depth` turns), when it is constant, or when the text of an entry that fired names it
(recursion, a few rounds at most). Keys are plain text (whole words or anywhere, any case or
exact case) or regular expressions written /pattern/flags. Secondary keys refine a match the
way SillyTavern's do (AND ANY, NOT ALL, NOT ANY, AND ALL). Then all fired entries share one
token budget: higher `order` is kept first; a recursive entry stays only while the entry that
named it does. Every kept entry says why it fired ("key 'dragon' in turn -2").

Regular expressions come from files other people wrote: each search runs under a time limit
(the `regex` package's timeout) and all of them together under a per-turn deadline, so a
pattern that backtracks for ever costs a turn a fraction of a second, not the turn.
"""
from __future__ import annotations

import bisect
import itertools
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable

from storyloom.config import LORE_BIAS
from storyloom.store.stories import WorldEntry

try:  # installed with transformers; plain `re` has no timeout, so regex keys need it
    import regex as _regex
except ImportError:  # pragma: no cover - exercised only where the package is missing
    _regex = None

SCAN_DEPTH = 4  # recent turns scanned (besides the new action) when an entry does not say
MAX_RECURSION = 3  # rounds of entries triggered by other entries' text
REGEX_TIMEOUT_S = 0.05  # one search of one regex key
REGEX_DEADLINE_S = 0.5  # every regex search of one turn together
MAX_REGEX = 500  # characters of one pattern
_REGEX_KEY = re.compile(r"^/(.+)/([a-zA-Z]*)$", re.DOTALL)
_LOGIC_SAYS = {"and_any": "and", "and_all": "and all of", "not_any": "and none of", "not_all": "and not all of"}


@dataclass
class Source:
    """Entries from one place: the game's own world info or an attached lorebook."""

    name: str
    entries: list[WorldEntry]


@dataclass
class Fired:
    entry: WorldEntry
    reason: str  # "constant", "key 'dragon' in turn -2", "recursion from 'Castle'"
    source: str = "game"  # where the entry lives: "game" or the lorebook's name
    round: int = 0  # 0: direct (key or constant); n: the n-th round of recursion
    parent: "Fired | None" = None  # for recursion: the entry whose text named this one
    tokens: int = 0
    kept: bool = False
    why_dropped: str = ""

    def explain(self) -> str:
        where = "" if self.source == "game" else f" [{self.source}]"
        tail = f" (dropped: {self.why_dropped})" if not self.kept else ""
        return f"{self.entry.label()}{where}: {self.reason}, {self.tokens} tokens{tail}"


@dataclass
class Selection:
    kept: list[Fired] = field(default_factory=list)  # in prompt order (lowest order first)
    dropped: list[Fired] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # regex keys that failed or timed out
    budget: int = 0
    used: int = 0

    @property
    def entries(self) -> list[WorldEntry]:
        return [f.entry for f in self.kept]

    def explain(self) -> str:
        if not self.kept and not self.dropped and not self.notes:
            return "No world info fired this turn."
        lines = [f"World info: {len(self.kept)} kept ({self.used}/{self.budget} tokens), {len(self.dropped)} dropped"]
        lines += ["  " + f.explain() for f in self.kept + self.dropped]
        lines += ["  note: " + n for n in self.notes]
        return "\n".join(lines)

    def summary(self, limit: int = 3) -> str:
        """One line for the play screen."""
        if not self.kept:
            return "World info: none fired" + (f" ({len(self.dropped)} over budget)" if self.dropped else "")
        shown = "; ".join(f"{f.entry.label()}: {f.reason}" for f in self.kept[:limit])
        more = f"; +{len(self.kept) - limit} more" if len(self.kept) > limit else ""
        over = f"; {len(self.dropped)} over budget" if self.dropped else ""
        return f"World info: {shown}{more}{over}"


# -- matching ---------------------------------------------------------------------------
class _Clock:
    """The per-turn regex deadline, and the notes about keys that could not be searched."""

    def __init__(self, deadline_s: float):
        self.left = deadline_s  # seconds of regex searching this turn may still spend
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes and len(self.notes) < 20:
            self.notes.append(text)


def is_regex_key(key: str) -> bool:
    return bool(_REGEX_KEY.match(key.strip()))


@lru_cache(maxsize=4096)
def _compile_regex(key: str):
    """A /pattern/flags key compiled, or the sentence that says why it cannot be."""
    if _regex is None:
        return "regex keys need the 'regex' package (pip install regex)"
    pattern, flags = _REGEX_KEY.match(key).groups()
    if len(pattern) > MAX_REGEX:
        return f"regex key {key[:40]!r}… is over {MAX_REGEX} characters"
    value = 0
    for flag in flags:  # JavaScript's flags: i, m and s mean what they say; g, u, y change nothing here
        value |= {"i": _regex.IGNORECASE, "m": _regex.MULTILINE, "s": _regex.DOTALL}.get(flag.lower(), 0)
    try:
        return _regex.compile(pattern, value)
    except Exception as exc:  # noqa: BLE001 - regex raises several kinds for a bad pattern
        return f"regex key {key[:60]!r} is not a valid pattern ({str(exc)[:60]})"


@lru_cache(maxsize=8192)
def _compile_plain(key: str, whole_word: bool, case_sensitive: bool) -> re.Pattern:
    body = re.escape(key)
    if whole_word:  # lookarounds, not \b: a key may begin or end with punctuation ("Dr.", "#1")
        body = rf"(?<!\w){body}(?!\w)"
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


class Scanned:
    """A piece of text prepared once for many keys: folded for any-case keys, its words as sets
    (a one-word whole-word key is a set lookup), so thousands of entries cost milliseconds."""

    __slots__ = ("raw", "folded", "_words", "_exact")

    def __init__(self, raw: str):
        self.raw, self.folded = raw, raw.casefold()
        self._words = self._exact = None

    def words(self, case_sensitive: bool) -> set[str]:
        if case_sensitive:
            if self._exact is None:
                self._exact = set(_WORDS.findall(self.raw))
            return self._exact
        if self._words is None:
            self._words = set(_WORDS.findall(self.folded))
        return self._words


_WORDS = re.compile(r"\w+")


@lru_cache(maxsize=16384)
def _prepared(key: str, case_sensitive: bool) -> tuple[bool, str, bool]:
    """(is a regex, the needle to look for, is one word): worked out once per key."""
    key = key.strip()
    if is_regex_key(key):
        return True, key, False
    needle = key if case_sensitive else key.casefold()
    return False, needle, bool(_WORDS.fullmatch(needle))


def _regex_search(key: str, raw: str, clock: _Clock):
    compiled = _compile_regex(key)
    if isinstance(compiled, str):
        clock.note(compiled)
        return None
    if clock.left <= 0:
        clock.note("the regex keys' time for this turn ran out; later regex keys were not searched")
        return None
    start = time.monotonic()
    try:
        return compiled.search(raw, timeout=min(REGEX_TIMEOUT_S, clock.left))
    except TimeoutError:
        clock.note(f"regex key {key[:60]!r} took too long and was skipped")
        return None
    finally:
        clock.left -= time.monotonic() - start


def key_matches(key: str, text: Scanned, entry: WorldEntry, clock: _Clock) -> bool:
    if not key.strip() or not text.raw:
        return False
    regex, needle, one_word = _prepared(key, entry.case_sensitive)
    if regex:
        return _regex_search(needle, text.raw, clock) is not None
    if entry.whole_word and one_word:  # the common key: a set lookup
        return needle in text.words(entry.case_sensitive)
    if needle not in (text.raw if entry.case_sensitive else text.folded):
        return False
    if not entry.whole_word:
        return True
    return _compile_plain(key.strip(), True, entry.case_sensitive).search(text.raw) is not None


def key_position(entry: WorldEntry, text: Scanned, clock: _Clock) -> int | None:
    """Where in `text` the first of the entry's keys that matches begins (None: none does)."""
    for key in entry.keys:
        if not key_matches(key, text, entry, clock):
            continue
        regex, needle, _ = _prepared(key, entry.case_sensitive)
        found = (_regex_search(needle, text.raw, clock) if regex else
                 _compile_plain(key.strip(), entry.whole_word, entry.case_sensitive).search(text.raw))
        if found is not None:
            return found.start()
    return None


def _secondary_ok(entry: WorldEntry, texts: list[Scanned], clock: _Clock) -> tuple[bool, str]:
    keys = [k for k in entry.secondary if k.strip()]
    if not keys:
        return True, ""
    hits = [k for k in keys if any(key_matches(k, t, entry, clock) for t in texts)]
    logic = entry.logic
    ok = {"and_any": bool(hits), "and_all": len(hits) == len(keys),
          "not_any": not hits, "not_all": len(hits) < len(keys)}.get(logic, bool(hits))
    if not ok:
        return False, ""
    shown = ", ".join(repr(k) for k in (hits if logic in ("and_any", "and_all") else keys)[:3])
    return True, f", {_LOGIC_SAYS.get(logic, 'and')} {shown}"


def _first_key(entry: WorldEntry, pieces: list[tuple[str, Scanned]], whole: Scanned | None,
               clock: _Clock) -> tuple[str, str] | None:
    """(key, where) for the most recent piece a primary key appears in; `whole` (all the pieces
    joined) rules out most entries with one look."""
    if whole is not None and not _any_key(entry, whole, clock):
        return None
    for where, text in pieces:
        for key in entry.keys:
            if key_matches(key, text, entry, clock):
                return key.strip(), where
    return None


def _any_key(entry: WorldEntry, text: Scanned, clock: _Clock) -> bool:
    return any(key_matches(k, text, entry, clock) for k in entry.keys)


# -- selection --------------------------------------------------------------------------
def scan_pieces(turn_texts: list[str], action: str) -> list[tuple[str, str]]:
    """The scanned text, most recent first: the action, then turn -1 (the last), -2, ..."""
    pieces = [("the action", action)] if action.strip() else []
    for i, text in enumerate(reversed(turn_texts), 1):
        pieces.append((f"turn -{i}", text))
    return pieces


def select(sources: Iterable[Source], turn_texts: list[str], action: str, count: Callable[[str], int],
           budget: int, *, scan_depth: int = SCAN_DEPTH, max_recursion: int = MAX_RECURSION,
           regex_deadline_s: float = REGEX_DEADLINE_S) -> Selection:
    """The entries for the next prompt within `budget` tokens, each with the reason it fired."""
    clock = _Clock(regex_deadline_s)
    pieces = [(where, Scanned(text)) for where, text in scan_pieces(turn_texts, action)]
    lead = 1 if pieces and pieces[0][0] == "the action" else 0
    windows: dict[int, tuple[list, Scanned]] = {}  # scan depth -> (its pieces, them joined)

    def window(depth: int) -> tuple[list, Scanned]:
        if depth not in windows:
            seen = pieces[: lead + depth]
            windows[depth] = (seen, Scanned("\n".join(t.raw for _, t in seen)))
        return windows[depth]

    candidates = [(src.name, e) for src in sources for e in src.entries if e.enabled and e.text.strip()]
    fired: list[Fired] = []
    waiting = []
    for source, entry in candidates:
        seen, whole = window(scan_depth if entry.scan_depth is None else entry.scan_depth)
        if entry.constant:
            fired.append(Fired(entry, "constant", source))
            continue
        hit = _first_key(entry, seen, whole, clock)
        ok, extra = _secondary_ok(entry, [whole], clock) if hit else (False, "")
        if hit and ok:
            fired.append(Fired(entry, f"key {hit[0]!r} in {hit[1]}{extra}", source))
        else:
            waiting.append((source, entry, whole))
    # Recursion: the text of what fired may name entries that did not (bounded rounds).
    frontier = [f for f in fired if not f.entry.prevent_recursion]
    for depth in range(1, max_recursion + 1):
        if not frontier or not waiting:
            break
        named = Scanned("\n".join(f.entry.text for f in frontier))
        starts = list(itertools.accumulate([0] + [len(f.entry.text) + 1 for f in frontier[:-1]]))
        so_far = Scanned("\n".join(f.entry.text for f in fired))
        new, still = [], []
        for source, entry, whole in waiting:
            at = None if entry.exclude_recursion else key_position(entry, named, clock)
            if at is not None:
                parent = frontier[bisect.bisect_right(starts, at) - 1]  # the entry whose text it is in
                ok, extra = _secondary_ok(entry, [whole, so_far], clock) if parent else (False, "")
                if ok:
                    new.append(Fired(entry, f"recursion from {parent.entry.label()!r}{extra}", source, depth, parent))
                    continue
            still.append((source, entry, whole))
        fired += new
        waiting = still
        frontier = [f for f in new if not f.entry.prevent_recursion]
    selection = _fit(fired, count, budget)
    selection.notes = clock.notes
    return selection


def _fit(fired: list[Fired], count: Callable[[str], int], budget: int) -> Selection:
    """Keep by priority (order, then direct before recursion, then list position) within budget;
    an entry that recursion brought in stays only while its parent does."""
    index = {id(f): i for i, f in enumerate(fired)}
    for f in fired:
        f.tokens = count(f.entry.text) + 1  # + the newline that joins it to the others
    ranked = sorted(fired, key=lambda f: (-f.entry.order, f.round, index[id(f)]))
    used, changed = 0, True
    while changed:  # a child ranked above its parent waits for the parent's turn
        changed = False
        for f in ranked:
            if f.kept or f.why_dropped:
                continue
            if f.parent is not None and not f.parent.kept:
                if f.parent.why_dropped:
                    f.why_dropped = f"{f.parent.entry.label()!r} that named it was dropped"
                    changed = True
                continue
            if used + f.tokens > budget:
                f.why_dropped = f"over the world-info budget ({budget} tokens)"
            else:
                f.kept, used = True, used + f.tokens
            changed = True
    for f in ranked:  # a parent that never resolved (cannot happen: parents fire first) is not kept
        if not f.kept and not f.why_dropped:
            f.why_dropped = "its source was not kept"
    kept = sorted((f for f in fired if f.kept), key=lambda f: (f.entry.order, index[id(f)]))
    dropped = [f for f in ranked if not f.kept]
    return Selection(kept, dropped, [], budget, used)


def sources_for(game) -> list[Source]:
    """The game's own world info, then each attached lorebook in its order."""
    return [Source("game", game.world_info)] + [Source(b.name, b.entries) for b in getattr(game, "lorebooks", [])]


def for_game(game, action: str, count: Callable[[str], int], budget: int, turn_text: Callable) -> Selection:
    """The one call the adventure prompt makes: the game (with its lorebooks), the new action, the
    token counter and the world-info budget; `turn_text` renders a turn as the prompt reads it."""
    sources = sources_for(game)
    depth = max([SCAN_DEPTH] + [e.scan_depth or 0 for src in sources for e in src.entries])
    recent = game.turns[-depth:] if depth else []  # only what some entry scans is rendered
    return select(sources, [turn_text(t) for t in recent], action, count, max(0, budget))


# -- phrase bias ------------------------------------------------------------------------
# While an entry is in the prompt its names are raised as the model writes (NovelAI's lorebook
# phrase bias; engine/biasing.py): a small model reads "[Note: The innkeeper is Mira ...]" and
# still writes "the innkeeper", so the name is pushed until the turn has said it once.
DEFAULT_BIAS = LORE_BIAS  # logits (odds x20 at temperature 1); config's lore_bias; measured in `bench quality`
MAX_NAMES = 8  # phrases per entry
_NAME_RUN = re.compile(r"\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\]\n\"“]\s*)$")
_NOT_NAMES = frozenset("""
a an the your you his her its their our my this that these those there here it he she they we i
when while if then but and or so as at in on of to for from by with after before once every each
some no not all both one what who where why how
""".split())


def names(entry: WorldEntry) -> list[str]:
    """The phrases an entry's bias raises: its plain primary keys, and the proper names in its
    text ("Mira", "Lady Ashworth" and then "Ashworth" alone: people use the short form too).
    A capitalised word that only opens a sentence is a name only when it is not a common opener."""
    found: list[str] = [k.strip() for k in entry.keys if k.strip() and not is_regex_key(k)]
    for m in _NAME_RUN.finditer(entry.text):
        words = m.group(0).split()
        at_start = bool(_SENTENCE_START.search(entry.text[:m.start()]))
        while words and (words[0].lower() in _NOT_NAMES or (at_start and len(words) == 1 and not words[0].isupper()
                                                             and words[0].lower() in _COMMON_OPENERS)):
            words, at_start = words[1:], False
        if not words:
            continue
        found.append(" ".join(words))
        if len(words) > 1:
            found.append(words[-1])
    out: list[str] = []
    for phrase in found:
        if phrase.lower() not in {p.lower() for p in out} and len(phrase) <= 100:
            out.append(phrase)
    return out[:MAX_NAMES]


# Capitalised only because they open a sentence: never a name on their own.
_COMMON_OPENERS = frozenset("""
legends people everyone nobody nothing something someone many most few several rumours rumors
inside outside above below beyond behind near far long old new great small large
""".split())


def phrase_bias(entries: Iterable[WorldEntry], default: float = DEFAULT_BIAS) -> tuple[tuple[str, float], ...]:
    """(phrase, bias) for the names of triggered `entries`: each entry's own bias, or `default`
    when it has none; 0 turns an entry's off."""
    out: dict[str, tuple[str, float]] = {}
    for entry in entries:
        value = default if entry.bias is None else float(entry.bias)
        if not value:
            continue
        for phrase in names(entry):
            key = phrase.lower()
            if key not in out or abs(value) > abs(out[key][1]):
                out[key] = (phrase, value)
    return tuple(out.values())


def split_keys(text: str) -> list[str]:
    """'dragon, /wyrms?{1,2}/i, Castle' -> keys; a /regex/ keeps its commas."""
    keys, pending = [], ""
    for piece in text.split(","):
        pending = f"{pending},{piece}" if pending else piece
        stripped = pending.strip()
        if stripped.startswith("/") and not is_regex_key(stripped):
            continue  # a regex whose pattern holds a comma: read on
        if stripped:
            keys.append(stripped)
        pending = ""
    keys += [k.strip() for k in pending.split(",") if k.strip()]  # a '/' that never closed: plain keys
    return keys


def format_keys(keys: list[str]) -> str:
    return ", ".join(keys)

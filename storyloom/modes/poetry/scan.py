"""The scanner: proves (or refutes) each line's meter and each required rhyme.

A line scans when some choice of pronunciations puts its syllables exactly on one of the
line's templates under the meter rule in prosody.py, with the last word's rhyme on a stressed
place (prosody.ends_line). Lines with a word the dictionary does not
know cannot be scored and never pass. A rhyme pair passes when the two final words share a
rhyme key and neither is the other over again (the same word, a homophone, a compound ending in
it: prosody.echoes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from storyloom.modes.poetry.forms import Form
from storyloom.modes.poetry.prosody import ends_line, fits, rhymes, sounds, words_of


@dataclass
class LineVerdict:
    text: str
    meter_ok: bool
    syllables: list[int]  # the counts the line's pronunciations allow
    unknown: list[str] = field(default_factory=list)
    rhyme_with: int | None = None  # the earlier line it must rhyme with (index)
    rhyme_ok: bool | None = None  # None: no rhyme required
    expected: str = ""

    @property
    def ok(self) -> bool:
        return self.meter_ok and self.rhyme_ok is not False


@dataclass
class PoemVerdict:
    lines: list[LineVerdict]
    expected_lines: int
    rhyme_pairs: int
    rhyme_pairs_ok: int

    @property
    def meter_ok(self) -> int:
        return sum(v.meter_ok for v in self.lines)

    @property
    def ok(self) -> bool:
        return (len(self.lines) == self.expected_lines and all(v.meter_ok for v in self.lines)
                and self.rhyme_pairs_ok == self.rhyme_pairs)


def scan_line(text: str, templates: tuple[str, ...], stressed_rhyme: bool = True, spelled: bool = False) -> LineVerdict:
    """`stressed_rhyme=False` lets the rhyme fall on a weak syllable, `spelled=True` lets a word be
    read letter by letter (am as A.M.): the bench counts what each would let in."""
    words = words_of(text)
    heard = {w: sounds(w, spelled) for w in words}
    unknown = [w for w in words if not heard[w]]
    counts: set[int] = {0}
    for w in words:
        counts = {c + len(s.pattern) for c in counts for s in heard[w]} or counts
    verdict = LineVerdict(text, False, sorted(counts), unknown)
    if unknown or not words:
        return verdict
    for template in templates:
        reach = {0}  # positions reachable after each word
        for k, w in enumerate(words):
            last = k == len(words) - 1  # the rhyme word: its rhyme on a stressed syllable
            reach = {at + len(s.pattern) for at in reach for s in heard[w]
                     if (ends_line(s.pattern, template, at) if last and stressed_rhyme else fits(s.pattern, template, at))}
            if not reach:
                break
        if len(template) in reach:
            verdict.meter_ok = True
            break
    return verdict


def last_word(text: str) -> str:
    words = words_of(text)
    return words[-1] if words else ""


def scan_poem(text: str, form: Form) -> PoemVerdict:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    verdicts = []
    pairs = pairs_ok = 0
    for i, line in enumerate(lines):
        templates = form.templates(i) if i < form.lines else form.templates(form.lines - 1)
        verdict = scan_line(line, templates)
        verdict.expected = form.describe(min(i, form.lines - 1))
        if i < form.lines:
            partners = form.partners(i)
            if partners:
                pairs += 1
                verdict.rhyme_with = partners[0]
                verdict.rhyme_ok = rhymes(last_word(lines[partners[0]]), last_word(line))
                pairs_ok += verdict.rhyme_ok
        verdicts.append(verdict)
    for i in range(len(lines), form.lines):  # missing lines still owe their rhymes
        pairs += bool(form.partners(i))
    return PoemVerdict(verdicts, form.lines, pairs, pairs_ok)


def report(verdict: PoemVerdict, form: Form) -> str:
    """One line per poem line, then a summary (what `storyloom scan` prints)."""
    out = []
    for i, v in enumerate(verdict.lines):
        mark = "✓" if v.ok else "✗"
        syl = "/".join(str(c) for c in v.syllables)
        meter = "meter ok" if v.meter_ok else (f"unknown word: {', '.join(v.unknown)}" if v.unknown
                                               else f"does not scan as {v.expected}")
        rhyme = "" if v.rhyme_ok is None else (
            f" · rhymes with line {v.rhyme_with + 1}" if v.rhyme_ok else f" · does NOT rhyme with line {v.rhyme_with + 1}")
        out.append(f"{mark} {i + 1:>2}  [{syl} syll] {meter}{rhyme}  | {v.text}")
    n = len(verdict.lines)
    count = "" if n == verdict.expected_lines else f" (a {form.name.lower()} has {verdict.expected_lines} lines, this has {n})"
    out.append(f"{verdict.meter_ok}/{n} lines scan{count}; {verdict.rhyme_pairs_ok}/{verdict.rhyme_pairs} rhyme pairs; "
               + ("PASS" if verdict.ok else "FAIL"))
    return "\n".join(out)

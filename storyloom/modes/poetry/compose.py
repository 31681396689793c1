"""Writing a poem under the constraints: line by line, retrying and backtracking.

Each line is sampled token by token from the model with only the allowed tokens open (see
constrain.py; the engine's ConstrainedDecoder does the sampling), or, on an engine that cannot
be steered token by token but follows a grammar, asked for under the line's grammar (remote.py).
Every line is checked by the scanner before it is kept. A line that paints itself into a corner (no token allowed, or too long) is
written again from its start (the KV cache is cut back, never shared); after several failed
tries the previous line is rewritten too, since its rhyme word may be the trouble. A poem
ends within its time cap; a line that could not be completed is reported, never shipped as if
it scanned.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from storyloom import StoryloomError
from storyloom.engine.constrained import open_decoder, steers_tokens
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.poetry.constrain import MIN_PARTNERS, LineConstraint, RhymeRule, Vocabulary, default_lexicon
from storyloom.modes.poetry.forms import Form
from storyloom.modes.poetry.prosody import rhyme_keys, rhymes, words_of
from storyloom.modes.poetry.scan import last_word, scan_line

LINE_TRIES = 6
LINE_CANDIDATES = 3  # whole lines sampled per line; the one the model finds likeliest is kept
BACKTRACKS = 4
TIME_CAP = 90.0
POEM_SETTINGS = SamplerSettings(temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.2,
                                repetition_range=64)


@dataclass
class PoemLine:
    text: str
    ok: bool  # False: it could not be completed (shown as such, never passed off as scanning)
    last_word: str | None = None
    logprob: float = 0.0  # summed log-prob of its tokens under the unconstrained model
    tokens: int = 0
    ids: list[int] = field(default_factory=list, repr=False)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.tokens if self.tokens else float("-inf")


@dataclass
class Poem:
    form: Form
    topic: str
    lines: list[PoemLine] = field(default_factory=list)
    style: str = ""
    seconds: float = 0.0
    backtracks: int = 0
    line_tries: int = 0

    @property
    def complete(self) -> bool:
        return len(self.lines) == self.form.lines and all(line.ok for line in self.lines)

    @property
    def failed(self) -> list[int]:
        return [i for i, line in enumerate(self.lines) if not line.ok]

    @property
    def text(self) -> str:
        out = []
        breaks = self.form.stanza_breaks()
        for i, line in enumerate(self.lines):
            out.append(line.text if line.ok else f"[line {i + 1} could not be completed]")
            if i in breaks:
                out.append("")
        return "\n".join(out).strip() + "\n"

    @property
    def mean_logprob(self) -> float:
        tokens = sum(line.tokens for line in self.lines)
        return sum(line.logprob for line in self.lines) / tokens if tokens else float("-inf")


def cannot_constrain(generator) -> str:
    return (f"{generator.name} can neither follow a grammar nor let StoryLoom pick each token, so it cannot "
            "write poems that provably scan; use the local model or a llama.cpp or vLLM server.")


def vocabulary_for(generator) -> Vocabulary:
    """The generator's word trie (built once, then kept on the generator)."""
    vocab = getattr(generator, "_poetry_vocab", None)
    if vocab is None:
        if not steers_tokens(generator):
            raise StoryloomError(cannot_constrain(generator))
        vocab = generator._poetry_vocab = Vocabulary(generator.tokenizer)
    return vocab


def poem_prompt(generator, form: Form, topic: str, style: str = "") -> str:
    """The content comes from here (topic, style); the form comes from the constraints."""
    topic = topic.strip() or "anything you like"
    style = f", {style.strip()}" if style.strip() else ""
    if getattr(generator.info, "chat_template", False):
        return generator.chat_prompt([{"role": "user", "content": f"Write a {form.name.lower()} about {topic}{style}."}])
    return f"A {form.name.lower()} about {topic}{style}.\n\n"


def rule_for(form: Form, line: int, finals: list[str | None], later: bool = True) -> RhymeRule:
    """The rhyme rule of `line` given the last words of the other lines (None: not written). No
    line ends on a word another line already ends on (a rhyme word said twice is no rhyme)."""
    group = [finals[j] for j, letter in enumerate(form.letters)
             if letter == form.letters[line] and j != line and j < len(finals) and finals[j]]
    used = frozenset(f for j, f in enumerate(finals) if f and j != line) - set(group)
    if group:
        keys = set.intersection(*(rhyme_keys(w) for w in group)) or set.union(*(rhyme_keys(w) for w in group))
        return RhymeRule(frozenset(keys), frozenset(group), used=used)
    if later and form.rhymed_later(line):
        return RhymeRule(partners=MIN_PARTNERS, used=used)
    return RhymeRule(used=used)


def verifier(form: Form, index: int, finals: list[str | None]) -> Callable[[str], bool]:
    """Does a line at `index` pass the scanner (`storyloom scan`): its meter, and its rhyme with
    the first line of its group (or, for that first line, with the group's other lines)?"""
    templates = form.templates(index)
    group = [j for j, letter in enumerate(form.letters) if letter == form.letters[index]]
    others = [finals[j] for j in group if j != index and j < len(finals) and finals[j]]
    first = finals[group[0]] if group[0] != index and group[0] < len(finals) else None

    def ok(text: str) -> bool:
        if not scan_line(text, templates).meter_ok:
            return False
        last = last_word(text)
        if group[0] != index:
            return first is None or rhymes(first, last)
        return all(rhymes(other, last) for other in others)
    return ok


class _TokenWriter:
    """Lines written token by token by a ConstrainedDecoder under a LineConstraint (the local path)."""

    def __init__(self, generator, vocab: Vocabulary, text: str, seed: int | None):
        self.vocab = vocab
        self.dec = open_decoder(generator, text, seed)

    def mark(self):
        return self.dec.mark()

    def _write(self, templates: tuple[str, ...], rule: RhymeRule, settings: SamplerSettings, deadline: float,
               cancel) -> PoemLine | None:
        constraint = LineConstraint(self.vocab, templates, rule)
        tokens: list[int] = []
        logprob = 0.0
        for _ in range(4 * max(len(t) for t in templates) + 12):
            if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                return None
            allowed = constraint.allowed()
            if not allowed:
                return None  # a corner: the caller writes the line again
            token, token_logprob = self.dec.sample(allowed, settings)
            logprob += token_logprob
            constraint.advance(token)
            tokens.append(token)
            self.dec.step(token)
            if constraint.done:
                text = self.dec.decode(tokens).strip()
                return PoemLine(text, True, constraint.last_word, logprob, len(tokens), tokens)
        return None

    def best_line(self, mark, templates: tuple[str, ...], rule: RhymeRule, verify: Callable[[str], bool],
                  settings: SamplerSettings, deadline: float, cancel, poem: Poem | None = None,
                  keep: int = LINE_CANDIDATES, avoid: frozenset[str] = frozenset()) -> PoemLine | None:
        """Sample up to `keep` complete lines (within LINE_TRIES tries), keep the likeliest under the
        unconstrained model (a word the constraints forced in scores low), and leave the decoder after it."""
        found: list[PoemLine] = []
        for _ in range(LINE_TRIES):
            self.dec.rewind(mark)
            if poem is not None:
                poem.line_tries += 1
            line = self._write(templates, rule, settings, deadline, cancel)
            if line is not None and plain(line.text) not in avoid and verify(line.text):  # never the same line twice
                found.append(line)
                if len(found) >= keep:
                    break
            if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                break
        if not found:
            return None
        best = max(found, key=lambda line: line.mean_logprob)
        if best is not found[-1]:  # the decoder holds the last line written: replay the chosen one
            self.dec.rewind(mark)
            for token in best.ids:
                self.dec.step(token)
        return best

    def skip(self, mark) -> None:
        """A line that could not be written: an empty line in its place."""
        self.dec.rewind(mark)
        if self.vocab.newline is not None:
            self.dec.step(self.vocab.newline)


def plain(text: str) -> str:
    return " ".join(words_of(text))


def _writer(generator, text: str, seed: int | None, prepared):
    if isinstance(prepared, Vocabulary):
        return _TokenWriter(generator, prepared, text, seed)
    from storyloom.modes.poetry.remote import GrammarWriter  # it builds on this module

    return GrammarWriter(generator, prepared, text, seed)


def _prepare(generator):
    """What writing needs before the clock starts: the token trie, or the grammar's lexicon."""
    if steers_tokens(generator):
        return vocabulary_for(generator)
    if generator.capabilities.grammar == "gbnf":
        return default_lexicon()
    raise StoryloomError(cannot_constrain(generator))


def check_time_cap(time_cap: float) -> None:
    if not time_cap > 0:  # also NaN
        raise StoryloomError(f"The time cap must be more than 0 seconds (got {time_cap:g}).")


def compose(generator, form: Form, topic: str, seed: int | None = None, time_cap: float = TIME_CAP,
            settings: SamplerSettings = POEM_SETTINGS, on_line: Callable[[int, PoemLine | None], None] | None = None,
            cancel=None, style: str = "") -> Poem:
    """Write a poem of `form` about `topic`. `on_line(i, line)` reports each line as it is made
    (line None: line i was taken back to be rewritten)."""
    check_time_cap(time_cap)
    prepared = _prepare(generator)
    started = time.monotonic()
    deadline = started + time_cap
    writer = _writer(generator, poem_prompt(generator, form, topic, style), seed, prepared)
    poem = Poem(form, topic, style=style)
    marks: list = []
    finals: list[str | None] = []
    failures = [0] * form.lines
    i = 0
    while i < form.lines:
        if len(marks) <= i:
            marks.append(writer.mark())
        rule = rule_for(form, i, finals)
        avoid = frozenset(plain(line.text) for line in poem.lines if line.ok)
        line = writer.best_line(marks[i], form.templates(i), rule, verifier(form, i, finals), settings, deadline,
                                cancel, poem, avoid=avoid)
        if line is not None:
            poem.lines.append(line)
            finals.append(line.last_word)
            if on_line:
                on_line(i, line)
            i += 1
            continue
        failures[i] += 1
        out_of_time = time.monotonic() > deadline or (cancel is not None and cancel.is_set())
        if not out_of_time and i > 0 and poem.backtracks < BACKTRACKS:
            # Go back to the line that chose this line's rhyme (its word may have too few usable
            # partners), or else to the line before, and write again from there.
            partners = [j for j in form.partners(i) if finals[j]]
            back_to = partners[0] if partners else i - 1
            poem.backtracks += 1
            for j in range(i - 1, back_to - 1, -1):
                poem.lines.pop()
                finals.pop()
                if on_line:
                    on_line(j, None)
            i = back_to
            del marks[i + 1:]
            continue
        poem.lines.append(PoemLine("", False))  # reported as missing, never shipped broken
        finals.append(None)
        if on_line:
            on_line(i, poem.lines[-1])
        writer.skip(marks[i])
        i += 1
    poem.seconds = time.monotonic() - started
    return poem


def rewrite_line(generator, poem: Poem, index: int, seed: int | None = None, time_cap: float = 30.0,
                 settings: SamplerSettings = POEM_SETTINGS, cancel=None) -> PoemLine | None:
    """A new version of one line that still scans and rhymes with the rest (None if none was found)."""
    check_time_cap(time_cap)
    prepared = _prepare(generator)
    deadline = time.monotonic() + time_cap
    before = "".join(line.text + "\n" for line in poem.lines[:index])
    writer = _writer(generator, poem_prompt(generator, poem.form, poem.topic, poem.style) + before, seed, prepared)
    finals = [line.last_word if line.ok else None for line in poem.lines]
    rule = rule_for(poem.form, index, finals, later=False)
    avoid = frozenset(plain(line.text) for line in poem.lines if line.ok)  # the old version included
    return writer.best_line(writer.mark(), poem.form.templates(index), rule, verifier(poem.form, index, finals),
                            settings, deadline, cancel, avoid=avoid)

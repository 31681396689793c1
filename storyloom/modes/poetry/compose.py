"""Writing a poem under the constraints: line by line, retrying and backtracking.

Each line is sampled token by token from the model with only the allowed tokens open (see
constrain.py). A line that paints itself into a corner (no token allowed, or too long) is
written again from its start (the KV cache is cut back, never shared); after several failed
tries the previous line is rewritten too, since its rhyme word may be the trouble. A poem
ends within its time cap; a line that could not be completed is reported, never shipped as if
it scanned.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from storyloom import StoryloomError
from storyloom.engine.logits import choose_next
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.poetry.constrain import MIN_PARTNERS, LineConstraint, RhymeRule, Vocabulary
from storyloom.modes.poetry.forms import Form
from storyloom.modes.poetry.prosody import rhyme_keys, words_of

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


def vocabulary_for(generator) -> Vocabulary:
    """The generator's word trie (built once, then kept on the generator)."""
    vocab = getattr(generator, "_poetry_vocab", None)
    if vocab is None:
        if not hasattr(generator, "tokenizer") or not hasattr(generator, "decode_state"):
            raise StoryloomError("Constrained poetry needs a local model (a transformers folder, a GGUF file "
                                 "or the default model): it steers every token.")
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
    """The rhyme rule of `line` given the last words of the other lines (None: not written)."""
    group = [finals[j] for j, letter in enumerate(form.letters)
             if letter == form.letters[line] and j != line and j < len(finals) and finals[j]]
    if group:
        keys = set.intersection(*(rhyme_keys(w) for w in group)) or set.union(*(rhyme_keys(w) for w in group))
        return RhymeRule(frozenset(keys), frozenset(group))
    if later and form.rhymed_later(line):
        return RhymeRule(partners=MIN_PARTNERS)
    return RhymeRule()


class _Decoder:
    """The model's state over prompt + poem so far (the generator's DecodeState), with marks to
    rewind to and the poem's tokens for the repetition penalty."""

    def __init__(self, generator, text: str):
        self.generator = generator
        self.state = generator.decode_state(generator.encode(text))
        self.logits = self.state.logits[0]
        self.history: list[int] = []

    def mark(self) -> tuple[int, torch.Tensor, int]:
        return self.state.length, self.logits, len(self.history)

    def rewind(self, mark) -> None:
        length, logits, history = mark
        self.state.crop(length)
        self.logits = logits
        del self.history[history:]

    def step(self, token: int) -> None:
        self.logits = self.state.feed(torch.tensor([[token]]))[0]
        self.history.append(token)


def _write_line(dec: _Decoder, vocab: Vocabulary, templates: tuple[str, ...], rule: RhymeRule,
                settings: SamplerSettings, rng: torch.Generator, deadline: float, cancel) -> PoemLine | None:
    constraint = LineConstraint(vocab, templates, rule)
    tokens: list[int] = []
    logprob = 0.0
    for _ in range(4 * max(len(t) for t in templates) + 12):
        if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
            return None
        allowed = constraint.allowed()
        if not allowed:
            return None  # a corner: the caller writes the line again
        logits = dec.logits.float()
        index = torch.tensor(allowed, dtype=torch.long)
        masked = torch.full_like(logits, float("-inf"))
        masked[index] = logits[index]
        # the penalty looks only at its own window (repetition_range) of the poem so far
        token = int(choose_next(masked[None], torch.tensor([dec.history], dtype=torch.long), settings, rng)[0])
        logprob += float(torch.log_softmax(logits, -1)[token])
        constraint.advance(token)
        tokens.append(token)
        dec.step(token)
        if constraint.done:
            text = dec.generator.decode(tokens).strip()
            return PoemLine(text, True, constraint.last_word, logprob, len(tokens), tokens)
    return None


def _plain(text: str) -> str:
    return " ".join(words_of(text))


def _best_line(dec: _Decoder, mark, vocab: Vocabulary, templates: tuple[str, ...], rule: RhymeRule,
               settings: SamplerSettings, rng: torch.Generator, deadline: float, cancel, poem: Poem | None = None,
               keep: int = LINE_CANDIDATES, avoid: frozenset[str] = frozenset()) -> PoemLine | None:
    """Sample up to `keep` complete lines (within LINE_TRIES tries), keep the likeliest under the
    unconstrained model (a word the constraints forced in scores low), and leave the decoder after it."""
    found: list[PoemLine] = []
    for _ in range(LINE_TRIES):
        dec.rewind(mark)
        if poem is not None:
            poem.line_tries += 1
        line = _write_line(dec, vocab, templates, rule, settings, rng, deadline, cancel)
        if line is not None and _plain(line.text) not in avoid:  # never the same line twice
            found.append(line)
            if len(found) >= keep:
                break
        if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
            break
    if not found:
        return None
    best = max(found, key=lambda line: line.mean_logprob)
    if best is not found[-1]:  # the decoder holds the last line written: replay the chosen one
        dec.rewind(mark)
        for token in best.ids:
            dec.step(token)
    return best


def compose(generator, form: Form, topic: str, seed: int | None = None, time_cap: float = TIME_CAP,
            settings: SamplerSettings = POEM_SETTINGS, on_line: Callable[[int, PoemLine | None], None] | None = None,
            cancel=None, style: str = "") -> Poem:
    """Write a poem of `form` about `topic`. `on_line(i, line)` reports each line as it is made
    (line None: line i was taken back to be rewritten)."""
    vocab = vocabulary_for(generator)
    started = time.monotonic()
    deadline = started + time_cap
    rng = torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
    dec = _Decoder(generator, poem_prompt(generator, form, topic, style))
    poem = Poem(form, topic, style=style)
    marks: list = []
    finals: list[str | None] = []
    failures = [0] * form.lines
    i = 0
    while i < form.lines:
        if len(marks) <= i:
            marks.append(dec.mark())
        rule = rule_for(form, i, finals)
        avoid = frozenset(_plain(line.text) for line in poem.lines if line.ok)
        line = _best_line(dec, marks[i], vocab, form.templates(i), rule, settings, rng, deadline, cancel, poem,
                          avoid=avoid)
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
        dec.rewind(marks[i])
        if vocab.newline is not None:
            dec.step(vocab.newline)
        i += 1
    poem.seconds = time.monotonic() - started
    return poem


def rewrite_line(generator, poem: Poem, index: int, seed: int | None = None, time_cap: float = 30.0,
                 settings: SamplerSettings = POEM_SETTINGS, cancel=None) -> PoemLine | None:
    """A new version of one line that still scans and rhymes with the rest (None if none was found)."""
    vocab = vocabulary_for(generator)
    deadline = time.monotonic() + time_cap
    rng = torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
    before = "".join(line.text + "\n" for line in poem.lines[:index])
    dec = _Decoder(generator, poem_prompt(generator, poem.form, poem.topic, poem.style) + before)
    finals = [line.last_word if line.ok else None for line in poem.lines]
    rule = rule_for(poem.form, index, finals, later=False)
    avoid = frozenset(_plain(line.text) for line in poem.lines if line.ok)  # the old version included
    return _best_line(dec, dec.mark(), vocab, poem.form.templates(index), rule, settings, rng, deadline, cancel,
                      avoid=avoid)

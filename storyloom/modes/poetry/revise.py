"""A revision pass over a written poem, as a writer revises: the lines that still carry a flaw
compose can see are written again, and a new version is kept only where it reads better.

compose keeps, for each line, the best it drew (pick); late in a poem, with its rewrites spent, that
can still be a line with a flaw: its rhyme word forced (FORCED_FLOOR), astray from the topic (read
against the heading with no topic, TOPIC_MARGIN), saying a phrase of two earlier lines again (tic),
cut off (unfinished), or one the critic fails. Once the whole poem stands, each such line (earliest
first) is drawn again after the lines before it (best_line, with its rhyme plan, the topic read
late, more draws while all read forced), rhyming with its group's other lines as they stand (a
group's first line too: its partners keep their rhyme words, it may take another word of their
rhyme). After REVISE_TRIES such tries, its whole rhyme group is written again once, on a rhyme
other than its old one (a couplet's first line that says a phrase again could only end on its
partner's rhyme, and every word of it read forced there). The poem so revised is read again as
one row (read_finals: every rhyme word after the poem before it, one batched forward), and the
lines after the first one written again have their phrases and critic judged again against it.
It is kept only if no line has a flaw it did not have and some line has fewer (a subset: a flaw
traded for another is no gain; a line not written again reads forced only LATER_SLACK under the
floor). All of it runs within REVISE_SHARE of the time the poem took to write. A poem with no
flaw is never touched, and a revision never leaves one worse by these measures.

The reading as one row puts each line's drawn tokens after the others' (as compose's line_context
puts their text); a form longer than compose's WINDOW reads its late lines after more of the poem
than they were written after.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

from storyloom.engine.constrained import open_decoder
from storyloom.modes import critic
from storyloom.modes.poetry import compose as c
from storyloom.modes.poetry.constrain import Vocabulary
from storyloom.modes.poetry.plan import TopicGauge, score_rows
from storyloom.modes.poetry.prosody import rhyme_keys, words_of

REVISE_SHARE = 0.5  # the revision's time: this share of the time the poem took to write, at most
REVISE_TRIES = 3  # times one flawed line is written again at most
LATER_SLACK = 0.5  # nats: a later line (not drawn again) reads forced below FORCED_FLOOR less this
# (its word was drawn after the old line; a reading 0.3 under the floor had rejected a fixed line
# for a later word at -7.05, which no reader hears as forced: the bench counts under -8)


def flaws(line: c.PoemLine, final: float | None, floor: float | None = None) -> frozenset[str]:
    """What compose can see wrong with a kept line, its rhyme word's log-prob read as `final`: the
    critic fails it, the rhyme word is forced (FORCED_FLOOR), it strays from the topic (a late line
    read no more than TOPIC_MARGIN likelier for it), it ends cut off (unfinished), it says a phrase
    of two earlier lines again (tic). Unlike grade, the last two count off the topic too. `floor`:
    the forced bar, FORCED_FLOOR unless given."""
    if not line.ok:
        return frozenset()
    found = {
        "critic": line.penalty >= critic.FAIL,
        "forced": final is not None and final < (c.FORCED_FLOOR if floor is None else floor),
        "astray": line.line_topic is not None and line.line_topic <= c.TOPIC_MARGIN,
        "unfinished": c.unfinished(line.text),
        "tic": c.tic(line),
    }
    return frozenset(k for k, v in found.items() if v)


def read_finals(generator, vocab: Vocabulary, prompt: str, form, lines: list[c.PoemLine]) -> list[float | None]:
    """Each line's rhyme word's log-prob after the heading and the lines before it (stanza breaks and
    all), read as one row of the lines' drawn tokens in one batched forward. None: a line not
    drawn token by token (its last word's place unknown) or not completed."""
    breaks = form.stanza_breaks()
    skip = set(vocab.punctuation) | {vocab.newline}
    row: list[int] = []
    spans: list[list[int] | None] = []
    for i, line in enumerate(lines):
        if line.ok and line.ids and line.final_from is not None:
            start = len(row)
            row += line.ids
            spans.append([k for k in range(start + line.final_from, len(row)) if row[k] not in skip])
        else:
            spans.append(None)
        if i in breaks and vocab.newline is not None:
            row.append(vocab.newline)
    if not row:
        return [None] * len(lines)
    read = score_rows(open_decoder(generator, prompt, 0), [row])[0]
    return [sum(read[k] for k in span) if span else None for span in spans]


def rejudged(lines: list[c.PoemLine], start: int, prompt: str, topic: str) -> list[c.PoemLine]:
    """The lines from `start` on, their phrases (repeats) and critic (penalty) judged again against
    the lines before them as the poem now stands (copies where either changed)."""
    out = []
    for k in range(start, len(lines)):
        line = lines[k]
        if line.ok:
            earlier = lines[:k]
            repeats = c._repeats(earlier, topic)(line.text)
            penalty = c._judge(prompt, earlier, topic)(line.text)
            if (repeats, penalty) != (line.repeats, line.penalty):
                line = dataclasses.replace(line, repeats=repeats, penalty=penalty)
        out.append(line)
    return out


def better(old: list[frozenset[str]], new: list[frozenset[str]]) -> bool:
    """Is the poem, from the first line written again on, better: no line has a flaw it did not
    have, and some line has fewer (a strict subset: a flaw traded for another is no gain)?"""
    return all(n <= o for n, o in zip(new, old)) and any(n < o for n, o in zip(new, old))


def group_of(form, j: int) -> list[int]:
    """The lines of line j's rhyme group (j alone for a line that rhymes with none)."""
    return [k for k, letter in enumerate(form.letters) if letter == form.letters[j]]


def revise(generator, vocab: Vocabulary, writer, poem: c.Poem, prompt: str, gauge: TopicGauge | None,
           settings, seconds: float, cancel=None,
           on_revise: Callable[[int, c.PoemLine | None], None] | None = None) -> None:
    """Revise `poem` in place within `seconds` (see the module doc). `on_revise(i, None)`: line i is
    being written again; `on_revise(i, line)`: it was, and `line` replaces it."""
    form = poem.form
    if not poem.complete or seconds <= 0:
        return
    started = time.monotonic()
    deadline = started + seconds
    topic = f"{poem.topic} {poem.style}"
    poem.lines[:] = rejudged(poem.lines, 0, prompt, topic)  # as the bench reads them: against the lines before
    finals = read_finals(generator, vocab, prompt, form, poem.lines)
    tried = [0] * form.lines  # times each line was written again alone
    rejected: set[str] = set()  # versions read and let go: never drawn again
    regrouped: set[str] = set()  # the rhyme groups written again whole

    def left(j: int) -> bool:
        return tried[j] < REVISE_TRIES or (len(group_of(form, j)) > 1 and form.letters[j] not in regrouped)

    try:
        while not (cancel is not None and cancel.is_set()):
            now = time.monotonic()
            todo = [j for j, line in enumerate(poem.lines) if left(j) and flaws(line, finals[j])]
            if not todo or now >= deadline:
                break
            j = todo[0]
            if tried[j] < REVISE_TRIES:
                tried[j] += 1
                redo, fresh = [j], False
            else:  # alone it found nothing better: the group on another rhyme
                regrouped.add(form.letters[j])
                redo, fresh = group_of(form, j), True
            # a share of the time left per flawed line (a group: one per line), never past the end
            share = min(deadline, now + max(c.MIN_LINE_S, (deadline - now) * len(redo) / len(todo)))
            trial = _redraw(writer, poem, redo, fresh, prompt, gauge, vocab, settings, share, deadline,
                            cancel, topic, on_revise, frozenset(rejected))
            if trial is None:
                continue
            trial_finals = read_finals(generator, vocab, prompt, form, trial)
            old, new = (_flaws_from(redo, lines, read) for lines, read in ((poem.lines, finals), (trial, trial_finals)))
            if not better(old, new):
                rejected.update(c.plain(trial[k].text) for k in redo)
            else:
                changed = [k for k in range(len(trial)) if trial[k].text != poem.lines[k].text]
                poem.lines[:] = trial
                finals = trial_finals
                poem.revisions += len(changed)
                for k in changed:
                    if on_revise:
                        on_revise(k, trial[k])
    finally:
        poem.revision_seconds = time.monotonic() - started


def _flaws_from(redo: list[int], lines: list[c.PoemLine], finals: list[float | None]) -> list[frozenset[str]]:
    """The flaws of the lines from redo[0] on (better): those written again at FORCED_FLOOR, the
    others LATER_SLACK under it."""
    floor = c.FORCED_FLOOR - LATER_SLACK
    return [flaws(lines[k], finals[k], None if k in redo else floor) for k in range(redo[0], len(lines))]


def _open_as_written(writer, prompt: str, form, lines: list[c.PoemLine], j: int, fed: float) -> None:
    """Open the writer at line j's context as compose had it: the heading and the early lines read
    at once, then the last lines (`fed` tokens or more) fed one token at a time, so the sampler's
    repetition penalty sees them. (Opened at once on the whole context, it saw none of them, and the
    revision drew again the phrase it was to lose: "your love is true".)"""
    start, tokens = j, 0
    while start > 0 and tokens < fed:
        start -= 1
        tokens += len(lines[start].ids) or len(lines[start].text.split())
    writer._open(c.line_context(prompt, form, lines[:start]))
    writer._open(c.line_context(prompt, form, lines[:j]))


def _redraw(writer, poem: c.Poem, redo: list[int], fresh: bool, prompt: str, gauge, vocab, settings,
            deadline: float, stop: float, cancel, topic: str, on_revise,
            rejected: frozenset[str] = frozenset()) -> list[c.PoemLine] | None:
    """The poem with the lines `redo` drawn again in turn, each after the lines before it as they
    now stand, the others judged again after them (rejudged); None if one could not be drawn (by
    drawing: the revision never falls back on the greedy search) or a group's later line would
    begin past `stop` (the revision's end). The lines share the time to `deadline`.
    Each rhymes with its group's lines as they stand; `fresh`: the group's old rhyme words are let
    go and its first line takes a rhyme other than theirs (its partners follow it). `rejected`:
    versions an earlier try read and let go, not drawn again."""
    form = poem.form
    lines = list(poem.lines)
    keep = frozenset(words_of(topic))  # the topic's words may come back (phrases)
    words = [line.last_word if line.ok else None for line in lines]
    old_keys = frozenset().union(*(rhyme_keys(words[k] or "") for k in redo)) if fresh else frozenset()
    if fresh:
        for k in redo:
            words[k] = None
    for n, j in enumerate(redo):
        if n and time.monotonic() > stop:
            return None  # a group's later line would begin past the revision's time
        if on_revise:
            on_revise(j, None)
        rule = c.rule_for(form, j, words, later=fresh, avoid=old_keys if fresh and n == 0 else frozenset())
        others = [line for k, line in enumerate(lines) if line.ok and k != j and not (fresh and k in redo[n:])]
        openings = frozenset(o for o in (c.opening(line.text) for line in others) if o)
        avoid = rejected | frozenset(c.plain(line.text) for line in poem.lines + lines if line.ok)  # old versions too
        rhyming = rule.keys is not None or rule.partners > 0
        _open_as_written(writer, prompt, form, lines, j, settings.repetition_range or math.inf)
        now = time.monotonic()
        line = writer.best_line(c.line_context(prompt, form, lines[:j]), form.templates(j), rule,
                                c.verifier(form, j, words, openings), settings,
                                min(stop, now + max(c.MIN_LINE_S, (deadline - now) / (len(redo) - n))), cancel, None,
                                avoid=avoid, judge=c._judge(prompt, lines[:j], topic), openings=openings,
                                plan=c._plan(vocab, form, j, rule, gauge), topical=j >= c.DRIFT_FROM,
                                more=c.FORCED_DRAWS if rhyming else 0, closing=form.closing(j),
                                repeats=c._repeats(lines[:j], topic), search=False, banned=c.said(others, keep))
        if line is None:
            return None
        lines[j] = line
        words[j] = line.last_word
    return lines[:redo[0]] + rejudged(lines, redo[0], prompt, topic)

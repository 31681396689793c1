"""Rhyme words chosen before their lines are written, so a line is written toward its rhyme.

For a line that rhymes (or opens a rhyme group) the candidates are the words its rhyme rule
lets end it whose stress pattern closes one of its templates with the rhyme on a stressed place,
leaving room for words before it (closes). The model scores them after the poem so far and the
heading with the topic: a first draft of the line is written, and each candidate's log-prob is
read at the draft's last word boundaries (where its end was coming: the word's log-prob after a
line-so-far prefix); to that is added how much the topic's heading makes the word likelier than a
heading without one (TopicGauge), and, for a group's first word, how well its best partners would
do (the group's later lines need rhymes too). The best of those are said whole after their
boundary and followed by a line's end (a word the line cannot stop on reads badly there), and the
best PLAN_WORDS become the plan: the line's other draws may end only on them (RhymeRule.words), so
the constraint knows how many syllables are left before the rhyme, and compose.py's look ahead
(_steer) picks the words before it after which a planned word is likeliest.

Reads go through the engine's ConstrainedDecoder (the log-prob of one allowed token costs no
forward pass); only a word's first token is read, except for the few said whole.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable

from storyloom.engine.constrained import open_decoder
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.poetry.constrain import FUNCTION_WORDS, RhymeRule, Vocabulary
from storyloom.modes.poetry.prosody import echoes, ends_line, rhyme_keys, words_of
from storyloom.modes.poetry.wordlist import zipf

PLAN_WORDS = 12  # words a line may end on, the best by score (6 left too few: more forced, less fluent)
OPEN_POOL = 300  # a group's first line: the commonest words that may open it, before the model scores them
PARTNER_POOL = 1500  # partners considered for a group's first word: the commonest line-ending words
TOPIC_WEIGHT = 0.5  # per nat the topic's heading adds to the word's log-prob
PARTNER_WEIGHT = 0.5  # per nat of the mean topic gain of the word's best partners
SHORTLIST = 30  # a group's first line: words whose partners are read
READ_AT = 3  # the draft's last boundaries the candidates are read at
REFINE = 8  # words said whole, and followed by a line's end, before the best are chosen
END_WEIGHT = 0.5  # per nat of the line's end right after the word
MIN_LEAD = 2  # syllables before the rhyme word at least (no line of one word)
TOPIC_STUB = "The"  # what the topic gauge reads after: " word" then reads as a noun phrase's head
READ = SamplerSettings(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


@lru_cache(maxsize=4096)
def closes(pattern: str, templates: tuple[str, ...]) -> bool:
    """Can a word of this stress pattern end a line of these templates, its rhyme on a stressed
    place, with room for a word or more before it?"""
    return any(len(t) - len(pattern) >= MIN_LEAD and ends_line(pattern, t, len(t) - len(pattern)) for t in templates)


def candidates(vocab: Vocabulary, templates: tuple[str, ...], rule: RhymeRule, limit: int = OPEN_POOL) -> list[str]:
    """The words that may end this line under `rule` on a stressed syllable, commonest first
    (all of a rhyme's partners; for a group's first line, the `limit` commonest on a rhyme sound
    no other line ends on)."""
    taken: set[str] = set()
    if rule.keys is not None:
        pool = set().union(*(vocab.by_key.get(k, ()) for k in rule.keys))
    else:  # a new group: on a sound no other group rhymes on (ABAB with A and B alike is AAAA)
        pool = set().union(*(ws for ws in vocab.by_key.values() if len(ws) > rule.partners))
        taken = set().union(*(rhyme_keys(w) for w in rule.used)) | rule.avoid
    found = [w for w in pool if any(closes(s.pattern, templates) and s.rhyme not in taken
                                    and vocab.final_ok(rule, w, s.rhyme) for s in vocab.sounds[w])]
    found.sort(key=lambda w: (-zipf(w), w))
    return found if rule.keys is not None else found[:limit]


def read(dec, vocab: Vocabulary, words: Iterable[str]) -> dict[str, float]:
    """Each word's first token's log-prob at the decoder's place (mid-line form)."""
    firsts = {w: ids[0] for w in words if (ids := vocab.spell(w))}
    tokens = sorted(set(firsts.values()))
    if hasattr(dec, "logprobs"):  # all of them from the logits at hand
        seen = dict(zip(tokens, dec.logprobs(tokens))) if tokens else {}
    else:
        seen = {t: dec.sample([t], READ)[1] for t in tokens}
    return {w: seen[t] for w, t in firsts.items()}


def read_one(dec, token: int) -> float:
    return dec.logprobs([token])[0] if hasattr(dec, "logprobs") else dec.sample([token], READ)[1]


def score_rows(dec, rows: list[list[int]]) -> list[list[float]]:
    """The log-prob of each token of each row after the decoder's place (each row on its own): in
    one batched forward where the decoder can, else token by token (it is left where it was)."""
    if hasattr(dec, "score_rows"):
        return dec.score_rows(rows)
    start, out = dec.mark(), []
    for ids in rows:
        dec.rewind(start)
        out.append([])
        for token in ids:
            out[-1].append(read_one(dec, token))
            dec.step(token)
    dec.rewind(start)
    return out


class TopicGauge:
    """How much the poem's heading (with the topic) makes a word likelier than a heading without
    one: log-prob after heading + stub, less the same after the neutral heading. Cached per word."""

    def __init__(self, generator, vocab: Vocabulary, heading: str, neutral: str | None):
        self.generator, self.vocab = generator, vocab
        self.heading, self.neutral = heading, neutral
        self.decs = None
        self.line_decs = None  # at the two headings themselves (line_topic)
        self.gains: dict[str, float] = {}
        self._pool: dict[str, list[str]] | None = None

    def pool(self) -> dict[str, list[str]]:
        """Rhyme key -> the commonest line-ending words with it (where a group's first word looks
        for its partners), their topic gains read."""
        if self._pool is None:
            common = sorted(self.vocab.enders, key=lambda w: (-zipf(w), w))[:PARTNER_POOL]
            self.gain(common)
            self._pool = {}
            for w in common:
                for s in self.vocab.sounds[w]:
                    self._pool.setdefault(s.rhyme, []).append(w)
        return self._pool

    def line_gain(self, text: str) -> float:
        """The mean topic gain of a line's content words (how much the line keeps to the topic)."""
        words = [w for w in words_of(text) if w not in FUNCTION_WORDS and w in self.vocab.sounds]
        if not words:
            return 0.0
        gains = self.gain(words)
        return sum(gains[w] for w in words) / len(words)

    def line_topics(self, lines: list[list[int]]) -> list[float]:
        """How much likelier each whole line (its tokens) is after the heading with the topic than
        after the neutral one, per token: the bench's topic gain (there against another topic). The
        look-up of a line's words (line_gain) misses a line that drifts in what it says."""
        if self.neutral is None:
            return [math.inf] * len(lines)  # no topic: nothing to drift from
        if self.line_decs is None:
            decs = [open_decoder(self.generator, h, 0) for h in (self.heading, self.neutral)]
            self.line_decs = [(d, d.mark()) for d in decs]
        means = []
        for dec, start in self.line_decs:
            dec.rewind(start)
            means.append([sum(r) / len(r) if r else 0.0 for r in score_rows(dec, lines)])
        return [a - b for a, b in zip(*means)]

    def gain(self, words: Iterable[str]) -> dict[str, float]:
        words = [w for w in words if w not in self.gains]
        if words and self.neutral is None:
            self.gains.update(dict.fromkeys(words, 0.0))  # no topic: nothing to keep to
        elif words:
            if self.decs is None:
                self.decs = (open_decoder(self.generator, self.heading + TOPIC_STUB, 0),
                             open_decoder(self.generator, self.neutral + TOPIC_STUB, 0))
            on, off = (read(d, self.vocab, words) for d in self.decs)
            self.gains.update({w: on[w] - off[w] for w in on})
        return self.gains


class RhymePlan:
    """The plan of one line: its candidates, read at the end of a draft, then the best few."""

    def __init__(self, vocab: Vocabulary, templates: tuple[str, ...], rule: RhymeRule, gauge: TopicGauge,
                 partners_needed: int = 0):
        self.vocab, self.rule, self.gauge = vocab, rule, gauge
        self.words = candidates(vocab, templates, rule)
        self.partners_needed = partners_needed  # later lines of the group (a group's first line)
        self.marks: list[object] = []  # the draft's word boundaries (decoder marks)
        self.context: dict[str, float] = dict.fromkeys(self.words, -math.inf)
        self.where: dict[str, int] = {}  # word -> the boundary it read best at
        self.chosen: list[str] = []
        self.score: dict[str, float] = {}  # the planned words' scores (what chose them)

    def observe(self, dec) -> None:
        """The draft is at a word boundary: remembered, to read there once it is written."""
        self.marks.append(dec.mark())

    def _read_ends(self, dec) -> None:
        """Read the candidates at the draft's last READ_AT boundaries (where its end was coming):
        the best place counts."""
        for k in range(max(0, len(self.marks) - READ_AT), len(self.marks)):
            dec.rewind(self.marks[k])
            for w, lp in read(dec, self.vocab, self.words).items():
                if lp > self.context[w]:
                    self.context[w], self.where[w] = lp, k

    def partner_quality(self, word: str, heard: dict[str, float]) -> float:
        """How well the best partners left for `word` (a group's first line) would end a line
        here: their log-prob at the draft's last boundary plus their topic gain (mean of the best
        few); -inf when too few of the common words rhyme with it."""
        if not self.partners_needed:
            return 0.0
        scores = sorted((heard[p] + TOPIC_WEIGHT * self.gauge.gains[p] for p in self._mates(word) if p in heard),
                        reverse=True)[: self.partners_needed]
        if len(scores) < self.partners_needed:
            return -math.inf
        return sum(scores) / len(scores)

    def _mates(self, word: str) -> set[str]:
        pool = self.gauge.pool()
        return {p for k in self.rule.planned([word]).keys for p in pool.get(k, ())
                if p != word and p not in self.rule.used and not echoes(p, word)}

    def plan(self, dec, n: int = PLAN_WORDS) -> list[str]:
        """The `n` best words, read on `dec` right after the draft (it is left anywhere: the
        writer rewinds it for the next draw). Topic gain and, for a group's first word, its partners rank a
        shortlist; the best REFINE of it are then said whole after their best boundary, followed
        by the end of a line (a word the line cannot stop on, "the high", reads badly there), and
        rank first; the next best by the first reading fill the plan up to `n`."""
        self._read_ends(dec)
        gains = self.gauge.gain(self.words)
        heard = [w for w in self.words if w in self.where]
        score = {w: self.context[w] + TOPIC_WEIGHT * gains[w] for w in heard}
        if self.partners_needed and self.marks:
            short = sorted(heard, key=lambda w: (-score[w], w))[:SHORTLIST]
            mates = set().union(*(self._mates(w) for w in short))
            self.gauge.gain(mates)
            dec.rewind(self.marks[-1])
            partner = read(dec, self.vocab, mates)
            score = {w: score[w] + PARTNER_WEIGHT * self.partner_quality(w, partner) for w in short}
        ranked = sorted((w for w in score if score[w] > -math.inf), key=lambda w: (-score[w], w))
        refined = ranked[:REFINE]
        for w in refined:
            score[w] += self._said(dec, w) - self.context[w]
        self.chosen = (sorted(refined, key=lambda w: (-score[w], w)) + ranked[REFINE:])[:n]
        self.score = score
        return self.chosen

    def _said(self, dec, word: str) -> float:
        """The word's whole log-prob after its best boundary, plus END_WEIGHT times the log-prob
        of ending the line (or the sentence, or the clause) right after it."""
        dec.rewind(self.marks[self.where[word]])
        total = 0.0
        for token in self.vocab.spell(word):
            total += read_one(dec, token)
            dec.step(token)
        ends = [read_one(dec, t) for t in (self.vocab.newline, *self.vocab.punctuation) if t is not None]
        return total + END_WEIGHT * _logsumexp(ends)


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))

"""Writing a poem under the constraints: line by line, sample-and-rank, backtracking.

Each line is sampled token by token from the model with only the allowed tokens open (see
constrain.py; the engine's ConstrainedDecoder does the sampling), or, on an engine that cannot be
steered token by token but follows a grammar, asked for under the line's grammar (remote.py).
Every line is checked by the scanner before it is kept, and never opens with the same four words
as another line. A line that rhymes has its rhyme word planned first (plan.py: a draft, then the
likeliest words of the topic that fit the meter's end, with good partners for a group's first
line); its other draws may end only on the planned words, and are drawn ROWS at a time side by
side (the engine's rows: one batched forward per token), each row's last word or two the
likeliest allowed (not in a triple meter: greedy_ends). Lines are ranked (pick): first those the
critic passes, then those whose rhyme word the model would say there (not forced: FORCED_FLOOR),
then, late in a poem, those that keep to the topic (the whole line read after the heading with
the topic and after one without; the line kept is always read), then, among lines on the topic,
those that end their phrase (unfinished: not "sailed the high") and those that say no phrase of two
earlier lines again (tic: no draw may say a phrase of the lines before it, see said; a grammar
engine's lines are only let go for it), then by rank_score (the model's mean log-prob, the rhyme word's
log-prob, the topic of its words). A partner line whose best draw
still reads forced (or, late, off the topic) sends the writer back to write its group's first
line on another rhyme, and a group's first line that still reads forced is written again itself
on another rhyme (REWRITES per poem while its time cap lasts, and CLOSING_REWRITES more for the
closing group: a sonnet's couplet, whose forced word would be the poem's last, came after the
body had spent them). Once no rewrite can follow, a rhyming line whose every draw reads forced
draws FORCED_DRAWS more, and a group comes back as its best try read (_best_tried). A late line
with no draw read as on the topic and saying its rhyme draws TOPIC_DRAWS more (most late lines
kept astray were the only draw read whose rhyme word was not forced, and a partner kept astray
sent its group back, which cost more). Each line is written after the poem's heading (form and
topic) and the lines before it (the last WINDOW of a long one), as a reader (and the bench) reads
it. Where the decoder has no rows, a look ahead (_steer) picks the word before the rhyme instead.

Time is budgeted per line (the poem's time cap shared among the lines left): past its budget a
line keeps the best it has drawn, and if it has none, a greedy depth-first search writes it, so a
slow machine gets every line (fewer candidates each), never a poem cut short. Only a line no
search can complete in SEARCH_STEPS tokens, however slow the machine (its rhyme has no usable
partner), sends the writer back to the line that
chose the rhyme; one still impossible after that is reported, never shipped as if it scanned.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from storyloom import StoryloomError
from storyloom.engine.constrained import open_decoder, steers_tokens
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import critic, wordfilter
from storyloom.modes.poetry.constrain import (END_PUNCTUATION, FUNCTION_WORDS, MIN_PARTNERS, MODIFIERS,
                                              NOUN_AFTER_THE, OPENING_WORDS, UNFINISHED_LEADS, LineConstraint, RhymeRule, Vocabulary, default_lexicon)
from storyloom.modes.poetry.forms import Form
from storyloom.modes.poetry.plan import READ, RhymePlan, TopicGauge
from storyloom.modes.poetry.prosody import rhyme_keys, rhymes, words_of
from storyloom.modes.poetry.scan import last_word, scan_line

log = logging.getLogger(__name__)

LINE_TRIES = 17  # draws per slot at most (the draft, then batches of ROWS)
LINE_CANDIDATES = 6  # lines kept per slot that do not end on a forced word (time allowing); the best is kept
ROWS = 8  # lines drawn side by side (one batched forward per token: 8 rows cost 2.7 rows' time)
BACKTRACKS = 4
TIME_CAP = 90.0  # the poem's budget, shared out per line; never a reason to drop a line
REDRAWS = 3  # draws a line may take past its budget while the critic fails every one it has
MIN_LINE_S = 1.0  # a line's budget when the poem's is spent (the first draw is always finished)
SEARCH_STEPS = 200  # tokens the greedy fallback may try for one line (past them it is impossible for now: backtrack)
SEARCH_MAX_S = 600.0  # a hard stop only: bounded by time, a loaded machine's slow steps had made possible lines
# "impossible" (a 30 s bound ran out before the 200 steps, the backtracks ran out, and a sonnet shipped 3 missing lines)
WINDOW = 16  # poem lines the model sees before the one it writes (after the heading with the topic): every
# named form's whole poem, as a reader (and the bench) reads it; with 4, a rhyme word that read well
# after the last lines read forced after the whole poem
FORCED_WEIGHT = 0.05  # per nat of the rhyme word's log-prob, on top of the line's mean
POEM_SETTINGS = SamplerSettings(temperature=0.5, top_k=40, top_p=0.95, repetition_penalty=1.2,
                                repetition_range=64)
GREEDY = POEM_SETTINGS.with_(temperature=0.0)
FORCED_FLOOR = -7.0  # nats: a rhyme word less likely than this reads as forced (the bench counts under -8)
FORCED_HINGE = 0.2  # per nat below the floor, on top of FORCED_WEIGHT
STEER_DRAWS = 3  # words drawn for a place near the line's end, each looked ahead from (_steer)
STEER_MARGIN = 4.0  # nats: a drawn word this much less likely than the likeliest drawn is not looked ahead from
STEER_SYLLABLES = 3  # how near: syllables left
STEERS = 2  # words of a line chosen so, at most
REWRITES = 5  # such rewrites per poem at most (apart from BACKTRACKS: a poem is never cut short for them)
CLOSING_REWRITES = 2  # more, for the poem's closing group only (a sonnet's couplet): its forced word is the
# poem's last, and nothing after it can make up for it; the body had spent all REWRITES before it
CLOSING_WITHIN = 2  # a closing group opens this many lines before the poem's last at most (closing_group)
FORCED_DRAWS = 16  # draws past LINE_TRIES for a rhyming line while every one ends forced (extra_draws)
FORCED_BACK = 4  # lines back to a group's first line at most, to write it again when its partner reads forced
# (a limerick's last line is 4 after its first: with 2 it could only draw more, and its "bar" read forced)
TOPIC_READS = 4  # late lines read for their topic per batch of draws, at most (a read costs two forwards)
TOPIC_MARGIN = 0.25  # nats per token a late line's topic gain must pass (read against a heading with no topic).
# 0.15 let lines of no topic pass that the bench reads likelier after another topic's heading: "We have
# been so far from the light of day." (autumn; 0.17 here, -0.07 against "a lost key"). Reading them
# against other topics' headings ("love", "a long journey") as well caught none of the bench's
# drifting lines (the neutral heading was the stricter reading) and cost two forwards a read.
DRIFT_FROM = 6  # lines before this one are not read for it (a poem's topic faded after its sixth line)
TOPIC_LINE_WEIGHT = 0.15  # per nat of the line's topic gain (sonnets drifted from their topic late)
TOPIC_DRAWS = 8  # draws past LINE_TRIES for a late line while none read is on the topic and says its rhyme
REPEATED_PHRASE_LINES = 2  # a line sharing a phrase (phrases) with this many earlier lines reads as a tic (the
# bench's repeated_phrases): it loses to a line that does not (grade)


@dataclass
class PoemLine:
    text: str
    ok: bool  # False: it could not be completed (shown as such, never passed off as scanning)
    last_word: str | None = None
    logprob: float = 0.0  # summed log-prob of its tokens under the unconstrained model
    tokens: int = 0
    ids: list[int] = field(default_factory=list, repr=False)
    final_logprob: float | None = None  # the last word's tokens' share of logprob (None: not known)
    penalty: float = 0.0  # the critic's faults (rank_score)
    searched: bool = False  # written by the greedy fallback, not drawn
    topic: float = 0.0  # the mean topic gain of its content words (plan.TopicGauge; rank_score)
    line_topic: float | None = None  # the whole line's topic gain (TopicGauge.line_topics; late lines only)
    repeats: int = 0  # earlier lines of the poem it shares a phrase with (phrase_repeats; grade: tic)
    final_from: int | None = None  # where in ids its last word starts (read_finals; None: not known)

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
    searches: int = 0  # lines that needed the greedy fallback (out of time, or no draw passed)
    rewrites: int = 0  # group openers written again because the best partner drawn read forced
    revisions: int = 0  # lines written again once the poem stood, and kept (revise.py)
    revision_seconds: float = 0.0  # of `seconds`, the revision's

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
    kept = getattr(generator, "_poetry_vocab", None)
    if isinstance(kept, Vocabulary):  # one given whole (tests give a small one)
        return kept
    if not isinstance(kept, dict):
        kept = generator._poetry_vocab = {}
    filtering = wordfilter.enabled()  # one trie per word-filter setting
    if filtering not in kept:
        if not steers_tokens(generator):
            raise StoryloomError(cannot_constrain(generator))
        kept[filtering] = Vocabulary(generator.tokenizer)
    return kept[filtering]


def poem_prompt(generator, form: Form, topic: str, style: str = "") -> str:
    """The content comes from here (topic, style); the form comes from the constraints."""
    topic = topic.strip() or "anything you like"
    style = f", {style.strip()}" if style.strip() else ""
    if getattr(generator.info, "chat_template", False):
        return generator.chat_prompt([{"role": "user", "content": f"Write {form.request} about {topic}{style}."}])
    return f"{form.request[:1].upper()}{form.request[1:]} about {topic}{style}.\n\n"


def rule_for(form: Form, line: int, finals: list[str | None], later: bool = True,
             avoid: frozenset[str] = frozenset()) -> RhymeRule:
    """The rhyme rule of `line` given the last words of the other lines (None: not written). No
    line ends on a word another line already ends on (a rhyme word said twice is no rhyme). A
    group's first line ends on none of the rhyme keys in `avoid` (given up on: see compose)."""
    group = [finals[j] for j, letter in enumerate(form.letters)
             if letter == form.letters[line] and j != line and j < len(finals) and finals[j]]
    used = frozenset(f for j, f in enumerate(finals) if f and j != line) - set(group)
    if group:
        keys = set.intersection(*(rhyme_keys(w) for w in group)) or set.union(*(rhyme_keys(w) for w in group))
        return RhymeRule(frozenset(keys), frozenset(group), used=used)
    if later and form.rhymed_later(line):
        return RhymeRule(partners=MIN_PARTNERS, used=used, avoid=avoid)
    return RhymeRule(used=used)


def opening(text: str) -> tuple[str, ...] | None:
    """A line's first four words (None for a shorter line: too short to read as a repeat)."""
    words = words_of(text)
    return tuple(words[:OPENING_WORDS]) if len(words) >= OPENING_WORDS else None


def phrases(text: str, keep: frozenset[str] = frozenset()) -> set[tuple[str, str]]:
    """A line's two-word runs that end on a word of its own (not a function word, not one of `keep`:
    the topic's words may come back)."""
    words = words_of(text)
    return {(a, b) for a, b in zip(words, words[1:]) if b not in FUNCTION_WORDS and b not in keep}


def phrase_repeats(text: str, earlier: list[str], keep: frozenset[str] = frozenset()) -> int:
    """How many earlier lines share a phrase (phrases) with this one."""
    mine = phrases(text, keep)
    return sum(1 for line in earlier if mine & phrases(line, keep)) if mine else 0


def said(lines: list[PoemLine], keep: frozenset[str] = frozenset()) -> frozenset[tuple[str, str]]:
    """The phrases (phrases) the lines say: what a line written after them (compose) or again among
    them (revise) may not say (LineConstraint's banned), so it shares none with them: no line can be a
    tic (a tic's redraws had said "where dreams" again and again; grade only ranked them lower)."""
    return frozenset().union(*(phrases(line.text, keep) for line in lines if line.ok))


def breaks_off(form: Form, index: int, text: str) -> bool:
    """Does line `index`, held to end the poem's sentence (Form.closing), break off instead?"""
    return form.closing(index) and not text.rstrip().endswith(END_PUNCTUATION)


def verifier(form: Form, index: int, finals: list[str | None], openings: frozenset = frozenset()) -> Callable[[str], bool]:
    """Does a line at `index` pass the scanner (`storyloom scan`): its meter, and its rhyme with
    the first line of its group (or, for that first line, with the group's other lines)? And does
    it open unlike the other lines (`openings`), and, as the poem's last, end its sentence?"""
    templates = form.templates(index)
    group = [j for j, letter in enumerate(form.letters) if letter == form.letters[index]]
    others = [finals[j] for j in group if j != index and j < len(finals) and finals[j]]
    first = finals[group[0]] if group[0] != index and group[0] < len(finals) else None

    def ok(text: str) -> bool:
        start = opening(text)
        if start is not None and start in openings:
            return False
        if breaks_off(form, index, text):
            return False
        if not scan_line(text, templates).meter_ok:
            return False
        last = last_word(text)
        if group[0] != index:
            return first is None or rhymes(first, last)
        return all(rhymes(other, last) for other in others)
    return ok


# Critic findings that say nothing about one line of verse (a line is short, may end on a comma).
NOT_FOR_LINES = frozenset({"dangling", "length", "fragments", "trailing", "drift"})


def critic_penalty(text: str, earlier: list[str], hidden: str, topic: str = "") -> float:
    """The critic's faults in a poem line: assistant voice, leaks of the prompt, repeats of
    earlier lines, junk. A fatal one keeps the line out (see rank_score). The topic's own words
    are the poem's to use, never a leak of the heading (a short heading, a base model's "A
    sonnet about the sea.", made every line with "the sea" a fail and drove lines off the topic)."""
    verdict = critic.judge(text, critic.Brief(kind="passage", min_words=1, max_words=60, scene=topic,
                                              earlier=tuple(earlier), hidden=(hidden,)))
    words = words_of(text)
    doubled = any(a == b and a not in ("very", "far", "so") for a, b in zip(words, words[1:]))  # "her side side"
    return sum(f.cost for f in verdict.findings if f.code not in NOT_FOR_LINES) + (critic.FAIL if doubled else 0.0)


def rank_score(line: PoemLine) -> float:
    """Higher is better: the model's mean log-prob of the line, less a little for each nat the
    rhyme word was forced (a word the model would not have said there), less the critic's faults."""
    forced = line.final_logprob if line.final_logprob is not None else 0.0
    return (line.mean_logprob + FORCED_WEIGHT * forced - FORCED_HINGE * max(0.0, FORCED_FLOOR - forced)
            + TOPIC_LINE_WEIGHT * line.topic - line.penalty)


def forced(line: PoemLine) -> bool:
    """Was the line's last word one the model would hardly have said there?"""
    return line.final_logprob is not None and line.final_logprob < FORCED_FLOOR


def tic(line: PoemLine) -> bool:
    """Does the line share a phrase with REPEATED_PHRASE_LINES earlier lines (a reader's "again")?"""
    return line.repeats >= REPEATED_PHRASE_LINES


def unfinished(text: str) -> bool:
    """Does the line end on a modifier right after a word that wants a noun next ("sailed the ten",
    "a tale of high": constrain.MODIFIERS after UNFINISHED_LEADS; not "the bold", NOUN_AFTER_THE), a
    phrase a reader hears cut off?"""
    words = words_of(text)
    return (len(words) >= 2 and words[-1] in MODIFIERS and words[-2] in UNFINISHED_LEADS
            and not (words[-2] == "the" and words[-1] in NOUN_AFTER_THE))


def pick(found: list[PoemLine]) -> PoemLine:
    """The best drawn line: one the critic does not fail, if any, then one that does not end on a
    forced word, if any (a topic or a fluent start never buys a rhyme the model would not say),
    then one that keeps to the topic (where it was read: late lines), then one that does not end
    cut off (unfinished), then one that repeats no phrase of two earlier lines (tic), then by rank_score."""
    return max(found, key=lambda line: (*grade(line), rank_score(line)))


def grade(line: PoemLine) -> tuple[bool, bool, bool, bool, bool]:
    """What a line must be before its score counts: passed by the critic, its rhyme word not
    forced, on topic (late lines, line_topic; a line not read for it counts as on topic: best_line
    reads the late line it keeps), not cut off (unfinished), no tic. The last two count only in a
    line on topic: among lines off it, the likelier wins (a tic had made a line further off the
    topic win, and the poem strayed)."""
    on_topic = line.line_topic is None or line.line_topic > TOPIC_MARGIN
    return (line.penalty < critic.FAIL, not forced(line), on_topic, not (on_topic and unfinished(line.text)),
            not (on_topic and tic(line)))


class _TokenWriter:
    """Lines written token by token by a ConstrainedDecoder under a LineConstraint (the local path).
    A decoder is opened over each line's context (heading and last lines); retries of the same
    context rewind it (the KV cache is cut back, never shared)."""

    def __init__(self, generator, vocab: Vocabulary, seed: int | None):
        self.generator = generator
        self.vocab = vocab
        self.seed = seed
        self.context: str | None = None
        self.dec = None
        self.start = None
        self.opened = 0
        self.openings: frozenset = frozenset()
        self.closing = False  # the line being drawn ends the poem (LineConstraint.closing)
        self.banned: frozenset[tuple[str, str]] = frozenset()  # phrases the line may not say (LineConstraint)
        self.gauge: TopicGauge | None = None  # the poem's: each line drawn is scored for its topic

    def _open(self, context: str) -> None:
        if self.context is not None and context != self.context and context.startswith(self.context):
            # the poem grew by a line and the window has not slid yet: feed the new text only
            self.dec.rewind(self.start)
            for token in self.vocab.tokenizer(context[len(self.context):], add_special_tokens=False)["input_ids"]:
                self.dec.step(token)
            self.context, self.start = context, self.dec.mark()
        elif context != self.context:
            self.opened += 1
            seed = None if self.seed is None else (self.seed * 1_000_003 + self.opened) % 2**62
            self.dec = open_decoder(self.generator, context, seed)
            self.context, self.start = context, self.dec.mark()
        else:
            self.dec.rewind(self.start)

    def _line(self, constraint: LineConstraint, tokens: list[int], logprobs: list[float], final_from: int) -> PoemLine:
        text = self.dec.decode(tokens).strip()
        final = sum(lp for tok, lp in zip(tokens[final_from:], logprobs[final_from:])
                    if tok not in self.vocab.punctuation and tok != self.vocab.newline)
        return PoemLine(text, True, constraint.last_word, sum(logprobs), len(tokens), list(tokens), final,
                        final_from=final_from)

    def _write(self, templates: tuple[str, ...], rule: RhymeRule, settings: SamplerSettings, deadline: float | None,
               cancel, reader: Callable[[object], None] | None = None, steer: int = STEERS) -> PoemLine | None:
        """One line drawn by sampling (None: a corner, out of its time, or cancelled). `reader`
        is shown the decoder at each word boundary after the first word (a rhyme plan's draft).
        Near the end up to `steer` words are chosen with a look ahead (_steer; 0: all sampled)."""
        draft = _Draft(LineConstraint(self.vocab, templates, rule, self.openings, self.closing, self.banned))
        constraint = draft.constraint
        for _ in range(4 * max(len(t) for t in templates) + 12):
            if (deadline is not None and time.monotonic() > deadline) or (cancel is not None and cancel.is_set()):
                return None
            allowed = constraint.allowed()
            if not allowed:
                return None  # a corner: the caller writes the line again
            if reader is not None and (constraint.node.word is not None if constraint.in_word else constraint.words):
                reader(self.dec)  # after a whole word (the next token may still lengthen it)
            steered = self._steer(constraint, allowed, settings) if steer > 0 else None
            steer -= steered is not None
            token, token_logprob = steered or self.dec.sample(allowed, settings)
            done = draft.take(token, token_logprob)
            self.dec.step(token)
            if done:
                return self._line(constraint, draft.tokens, draft.logprobs, draft.final_from)
        return None

    def _write_rows(self, templates: tuple[str, ...], rule: RhymeRule, settings: SamplerSettings,
                    deadline: float | None, cancel, count: int) -> list[PoemLine | None]:
        """`count` lines drawn side by side from the decoder's place (one batched forward per
        token for all of them; the decoder is left where it was). None for a row that met a
        corner, or all of them out of time or cancelled. No look ahead: the rows are ranked instead."""
        rows = self.dec.rows(count)
        greedy = greedy_ends(templates)
        drafts = [_Draft(LineConstraint(self.vocab, templates, rule, self.openings, self.closing, self.banned))
                  for _ in range(count)]
        out: list[PoemLine | None] = [None] * count
        going = list(range(count))  # the line each row of `rows` draws
        for _ in range(4 * max(len(t) for t in templates) + 12):
            if (deadline is not None and time.monotonic() > deadline) or (cancel is not None and cancel.is_set()):
                return [None] * count
            allowed = [drafts[i].constraint.allowed() if i is not None else [] for i in going]
            stuck = [r for r, i in enumerate(going) if i is not None and not allowed[r]]
            for r in stuck:  # a corner: this line is lost, its row idles
                going[r] = None
            # the last word or two: the likeliest allowed (the rhyme word where the plan has it):
            # sampling there only makes the line's end less likely than it could be. Not in a
            # triple meter (greedy_ends): there it made limericks less fluent, not more
            ending = [greedy and i is not None and _near_end(drafts[i].constraint) for i in going]
            drawn = rows.sample([a or [self.vocab.newline] for a in allowed], settings, ending)
            for r, i in enumerate(going):
                if i is None:
                    continue
                d = drafts[i]
                if d.take(*drawn[r]):
                    out[i] = self._line(d.constraint, d.tokens, d.logprobs, d.final_from)
                    going[r] = None
            live = [r for r, i in enumerate(going) if i is not None]
            if not live:
                return out
            dead = [r for r, i in enumerate(going) if i is None]
            if len(dead) * 2 >= len(going):  # half the rows idle: go on without them (dropping copies the cache)
                rows.drop(dead)
                going = [going[r] for r in live]
                drawn = [drawn[r] for r in live]
            rows.step([tok if going[r] is not None else self.vocab.newline for r, (tok, _) in enumerate(drawn)])
        return out

    def _steer(self, constraint: LineConstraint, allowed: list[int], settings: SamplerSettings) -> tuple[int, float] | None:
        """The word before the last, chosen with a look ahead: a few one-token words are drawn
        for the place, and the one after which the line's next token (its rhyme word, where the
        plan allows only planned ones) is likeliest, with its own log-prob, is taken. None: not
        that place (the line is not within STEER_SYLLABLES of its end)."""
        if not _near_end(constraint):
            return None
        mark, state = self.dec.mark(), constraint.state()
        tried: dict[int, tuple[float, float]] = {}
        for _ in range(STEER_DRAWS):
            pool = [t for t in allowed if t not in tried]
            if not pool:
                break
            token, lp = self.dec.sample(pool, settings)
            tried[token] = (lp, -math.inf)
            if not _starts_word(constraint, token) or lp < max(v[0] for v in tried.values()) - STEER_MARGIN:
                continue  # a word's second token, or one much less likely than another drawn
            constraint.advance(token)
            after = constraint.allowed() if constraint.node is not None and constraint.node.word else []
            after = [t for t in after if t not in constraint.node.children] if after else []
            if after:
                self.dec.step(token)
                tried[token] = (lp, lp + self.dec.sample(after, READ)[1])
                self.dec.rewind(mark)
            constraint.restore(state)
        best = max(tried, key=lambda t: tried[t][1], default=None)
        if best is None or tried[best][1] == -math.inf:
            return None
        return best, tried[best][0]

    def _search(self, templates: tuple[str, ...], rule: RhymeRule, verify: Callable[[str], bool], avoid,
                cancel, deadline: float | None = None) -> PoemLine | None:
        """The fallback: the likeliest allowed token each step (greedy); from a dead end, or a line
        `verify` rejects, it backs out of the last word and takes the next likeliest first token
        there, until a line passes (or SEARCH_STEPS tokens were tried, or the hard stop `deadline` passed)."""
        constraint = LineConstraint(self.vocab, templates, rule, self.openings, self.closing, self.banned)
        limit = 4 * max(len(t) for t in templates) + 12
        tokens: list[int] = []
        logprobs: list[float] = []
        starts: list[int] = []  # token indexes where words start
        stack: list[tuple[object, tuple, set[int]]] = []  # per depth: decoder mark, constraint state, tried

        def back_out() -> bool:
            """Undo the last word (or token): it is never tried again at that place."""
            if not tokens:
                return False
            depth = starts[-1] if starts else len(tokens) - 1
            banned = tokens[depth]
            del tokens[depth:], logprobs[depth:], stack[depth + 1:]
            while starts and starts[-1] >= depth:
                starts.pop()
            mark, state, tried = stack[depth]
            self.dec.rewind(mark)
            constraint.restore(state)
            tried.add(banned)
            return True

        for _ in range(SEARCH_STEPS):
            if (cancel is not None and cancel.is_set()) or (deadline is not None and time.monotonic() > deadline):
                return None
            if len(stack) <= len(tokens):
                stack.append((self.dec.mark(), constraint.state(), set()))
            tried = stack[len(tokens)][2]
            allowed = [t for t in constraint.allowed() if t not in tried] if len(tokens) < limit else []
            if not allowed:
                if not back_out():
                    return None
                continue
            token, lp = self.dec.sample(allowed, GREEDY)
            starting = _starts_word(constraint, token)
            constraint.advance(token)
            if starting:
                starts.append(len(tokens))
            tokens.append(token)
            logprobs.append(lp)
            self.dec.step(token)
            if constraint.done:
                line = self._line(constraint, tokens, logprobs, starts[-1] if starts else 0)
                if plain(line.text) not in avoid and verify(line.text):
                    line.searched = True
                    return line
                if not back_out():  # rejected whole (said before, say): another last word
                    return None
        return None

    def _read_topics(self, lines: list[PoemLine]) -> None:
        """Read the first TOPIC_READS of `lines` for their topic (line_topic): one batched forward per heading."""
        lines = lines[:TOPIC_READS]
        if lines:
            for line, gain in zip(lines, self.gauge.line_topics([f.ids[:-1] for f in lines])):
                line.line_topic = gain

    def _topic_draws(self, found: list[PoemLine], topical: bool) -> int:
        """Draws past LINE_TRIES for a late line while no line read passes all of grade: TOPIC_DRAWS
        (most late lines kept astray were the only line read that said its rhyme)."""
        astray = topical and self.gauge is not None and not any(f.line_topic is not None and all(grade(f)) for f in found)
        return TOPIC_DRAWS if astray else 0

    def best_line(self, context: str, templates: tuple[str, ...], rule: RhymeRule, verify: Callable[[str], bool],
                  settings: SamplerSettings, deadline: float, cancel, poem: Poem | None = None,
                  keep: int | None = None, avoid: frozenset[str] = frozenset(),
                  judge: Callable[[str], float] | None = None, openings: frozenset = frozenset(),
                  plan: RhymePlan | None = None, topical: bool = False, more: int = 0,
                  closing: bool = False, repeats: Callable[[str], int] | None = None,
                  search: bool = True,
                  banned: frozenset[tuple[str, str]] = frozenset()) -> PoemLine | None:
        """Draw up to `keep` complete lines (within LINE_TRIES tries, while its time lasts; the
        first draw always runs to its end), keep the best (pick), else search greedily for one
        (unless not `search`: the revision, which has a line already, gets None).
        A draw that opens like another line (`openings`) is abandoned at its fourth word. With a
        rhyme `plan`, the first draw is a draft the plan reads its candidates in (kept only if it
        ends on a planned word); the rest may end only on the planned words. Lines ending on a
        forced word (FORCED_FLOOR) do not count toward `keep`: more are drawn, up to LINE_TRIES in
        all; so do, for a `topical` (late) line, the best few of each batch read as off the topic.
        After the first draw (and the plan), lines are drawn ROWS at a time side by side. While
        every line drawn ends on a forced word, up to `more` are drawn past LINE_TRIES (cheaper than
        writing the group again). A `closing` line (the poem's last) ends on . ! or ?. `repeats`
        counts the earlier lines a line shares a phrase with (tic: pick keeps one only as a last resort).
        `banned`: two-word phrases no draw may say (LineConstraint: the tokens are closed)."""
        self.openings, self.closing, self.banned = openings, closing, banned
        keep = LINE_CANDIDATES if keep is None else keep
        found: list[PoemLine] = []
        tries = 0
        while (tries < LINE_TRIES or (tries < LINE_TRIES + more and all(forced(f) for f in found))
               or tries < LINE_TRIES + self._topic_draws(found, topical)):
            if cancel is not None and cancel.is_set():
                return None
            # past its budget a line keeps what it has, unless the critic fails all of it (a few more draws)
            over = time.monotonic() > deadline
            if tries and over and (not found or any(line.penalty < critic.FAIL for line in found)
                                   or tries >= REDRAWS):
                break
            self._open(context)
            if plan is not None or over or not hasattr(self.dec, "rows"):
                lines = [self._write(templates, rule, settings, deadline if tries and not over else None, cancel,
                                     plan.observe if plan is not None else None, steer=0 if plan is not None else STEERS)]
            else:
                lines = self._write_rows(templates, rule, settings, deadline if tries else None, cancel,
                                         min(ROWS, LINE_TRIES + max(more, self._topic_draws(found, topical)) - tries))
            tries += len(lines)
            if poem is not None:
                poem.line_tries += len(lines)
            if plan is not None:
                chosen = plan.plan(self.dec)
                if chosen:  # the rest are drawn toward the plan's words; the draft only if it ends on one
                    rule = rule.planned(chosen)
                    lines = [line if line is not None and line.last_word in chosen else None for line in lines]
                plan = None
            kept = []
            for line in lines:
                if line is not None and plain(line.text) not in avoid and verify(line.text):  # never the same line twice
                    avoid = avoid | {plain(line.text)}
                    line.penalty = judge(line.text) if judge else 0.0
                    line.repeats = repeats(line.text) if repeats else 0
                    line.topic = self.gauge.line_gain(line.text) if self.gauge is not None else 0.0
                    kept.append(line)
            found += kept
            if topical and self.gauge is not None and len(lines) > 1:
                # the best unread lines the critic passes and whose rhyme is said, read for their
                # topic (a batched forward per heading, the draft's line with the first rows)
                self._read_topics(sorted((f for f in found if f.line_topic is None and all(grade(f)[:2])),
                                         key=rank_score, reverse=True))
            enough = sum(not forced(f) for f in found) >= keep  # lines ending on a forced word do not count
            if enough and (not topical or any(f.line_topic is not None and all(grade(f)) for f in found)):
                break  # (and a late line has one read as on the topic): else more are drawn
        if found:
            best = pick(found)
            while topical and self.gauge is not None and best.line_topic is None:
                # an unread line counts as on the topic (grade): read the best unread ones, so a
                # late line kept is always read (one not read had won over the read ones that
                # strayed, and strayed itself: a sonnet's couplet); compose sends a partner that strays back
                self._read_topics(sorted((f for f in found if f.line_topic is None),
                                         key=lambda f: (*grade(f), rank_score(f)), reverse=True))
                best = pick(found)
            return best
        if not search:
            return None
        self._open(context)
        if poem is not None:
            poem.searches += 1
        line = self._search(templates, rule, verify, avoid, cancel, time.monotonic() + SEARCH_MAX_S)
        if line is not None:
            line.penalty = judge(line.text) if judge else 0.0
            line.repeats = repeats(line.text) if repeats else 0
            if topical and self.gauge is not None:
                self._read_topics([line])  # a late line kept is read, searched or drawn
        return line


def greedy_ends(templates: tuple[str, ...]) -> bool:
    """Are a row's last word or two taken as the likeliest allowed (see _write_rows)? Not in a
    triple meter (two weak syllables in a row: anapests, dactyls): the likeliest first token of
    the word before a limerick's rhyme led to rare words ('on a lea and run'); the limerick's
    fluency gap was 0.31 with greedy ends, -0.03 without (3 poems), where the iambic and syllabic
    forms measured more fluent with them."""
    return not any("00" in t for t in templates)


def _near_end(constraint: LineConstraint) -> bool:
    """Is the line at a word boundary within STEER_SYLLABLES of its end (the last word or two)?"""
    positions = constraint.positions
    if constraint.in_word:
        if constraint.node.word is None:
            return False
        positions = constraint._after(constraint.node.word, positions)
    elif not constraint.words:
        return False
    return any(2 <= len(constraint.templates[t]) - at <= STEER_SYLLABLES for t, at in positions)


class _Draft:
    """A line being drawn token by token (_write, _write_rows): its constraint, its tokens and
    their log-probs, and where its last word starts (for the rhyme word's log-prob)."""

    def __init__(self, constraint: LineConstraint):
        self.constraint = constraint
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.final_from = 0

    def take(self, token: int, logprob: float) -> bool:
        """Add a drawn token; True once the line is done."""
        if _starts_word(self.constraint, token):
            self.final_from = len(self.tokens)  # this token starts a word: the last one so far
        self.constraint.advance(token)
        self.tokens.append(token)
        self.logprobs.append(logprob)
        return self.constraint.done


def _starts_word(constraint: LineConstraint, token: int) -> bool:
    """Does `token` begin a word (after a space, punctuation or at the line start), not go on
    with the one before? (A whole word's node stays current until the next token.)"""
    node = constraint.node
    if token == constraint.vocab.newline or token in constraint.vocab.punctuation:
        return False
    return node is None or token not in node.children


def plain(text: str) -> str:
    return " ".join(words_of(text))


def _writer(generator, seed: int | None, prepared):
    if isinstance(prepared, Vocabulary):
        return _TokenWriter(generator, prepared, seed)
    from storyloom.modes.poetry.remote import GrammarWriter  # it builds on this module

    return GrammarWriter(generator, prepared, seed)


def _prepare(generator):
    """What writing needs before the clock starts: the token trie, or the grammar's lexicon."""
    if steers_tokens(generator):
        return vocabulary_for(generator)
    if generator.capabilities.grammar == "gbnf":
        return default_lexicon()
    raise StoryloomError(cannot_constrain(generator))


def check_time_cap(time_cap: float) -> None:
    if not 0 < time_cap < float("inf"):  # also NaN
        raise StoryloomError(f"The time cap must be more than 0 seconds and finite (got {time_cap:g}).")


def line_context(prompt: str, form: Form, lines: list[PoemLine], window: int = WINDOW) -> str:
    """What the model sees before a line: the heading (form and topic), then the last `window`
    lines with their stanza breaks (a failed line is left out)."""
    breaks = form.stanza_breaks()
    start = max(0, len(lines) - window)
    out = []
    for i in range(start, len(lines)):
        if lines[i].ok:
            out.append(lines[i].text + "\n")
        if i in breaks:
            out.append("\n")
    return prompt + "".join(out)


def _gauge(generator, prepared, form: Form, topic: str, style: str, prompt: str) -> TopicGauge | None:
    """The poem's topic gauge (rhyme plans read through the decoder: the token path only)."""
    if not isinstance(prepared, Vocabulary):
        return None
    neutral = poem_prompt(generator, form, "", style) if topic.strip() else None
    return TopicGauge(generator, prepared, prompt, neutral)


def _plan(prepared, form: Form, index: int, rule: RhymeRule, gauge: TopicGauge | None) -> RhymePlan | None:
    """A rhyme plan for a line that rhymes or opens a rhyme group (None for the others)."""
    if gauge is None or (rule.keys is None and not rule.partners):
        return None
    later = sum(1 for j in range(index + 1, form.lines) if form.letters[j] == form.letters[index])
    return RhymePlan(prepared, form.templates(index), rule, gauge, later if rule.keys is None else 0)


def _judge(prompt: str, lines: list[PoemLine], topic: str) -> Callable[[str], float]:
    earlier = [line.text for line in lines if line.ok]
    return lambda text: critic_penalty(text, earlier, prompt, topic)


def _repeats(lines: list[PoemLine], topic: str) -> Callable[[str], int]:
    """A line's phrase_repeats with the poem's other lines (the topic's words may come back)."""
    earlier, keep = [line.text for line in lines if line.ok], frozenset(words_of(topic))
    return lambda text: phrase_repeats(text, earlier, keep)


def closing_group(form: Form, index: int) -> bool:
    """Is `index` in the poem's closing rhyme group, one that lies within its last lines (a
    sonnet's couplet, the last of heroic couplets; not a limerick's A lines, which open it)?"""
    group = [j for j, letter in enumerate(form.letters) if letter == form.letters[-1]]
    return index in group and len(group) > 1 and group[0] >= form.lines - 1 - CLOSING_WITHIN


def rewrite_budget(form: Form, index: int) -> int:
    """Rewrites a poem may have spent when line `index` asks for one: REWRITES, and for the
    closing group CLOSING_REWRITES more (what the body left, too)."""
    return REWRITES + (CLOSING_REWRITES if closing_group(form, index) else 0)


def _group_start(index: int, rule: RhymeRule, partners: list[int]) -> int | None:
    """Where a rewrite for line `index` would write again from: a partner's group's first line
    (FORCED_BACK lines back at most), a group's first line itself; None for a line that does not
    rhyme, or a partner too far from its group's first line."""
    if partners:
        return partners[0] if rule.keys and index - partners[0] <= FORCED_BACK else None
    return index if rule.partners else None


def extra_draws(index: int, rule: RhymeRule, partners: list[int], may_redo: bool) -> int:
    """Draws past LINE_TRIES for a rhyming line whose every draw reads forced: FORCED_DRAWS once
    no rewrite can follow it (none left, or nowhere to go back to); else none, for the rewrite on
    another rhyme reads better (drawn on instead, a limerick's pair ended on a word just said
    where the rewrite had written a more fluent poem)."""
    rhyming = rule.keys is not None or rule.partners > 0
    return FORCED_DRAWS if rhyming and not (may_redo and _group_start(index, rule, partners) is not None) else 0


def _redo_from(form: Form, index: int, rule: RhymeRule, line: PoemLine | None, partners: list[int]) -> int | None:
    """The line to write again from when the best draw for `index` reads badly, or None: a
    partner that ends on a forced word, or late leaves the topic, goes back to its group's first
    line; a group's first line that ends on a forced word is written again itself, on another
    rhyme (_group_start)."""
    start = _group_start(index, rule, partners)
    if line is None or start is None:
        return None
    off_topic = bool(partners) and line.line_topic is not None and line.line_topic <= 0
    return start if (forced(line) and line.last_word) or off_topic else None


def _texts(lines: list[PoemLine]) -> tuple[str, ...]:
    return tuple(line.text for line in lines)


def _best_tried(poem: Poem, finals: list, i: int, line: PoemLine, tried: list, on_line) -> PoemLine:
    """Line `i` is to be kept (no rewrite left, or it reads well): if an earlier attempt at its
    group, after the same lines before it, ended on a line that reads better (pick: the critic,
    a rhyme word said, the topic, then the score), that attempt's lines come back instead, and
    its last line is returned (a rewrite never leaves the poem worse than a try it had: the
    couplet's last try ended forced where an earlier one had only strayed from the topic)."""
    # an attempt (the lines before it, its lines up to line i) that began where the poem now stands
    kept = [(len(prefix), lines) for prefix, lines in tried
            if len(prefix) + len(lines) - 1 == len(poem.lines) and prefix == _texts(poem.lines[:len(prefix)])]
    best = pick([line] + [lines[-1] for _, lines in kept])
    if best is line:
        return line
    start, lines = next((start, lines) for start, lines in kept if lines[-1] is best)
    _take_back(poem, finals, i, start, on_line)
    for j, earlier in enumerate(lines[:-1], start):
        poem.lines.append(earlier)
        finals.append(earlier.last_word)
        if on_line:
            on_line(j, earlier)
    return best


def _take_back(poem: Poem, finals: list, i: int, back_to: int, on_line) -> int:
    """Take lines back_to..i-1 back (on_line hears of each); returns the line to write next."""
    for j in range(i - 1, back_to - 1, -1):
        poem.lines.pop()
        finals.pop()
        if on_line:
            on_line(j, None)
    return back_to


def compose(generator, form: Form, topic: str, seed: int | None = None, time_cap: float = TIME_CAP,
            settings: SamplerSettings = POEM_SETTINGS, on_line: Callable[[int, PoemLine | None], None] | None = None,
            cancel=None, style: str = "", on_revise: Callable[[int, PoemLine | None], None] | None = None,
            revision: bool = True) -> Poem:
    """Write a poem of `form` about `topic`. `on_line(i, line)` reports each line as it is made
    (line None: line i was taken back to be rewritten). `time_cap` is shared out among the lines
    (see the module doc): the poem can take longer, but never comes back short. Then, with
    `revision` (the token path only), a complete poem's lines left with a flaw are revised
    (revise.py; a poem with a line missing is left for the reader to rewrite that line) within
    REVISE_SHARE more of the time: `on_revise(i, None)` says line i is being written again,
    `on_revise(i, line)` that `line` replaces it."""
    check_time_cap(time_cap)
    prepared = _prepare(generator)
    started = time.monotonic()
    deadline = started + time_cap
    prompt = poem_prompt(generator, form, topic, style)
    writer = _writer(generator, seed, prepared)
    gauge = writer.gauge = _gauge(generator, prepared, form, topic, style, prompt)
    poem = Poem(form, topic, style=style)
    finals: list[str | None] = []
    given_up: dict[int, frozenset[str]] = {}  # a group's first line -> rhyme keys its partners could not say
    tried: dict[int, list[tuple[tuple[str, ...], list[PoemLine]]]] = {}  # a line -> attempts given up on (_best_tried)
    i = 0
    while i < form.lines:
        if cancel is not None and cancel.is_set():
            break
        rule = rule_for(form, i, finals, avoid=given_up.get(i, frozenset()))
        done = [line for line in poem.lines if line.ok]
        avoid = frozenset(plain(line.text) for line in done)
        openings = frozenset(o for o in (opening(line.text) for line in done) if o)
        now = time.monotonic()
        line_deadline = now + max(MIN_LINE_S, (deadline - now) / (form.lines - i))
        partners = [j for j in form.partners(i) if finals[j]]
        may_redo = poem.rewrites < rewrite_budget(form, i) and now < deadline
        line = writer.best_line(line_context(prompt, form, poem.lines), form.templates(i), rule,
                                verifier(form, i, finals, openings), settings, line_deadline, cancel, poem,
                                avoid=avoid, judge=_judge(prompt, poem.lines, f"{topic} {style}"), openings=openings,
                                plan=_plan(prepared, form, i, rule, gauge), topical=i >= DRIFT_FROM,
                                more=extra_draws(i, rule, partners, may_redo), closing=form.closing(i),
                                repeats=_repeats(poem.lines, f"{topic} {style}"),
                                banned=said(poem.lines, frozenset(words_of(f"{topic} {style}"))))
        redo = _redo_from(form, i, rule, line, partners) if may_redo else None
        if redo is not None:
            # The best draw still ends on a forced word (or, late, leaves the topic): this rhyme has
            # no partner the model would say here (or, for a group's first line, it is no word the
            # model would say). Write the group's first line again on another rhyme (a few times per poem).
            keys = rule.keys if partners else frozenset(rhyme_keys(line.last_word or ""))
            given_up[redo] = given_up.get(redo, frozenset()) | keys
            tried.setdefault(i, []).append((_texts(poem.lines[:redo]), poem.lines[redo:] + [line]))
            poem.rewrites += 1
            i = _take_back(poem, finals, i, redo, on_line)
            continue
        if line is not None:
            if tried.get(i):  # the rewrites are spent: the group as it read best, this try or an earlier one
                line = _best_tried(poem, finals, i, line, tried.pop(i), on_line)
            poem.lines.append(line)
            finals.append(line.last_word)
            if on_line:
                on_line(i, line)
            i += 1
            continue
        if cancel is not None and cancel.is_set():
            break
        if given_up.pop(i, None):
            continue  # the rhymes given up on left this line none it could end on: better one of them
        if i > 0 and poem.backtracks < BACKTRACKS:
            # No line can end here (its rhyme word may have too few usable partners): go back to
            # the line that chose the rhyme, or else to the line before, and write again from there.
            poem.backtracks += 1
            i = _take_back(poem, finals, i, partners[0] if partners else i - 1, on_line)
            continue
        poem.lines.append(PoemLine("", False))  # reported as missing, never shipped broken
        finals.append(None)
        if on_line:
            on_line(i, poem.lines[-1])
        i += 1
    poem.seconds = time.monotonic() - started
    if revision and isinstance(prepared, Vocabulary) and not (cancel is not None and cancel.is_set()):
        from storyloom.modes.poetry import revise  # it builds on this module

        try:
            revise.revise(generator, prepared, writer, poem, prompt, gauge, settings,
                          revise.REVISE_SHARE * min(poem.seconds, time_cap), cancel, on_revise)
        except Exception:  # noqa: BLE001 - a revision is a second pass: the poem as it stands is kept
            # (revise replaces lines only with a whole trial it has read, so poem.lines is whole)
            log.exception("the revision pass failed; the poem is kept as it stands")
        poem.seconds = time.monotonic() - started
    return poem


def rewrite_line(generator, poem: Poem, index: int, seed: int | None = None, time_cap: float = 30.0,
                 settings: SamplerSettings = POEM_SETTINGS, cancel=None) -> PoemLine | None:
    """A new version of one line that still scans and rhymes with the rest (None if none was found)."""
    check_time_cap(time_cap)
    prepared = _prepare(generator)
    deadline = time.monotonic() + time_cap
    prompt = poem_prompt(generator, poem.form, poem.topic, poem.style)
    writer = _writer(generator, seed, prepared)
    writer.gauge = _gauge(generator, prepared, poem.form, poem.topic, poem.style, prompt)
    finals = [line.last_word if line.ok else None for line in poem.lines]
    rule = rule_for(poem.form, index, finals, later=False)
    others = [line for j, line in enumerate(poem.lines) if line.ok and j != index]
    avoid = frozenset(plain(line.text) for line in poem.lines if line.ok)  # the old version included
    openings = frozenset(o for o in (opening(line.text) for line in others) if o)
    return writer.best_line(line_context(prompt, poem.form, poem.lines[:index]), poem.form.templates(index), rule,
                            verifier(poem.form, index, finals, openings), settings, deadline, cancel, avoid=avoid,
                            judge=_judge(prompt, others, f"{poem.topic} {poem.style}"), openings=openings,
                            closing=poem.form.closing(index), repeats=_repeats(others, f"{poem.topic} {poem.style}"))

"""Issue 13: a sonnet's late lines keep to the topic. A late line kept is always read for its topic,
drawn or searched: pick counts a line not read as on the topic, so one never read had won over
read ones that strayed (seed 1's couplet), and compose's check of a partner that strays missed it."""
from __future__ import annotations

import math

import pytest

from storyloom.modes.poetry import compose as composer
from storyloom.modes.poetry.compose import poem_prompt
from storyloom.modes.poetry.constrain import RhymeRule, Vocabulary
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.plan import CONTRASTS, TopicGauge, contrasts_for
from tests.unit.test_poetry import SMALL

PENTAMETER = get_form("sonnet").templates(0)
OLD = RhymeRule(frozenset({"OW L D"}), frozenset({"old"}))


@pytest.fixture
def small(tiny):
    tiny._poetry_vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    yield tiny
    del tiny._poetry_vocab


def _writer(small, monkeypatch, reading: float):
    """A writer whose topic reading of every line is `reading`."""
    monkeypatch.setattr(TopicGauge, "line_topics", lambda self, lines, bar=None: [(reading, None)] * len(lines))
    writer = composer._TokenWriter(small, small._poetry_vocab, seed=3)
    prompt = poem_prompt(small, get_form("sonnet"), "the sea")
    writer.gauge = TopicGauge(small, small._poetry_vocab, prompt, poem_prompt(small, get_form("sonnet"), ""))
    return writer, prompt


def test_a_late_line_kept_is_read_for_its_topic_even_when_every_line_read_strays(small, monkeypatch):
    # every line read strays, and an unread line counted as on the topic: without reading the one
    # kept, one never read won (the tiny model's rhyme words read forced, so none was read early)
    writer, prompt = _writer(small, monkeypatch, -1.0)
    line = writer.best_line(prompt, PENTAMETER, OLD, lambda text: True, composer.POEM_SETTINGS, float("inf"), None,
                            topical=True)
    assert line is not None and line.line_topic == -1.0
    early = writer.best_line(prompt, PENTAMETER, OLD, lambda text: True, composer.POEM_SETTINGS, float("inf"), None)
    assert early is not None and early.line_topic is None, "an early line is not read"


def test_a_late_line_the_search_writes_is_read_for_its_topic(small, monkeypatch):
    writer, prompt = _writer(small, monkeypatch, -1.0)
    monkeypatch.setattr(writer, "_write", lambda *a, **k: None)  # no draw completes: the greedy search writes it
    monkeypatch.setattr(writer, "_write_rows", lambda *a, **k: [None] * a[-1])
    line = writer.best_line(prompt, PENTAMETER, OLD, lambda text: True, composer.POEM_SETTINGS, float("inf"), None,
                            topical=True)
    assert line is not None and line.searched and line.line_topic == -1.0


# -- read against other topics (plan.CONTRASTS) ----------------------------------------------
class _Headed:
    """A decoder whose per-token log-prob of a line depends only on its heading and the line
    (score_rows: every line in one batch, as the engine's decoders do)."""

    def __init__(self, table: dict[tuple[int, ...], float]):
        self.table, self.read = table, []

    def mark(self):
        return 0

    def rewind(self, mark):
        pass

    def score_rows(self, rows):
        self.read += [tuple(r) for r in rows]
        return [[self.table[tuple(r)]] * len(r) for r in rows]


class _Generator:
    """Opens a _Headed decoder per heading text (open_decoder asks generator.constrained_decoder)."""

    def __init__(self, tables: dict[str, dict[tuple[int, ...], float]]):
        self.tables, self.opened = tables, []

    def constrained_decoder(self, text, seed):
        self.opened.append(text)
        self.decs = getattr(self, "decs", {})
        self.decs[text] = _Headed(self.tables[text])
        return self.decs[text]


GENERIC, ON_TOPIC = (1, 2, 3), (4, 5)  # "It stands alone, as the world falls"; a line about the moon


def _gauge(contrasts: list[str]) -> TopicGauge:
    # the ballad seed 7 case: the generic line gains 0.41 on the heading with no topic, loses 0.28 to
    # another topic's heading; the line about the topic gains on every heading
    gen = _Generator({"moon": {GENERIC: -1.0, ON_TOPIC: -1.0}, "neutral": {GENERIC: -1.41, ON_TOPIC: -2.0},
                      "war": {GENERIC: -0.72, ON_TOPIC: -1.6}, "a child": {GENERIC: -1.1, ON_TOPIC: -1.5}})
    return TopicGauge(gen, None, "moon", "neutral", contrasts)


def test_a_generic_line_that_gains_on_the_neutral_heading_loses_to_another_topic():
    alone = _gauge([]).line_topics([list(GENERIC), list(ON_TOPIC)])
    assert alone == [(pytest.approx(0.41), None), (pytest.approx(1.0), None)], "no contrast: the neutral heading only"
    gauge = _gauge(["war", "a child"])
    read = gauge.line_topics([list(GENERIC), list(ON_TOPIC)])
    assert read == [pytest.approx((0.41, -0.28)), pytest.approx((1.0, 0.5))], "and the least gain over the contrasts"
    assert gauge.generator.opened == ["moon", "neutral", "war", "a child"], "one decoder per heading"
    for (gain, contrast), kept in zip(read, (False, True)):
        line = composer.PoemLine("x", True, line_topic=gain, line_contrast=contrast)
        assert composer.grade(line)[2] is kept
        assert composer.grade(composer.PoemLine("x", True, line_topic=gain)), "not read against them: neutral only"


def test_the_contrasts_read_only_lines_the_neutral_heading_passes():
    gauge = _gauge(["war", "a child"])
    read = gauge.line_topics([list(GENERIC), list(ON_TOPIC)], bar=0.5)  # the generic line gains 0.41 only
    assert read == [(pytest.approx(0.41), None), pytest.approx((1.0, 0.5))]
    assert gauge.generator.decs["war"].read == [ON_TOPIC] and gauge.generator.decs["neutral"].read == [GENERIC, ON_TOPIC]
    assert gauge.line_topics([list(GENERIC)], bar=0.5) == [(pytest.approx(0.41), None)]
    assert gauge.generator.decs["war"].read == [ON_TOPIC], "none passing: no contrast forward at all"


def test_contrasts_that_share_a_content_word_with_the_topic_are_skipped():
    assert contrasts_for("the sea") == list(CONTRASTS)
    assert "a child" not in contrasts_for("a child's toys") and "a child" not in contrasts_for("Children")
    assert "the mountains" not in contrasts_for("a mountain stream")
    assert "war" in contrasts_for("warmth"), "a short word only as itself"
    assert not set(CONTRASTS) & set(bench_topics()), "compose never reads against the bench's own topics"


def bench_topics():
    from storyloom.modes.poetry.bench import TOPICS

    return TOPICS


def test_compose_reads_late_lines_against_the_contrasts_on_the_model(small):
    # the engine's decoders: the gauge compose builds reads each line's least gain over its contrasts
    form = get_form("sonnet")
    prompt = poem_prompt(small, form, "the sea")
    gauge = composer._gauge(small, small._poetry_vocab, form, "the sea", "", prompt)
    assert gauge.contrasts == [poem_prompt(small, form, c) for c in CONTRASTS]
    lines = [small.tokenizer("The cold sea is gray", add_special_tokens=False)["input_ids"],
             small.tokenizer("And all the day was long", add_special_tokens=False)["input_ids"]]
    each = [TopicGauge(small, small._poetry_vocab, prompt, gauge.neutral, [c]).line_topics(lines)
            for c in gauge.contrasts]
    both = gauge.line_topics(lines)
    assert [c for _, c in both] == pytest.approx([min(c for _, c in col) for col in zip(*each)], abs=1e-5)
    assert [g for g, _ in both] == pytest.approx([g for g, _ in each[0]], abs=1e-5), "the neutral reading as before"
    untopical = composer._gauge(small, small._poetry_vocab, form, "", "", prompt)
    assert untopical.line_topics(lines) == [(float("inf"), None)] * 2


@pytest.mark.parametrize("reading, astray", [(-1.0, True), (1.0, False)])
def test_a_late_line_with_no_line_on_the_topic_draws_topic_draws_more(small, monkeypatch, reading, astray):
    # most late lines kept astray were the only line read that said its rhyme: while none read is on
    # the topic, a late line draws TOPIC_DRAWS past LINE_TRIES; once one is, LINE_TRIES is the most
    monkeypatch.setattr(composer, "FORCED_FLOOR", -math.inf)  # the tiny model's rhyme words all read forced
    writer, prompt = _writer(small, monkeypatch, reading)
    poem = composer.Poem(get_form("sonnet"), "the sea")
    line = writer.best_line(prompt, PENTAMETER, OLD, lambda text: True, composer.POEM_SETTINGS, float("inf"), None,
                            poem, topical=True)
    assert line is not None and line.line_topic == reading
    if astray:
        assert poem.line_tries == composer.LINE_TRIES + composer.TOPIC_DRAWS
    else:
        assert poem.line_tries <= composer.LINE_TRIES
    early = composer.Poem(get_form("sonnet"), "the sea")
    writer.best_line(prompt, PENTAMETER, OLD, lambda text: True, composer.POEM_SETTINGS, float("inf"), None, early)
    assert early.line_tries <= composer.LINE_TRIES, "an early line is not read, and draws no more for it"

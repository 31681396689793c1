"""Issue 13: a sonnet's late lines keep to the topic. A late line kept is always read for its topic,
drawn or searched: pick counts a line not read as on the topic, so one never read had won over
read ones that strayed (seed 1's couplet), and compose's check of a partner that strays missed it."""
from __future__ import annotations

import math

import pytest

from storyloom.modes.poetry import compose as composer
from storyloom.modes.poetry.compose import poem_prompt
from storyloom.modes.poetry.constrain import RhymeRule
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.plan import TopicGauge

PENTAMETER = get_form("sonnet").templates(0)
OLD = RhymeRule(frozenset({"OW L D"}), frozenset({"old"}))


def _writer(small, monkeypatch, reading: float):
    """A writer whose topic reading of every line is `reading`."""
    monkeypatch.setattr(TopicGauge, "line_topics", lambda self, lines: [reading] * len(lines))
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

"""Issue 13, sonnets a reader would keep: a late line is read for its topic against a heading with
another topic too (contrast_topic), not only against one with none: a line that other topic makes as
likely says nothing of its own ("A time to hold on and let go be dear", autumn: +0.32 against the
neutral heading, -0.07 against a lost key's; the bench counted it as drift)."""
from __future__ import annotations

import pytest

from storyloom.modes.poetry import compose as composer
from storyloom.modes.poetry.bench import TOPICS
from storyloom.modes.poetry.compose import contrast_topic, poem_prompt
from storyloom.modes.poetry.constrain import Vocabulary
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.plan import TopicGauge
from storyloom.modes.poetry.prosody import words_of
from tests.unit.test_poetry import SMALL

SONNET = get_form("sonnet")


@pytest.fixture
def small(tiny):
    tiny._poetry_vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    yield tiny
    del tiny._poetry_vocab


@pytest.mark.parametrize("topic", TOPICS + ["a storm at sea", "the mountains", "an old friend's letter"])
def test_the_contrast_is_another_topic_the_same_each_time(topic):
    other = contrast_topic(topic)
    assert other == contrast_topic(topic) and other in composer.CONTRAST_TOPICS and other not in TOPICS
    assert not (set(words_of(topic)) - composer.FUNCTION_WORDS) & set(words_of(other)), (topic, other)


def test_a_line_is_read_against_the_least_favourable_of_the_neutral_heading_and_the_contrast(small):
    vocab = small._poetry_vocab
    heading, neutral = poem_prompt(small, SONNET, "the sea"), poem_prompt(small, SONNET, "")
    contrast = poem_prompt(small, SONNET, contrast_topic("the sea"))
    lines = [small.tokenizer(t, add_special_tokens=False)["input_ids"]
             for t in ("The waves are high and all the sky is blue", "A time to hold on and let go be dear")]
    alone = TopicGauge(small, vocab, heading, neutral).line_topics(lines)
    against = TopicGauge(small, vocab, heading, contrast).line_topics(lines)
    both = TopicGauge(small, vocab, heading, neutral, (contrast,)).line_topics(lines)
    assert both == pytest.approx([min(a, b) for a, b in zip(alone, against)])
    assert alone != pytest.approx(against), "the two headings read differently"
    assert TopicGauge(small, vocab, heading, None, (contrast,)).line_topics(lines) == [float("inf")] * 2


def test_compose_reads_late_lines_against_its_topics_contrast(small):
    prompt = poem_prompt(small, SONNET, "the sea")
    gauge = composer._gauge(small, small._poetry_vocab, SONNET, "the sea", "", prompt)
    assert gauge.neutral == poem_prompt(small, SONNET, "")
    assert gauge.contrasts == (poem_prompt(small, SONNET, contrast_topic("the sea")),)
    assert composer._gauge(small, small._poetry_vocab, SONNET, " ", "", prompt).neutral is None  # no topic

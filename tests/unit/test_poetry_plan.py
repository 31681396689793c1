"""Rhyme words planned before their lines (issue 13, third round): the planner's candidates rhyme
on a stressed syllable and fit the meter's end, a planned line ends on a planned word and says it
only there, and the line's forced-ness is measured on its last word alone."""
from __future__ import annotations

import random

import pytest

from storyloom.modes.poetry import compose as composer
from storyloom.modes.poetry import prosody
from storyloom.modes.poetry.compose import _TokenWriter
from storyloom.modes.poetry.constrain import LineConstraint, RhymeRule, Vocabulary
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.plan import RhymePlan, TopicGauge, candidates, closes
from storyloom.modes.poetry.scan import scan_line
from tests.unit.test_poetry import SMALL

PENTAMETER = get_form("sonnet").templates(0)  # "0101010101" and the feminine "01010101010"
FEMININE_ONLY = ("01010101010",)
DAY = RhymeRule(frozenset(prosody.rhyme_keys("day")), frozenset({"day"}))


@pytest.fixture(scope="module")
def vocab(tiny):
    return Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)


def test_a_rhyme_word_must_close_the_line_on_a_stressed_place_with_room_before_it():
    assert closes("x", PENTAMETER) and closes("01", PENTAMETER) and closes("10", PENTAMETER)
    assert not closes("x", FEMININE_ONLY), "a one-syllable word in the extra weak place is tacked on"
    assert closes("10", FEMININE_ONLY) and not closes("01", FEMININE_ONLY)
    assert not closes("0101010101", PENTAMETER), "no room left for a word before it"


def test_candidates_rhyme_on_a_stressed_syllable_and_fit_the_meter(vocab):
    found = candidates(vocab, PENTAMETER, DAY)
    assert {"away", "way", "stay"} <= set(found)
    assert "day" not in found and "today" not in found, "the partner itself, and its echo"
    assert all(prosody.rhymes("day", w) for w in found)
    assert candidates(vocab, FEMININE_ONLY, DAY) == [], "no word rhyming with day ends on a weak syllable"
    enders = candidates(vocab, FEMININE_ONLY, RhymeRule())
    assert enders and all(any(closes(s.pattern, FEMININE_ONLY) for s in vocab.sounds[w]) for w in enders)
    assert "water" in enders and "sea" not in enders


def test_a_group_opener_is_planned_only_from_words_with_enough_partners(vocab):
    rule = RhymeRule(partners=3)
    found = candidates(vocab, PENTAMETER, rule)
    assert found
    for word in found:
        assert any(len(vocab.by_key[s.rhyme]) > 3 for s in vocab.sounds[word]), word


def test_a_planned_line_ends_on_a_planned_word_and_says_it_only_there(vocab):
    rule = DAY.planned(["away", "stay"])
    assert rule.words == {"away", "stay"} and rule.keys == frozenset(prosody.rhyme_keys("day"))
    rng = random.Random(4)
    finished = 0
    for _ in range(25):
        line = LineConstraint(vocab, PENTAMETER, rule)
        tokens = []
        while not line.done:
            allowed = line.allowed()
            if not allowed:
                break  # a corner (the planned word said too early is one): the writer draws again
            token = rng.choice(allowed)
            line.advance(token)
            tokens.append(token)
        if not line.done:
            continue
        finished += 1
        text = vocab.tokenizer.decode(tokens).strip()
        words = prosody.words_of(text)
        assert words[-1] in rule.words and not set(words[:-1]) & rule.words, text
        assert scan_line(text, PENTAMETER).meter_ok, text
    assert finished >= 5


def test_the_writer_composes_toward_the_plan(tiny, vocab):
    tiny._poetry_vocab = vocab
    try:
        writer = _TokenWriter(tiny, vocab, seed=2)
        heading = "A sonnet about the sea.\n\n"
        gauge = TopicGauge(tiny, vocab, heading, "A sonnet about anything you like.\n\n")
        plan = RhymePlan(vocab, PENTAMETER, DAY, gauge)
        line = writer.best_line(heading, PENTAMETER, DAY, lambda text: True, composer.POEM_SETTINGS,
                                deadline=float("inf"), cancel=None, plan=plan)
        assert plan.chosen and set(plan.chosen) <= set(candidates(vocab, PENTAMETER, DAY))
        assert line is not None and line.last_word in plan.chosen, (line, plan.chosen)
        assert prosody.rhymes("day", line.last_word) and scan_line(line.text, PENTAMETER).meter_ok
    finally:
        del tiny._poetry_vocab


class _Scripted:
    """A ConstrainedDecoder whose every token has log-prob -1 (it takes the first allowed one)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.history = tokenizer, []

    def mark(self):
        return len(self.history)

    def rewind(self, mark):
        del self.history[mark:]

    def step(self, token):
        self.history.append(token)

    def sample(self, allowed, settings):
        return sorted(allowed)[0], -1.0

    def decode(self, ids):
        return self.tokenizer.decode(ids)


def test_the_forced_measure_is_the_last_word_alone(tiny, vocab):
    writer = _TokenWriter(tiny, vocab, seed=0)
    writer.dec = _Scripted(vocab.tokenizer)
    line = writer._write(PENTAMETER, DAY, composer.POEM_SETTINGS, None, None, steer=0)
    assert line is not None and len(prosody.words_of(line.text)) > 1
    assert line.final_logprob == -len(vocab.spell(line.last_word)), "the last word's tokens, not the whole clause"


def test_without_a_topic_nothing_is_gained_and_no_model_is_asked(vocab):
    gauge = TopicGauge(None, vocab, "A poem about anything you like.\n\n", None)
    assert gauge.gain(["sea", "day"]) == {"sea": 0.0, "day": 0.0}
    assert gauge.line_gain("The sea is cold today") == 0.0 and gauge.decs is None


def test_a_new_group_is_planned_on_a_sound_no_other_group_rhymes_on(vocab):
    rule = RhymeRule(partners=2, used=frozenset({"night", "day"}))  # ABAB: A ended on night, B opens now
    found = candidates(vocab, PENTAMETER, rule)
    assert found and not any(prosody.rhymes("night", w) or prosody.rhymes("day", w) for w in found)


@pytest.mark.parametrize("rule", [RhymeRule(), DAY, DAY.planned(["away", "stay"]), RhymeRule(partners=3),
                                  RhymeRule(partners=2, used=frozenset({"night", "sea"}))])
def test_the_mask_worked_out_per_pattern_is_the_mask_worked_out_per_word(vocab, rule):
    """The first tokens a line may take next, as the fast path (_starts, per stress pattern) finds
    them, are those _fits_somewhere allows child by child, all along random lines."""
    rng = random.Random(7)
    checked = 0
    for _ in range(6):
        line = LineConstraint(vocab, PENTAMETER, rule)
        while not line.done:
            if line.node is None or line.node.word:
                positions = line.positions if line.node is None else line._after(line.node.word, line.positions)
                root = vocab.start if line.at_start else vocab.mid
                slow = [tok for tok, child in root.children.items() if line._fits_somewhere(child, positions)]
                assert line._starts(root, positions) == slow
                checked += 1
            allowed = line.allowed()
            if not allowed:
                break
            line.advance(rng.choice(allowed))
    assert checked >= 10

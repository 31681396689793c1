"""Poetry: prosody, forms, the scanner, and constrained writing on a tiny random model."""
from __future__ import annotations

import random

import pytest

from storyloom import StoryloomError
from storyloom.modes.poetry import prosody
from storyloom.modes.poetry.compose import compose, rewrite_line, rule_for
from storyloom.modes.poetry.constrain import LineConstraint, RhymeRule, Vocabulary
from storyloom.modes.poetry.forms import custom_form, get_form, meter_templates, resolve_form
from storyloom.modes.poetry.scan import report, scan_line, scan_poem
from storyloom.paths import assets_dir

SMALL = """the a and of in on to is was with by my your his her we they i you all old cold gold bold told
sea free me be see tree day way say play stay gray night light bright sight white flight heart part art start
moon soon tune noon rain pain lane plain song long strong wind sky fly high why sun run one fun home foam
stone love dove fire time rhyme climb dream stream gleam cat hat sat river water morning evening silver
golden gentle mountain forest away again below before across beyond alone above upon today delight tonight
begin return along beautiful remember tomorrow together wonderful""".split()
PENTAMETER = get_form("sonnet").templates(0)


# -- prosody --------------------------------------------------------------------------------
def test_every_pronunciation_counts_and_one_syllable_words_go_anywhere():
    assert prosody.syllables("every") == {2, 3}
    assert prosody.syllables("fire") == {1, 2}
    assert {s.pattern for s in prosody.sounds("cat")} == {"x"}
    assert {s.pattern for s in prosody.sounds("beautiful")} == {"100"}
    assert "01" in {s.pattern for s in prosody.sounds("away")}


def test_rhyme_keys_merge_primary_and_secondary_stress_and_never_self_rhyme():
    assert prosody.rhymes("night", "light") and prosody.rhymes("ever", "never")
    assert prosody.rhymes("day", "away")
    assert not prosody.rhymes("night", "night")
    assert not prosody.rhymes("night", "day")
    assert prosody.rhyme_keys("sea") == {"IY"}


def test_unknown_words_elisions_and_hyphens():
    assert not prosody.known("zzxqv")
    assert prosody.syllables("o'er") == {1}
    assert prosody.syllables("deserv'd") == {2}
    assert prosody.syllables("mak'st") == {1}
    assert prosody.syllables("self-love") == {2}
    assert prosody.known("thou") and prosody.known("canst")


# -- forms ----------------------------------------------------------------------------------
def test_forms_are_data_with_the_documented_shapes():
    sonnet = get_form("sonnet")
    assert sonnet.lines == 14 and sonnet.letters == "ABABCDCDEFEFGG"
    assert sonnet.templates(0) == ("0101010101", "01010101010")  # with a feminine ending
    assert get_form("limerick").feet == (3, 3, 2, 2, 3)
    assert get_form("haiku").templates(1) == ("x" * 7,)
    assert meter_templates("anapestic", 2, False) == ("001001", "01001")
    assert get_form("ballad").partners(3) == [1] and get_form("ballad").partners(2) == []
    custom = resolve_form("custom", scheme="ABAB", meter="trochaic", feet=4)
    assert custom.lines == 4 and "10101010" in custom.templates(0)
    with pytest.raises(StoryloomError, match="scheme"):
        custom_form("AB1")
    with pytest.raises(StoryloomError, match="Unknown form"):
        get_form("villanelle")


# -- the scanner ----------------------------------------------------------------------------
@pytest.mark.parametrize("line", [
    "Shall I compare thee to a summer's day?",
    "And summer's lease hath all too short a date:",
    "To be, or not to be, that is the question:",  # feminine ending
    "When forty winters shall besiege thy brow,",
])
def test_known_good_pentameter_scans(line):
    assert scan_line(line, PENTAMETER).meter_ok


@pytest.mark.parametrize("line,why", [
    ("The cat sat on the mat.", "too short"),
    ("Beautiful is the morning on the sea and sky", "BEAU-ti-ful puts a stress on a weak position"),
    ("Remember the forest, remember the river today", "too long"),
])
def test_bad_lines_fail(line, why):
    assert not scan_line(line, PENTAMETER).meter_ok, why


def test_a_line_with_an_unknown_word_is_never_passed():
    verdict = scan_line("Shall I compare thee to a zzxqv day?", PENTAMETER)
    assert not verdict.meter_ok and verdict.unknown == ["zzxqv"]


def test_poem_report_counts_rhyme_pairs_and_identical_words_do_not_rhyme():
    limerick = get_form("limerick")
    good = ("There once was a man from the sea\nWho wanted to swim and be free.\nHe went for a dip\n"
            "And lost his big ship,\nAnd now he is happy as me.\n")
    verdict = scan_poem(good, limerick)
    assert verdict.ok and (verdict.rhyme_pairs, verdict.rhyme_pairs_ok) == (3, 3)
    lazy = good.replace("happy as me.", "happy at sea.")
    verdict = scan_poem(lazy, limerick)
    assert not verdict.ok and verdict.rhyme_pairs_ok == 2
    text = report(verdict, limerick)
    assert "does NOT rhyme with line 1" in text and text.endswith("FAIL")


def test_the_scanner_accepts_most_of_shakespeare():
    lines = [ln.strip() for ln in (assets_dir() / "shakespeare-sonnets.txt")
             .read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(lines) > 2000
    passing = sum(scan_line(line, PENTAMETER).meter_ok for line in lines)
    assert passing / len(lines) > 0.6  # 65.8% when written; most failures are words CMU lacks


# -- constraints on a tiny model -------------------------------------------------------------
@pytest.fixture(scope="module")
def small_vocab(tiny):
    vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    tiny._poetry_vocab = vocab
    yield vocab
    del tiny._poetry_vocab


def test_random_walks_through_the_mask_always_scan_and_rhyme(small_vocab):
    rng = random.Random(0)
    templates = PENTAMETER
    for rule in (RhymeRule(), RhymeRule(frozenset(prosody.rhyme_keys("day")), frozenset({"day"}))):
        for _ in range(30):
            line = LineConstraint(small_vocab, templates, rule)
            tokens = []
            while not line.done:
                allowed = line.allowed()
                assert allowed, f"dead end after {small_vocab.tokenizer.decode(tokens)!r}"
                token = rng.choice(allowed)
                if token == small_vocab.newline:
                    assert line.complete() or line.node is not None  # newline only when the line is whole
                line.advance(token)
                tokens.append(token)
            text = small_vocab.tokenizer.decode(tokens).strip()
            assert scan_line(text, templates).meter_ok, text
            if rule.keys:
                assert prosody.rhymes("day", prosody.words_of(text)[-1]), text


@pytest.mark.parametrize("form", ["couplets", "limerick", "haiku", "ballad"])
def test_every_line_the_tiny_model_writes_passes_the_scanner(tiny, small_vocab, form):
    shape = get_form(form)
    poem = compose(tiny, shape, "the sea", seed=3, time_cap=60)
    assert poem.complete, poem.text
    verdict = scan_poem(poem.text, shape)
    assert verdict.ok, report(verdict, shape)


def test_rewriting_one_line_keeps_the_form(tiny, small_vocab):
    shape = get_form("couplets")
    poem = compose(tiny, shape, "the moon", seed=5, time_cap=60)
    new = rewrite_line(tiny, poem, 1, seed=9)
    assert new is not None and new.ok
    poem.lines[1] = new
    assert scan_poem(poem.text, shape).ok
    assert rule_for(shape, 1, [line.last_word for line in poem.lines], later=False).banned == {poem.lines[0].last_word}


def test_models_that_cannot_be_steered_are_refused():
    from storyloom.engine.backends.scripted import ScriptedGenerator

    with pytest.raises(StoryloomError, match="local model"):
        compose(ScriptedGenerator(), get_form("haiku"), "x")

"""Poetry a reader would keep: the rhyme on a stressed syllable (so the extra weak syllable of a
feminine ending is the tail of a longer word, never a one-syllable word tacked on), no echo
rhymes (tale/tail, ever/forever), and clear errors for forms that cannot be written."""
from __future__ import annotations

import random

import pytest

from storyloom import StoryloomError
from storyloom.modes.poetry import prosody
from storyloom.modes.poetry.bench import READER_CHECKS, reader_checks
from storyloom.modes.poetry.compose import Poem, PoemLine, compose, rewrite_line, rule_for
from storyloom.modes.poetry.constrain import LineConstraint, Lexicon, RhymeRule, Vocabulary
from storyloom.modes.poetry.forms import get_form, resolve_form
from storyloom.modes.poetry.grammar import line_grammar
from storyloom.modes.poetry.scan import scan_line, scan_poem
from tests.unit.gbnf import Grammar
from tests.unit.test_poetry import SMALL

PENTAMETER = get_form("sonnet").templates(0)  # with the feminine ending
NONE = dict.fromkeys(READER_CHECKS, 0)


# -- the rhyme on a stressed syllable -----------------------------------------------------------
@pytest.mark.parametrize("line", [
    "To be, or not to be, that is the question:",  # QUES-tion: its weak tail is the extra syllable
    "A woman's face with nature's own hand painted",
    "Shall I compare thee to a summer's day?",
])
def test_feminine_endings_on_the_tail_of_a_longer_word_scan(line):
    assert scan_line(line, PENTAMETER).meter_ok


@pytest.mark.parametrize("line", [
    "Shifts but his place, for still the world enjoys it;",  # "it" tacked on as the extra syllable
    "And kept unused the user so destroys it.",
    "The golden river sat along the sea wind",
])
def test_a_one_syllable_word_tacked_on_as_the_extra_syllable_does_not_scan(line):
    assert not scan_line(line, PENTAMETER).meter_ok
    assert scan_line(line, PENTAMETER, stressed_rhyme=False).meter_ok  # it did before


def test_the_rhyme_falls_where_the_line_stresses_in_every_meter():
    trochaic = resolve_form("custom", scheme="AA", meter="trochaic", feet=4).templates(0)
    assert scan_line("Tiger, tiger, burning bright", trochaic).meter_ok  # catalectic: ends on a stress
    assert scan_line("Double, double toil and trouble", trochaic).meter_ok  # TROU-ble
    assert not scan_line("Double, double toil and the sea", trochaic).meter_ok  # "sea" on the weak last place
    assert prosody.ends_line("10", "0110", 2) and not prosody.ends_line("x", "0110", 3)
    assert not prosody.ends_line("1x", "0110", 2), "BIRTH-day's secondary stress would carry the rhyme unstressed"


def test_random_walks_through_the_mask_never_tack_a_word_on(tiny):
    vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    rng = random.Random(1)
    for _ in range(40):
        line = LineConstraint(vocab, PENTAMETER, RhymeRule())
        tokens = []
        while not line.done:
            token = rng.choice(line.allowed())
            line.advance(token)
            tokens.append(token)
        text = tiny.tokenizer.decode(tokens).strip()
        assert scan_line(text, PENTAMETER).meter_ok, text
        if all(len(s.pattern) == 1 for s in prosody.sounds(prosody.words_of(text)[-1])):
            # a one-syllable rhyme word takes the last strong place, never the extra weak one
            assert scan_line(text, ("0101010101",)).meter_ok, text


def test_grammar_lines_never_tack_a_word_on():
    lex = Lexicon(SMALL)
    grammar = Grammar(line_grammar(lex, PENTAMETER, RhymeRule()))
    assert grammar.accepts("The golden river sat along the sea\n")
    assert not grammar.accepts("The golden river sat along the sea wind\n")  # "wind" on the extra syllable
    assert grammar.accepts("The river sat along the silver morning\n")  # MOR-ning: its tail is the extra one
    rng = random.Random(2)
    for _ in range(200):
        text = grammar.sample(rng).strip()
        assert scan_line(text, PENTAMETER).meter_ok, text


# -- echoes are not rhymes ------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [("tale", "tail"), ("ever", "forever"), ("day", "today"), ("night", "midnight"),
                                 ("sea", "see"), ("lone", "alone"), ("i", "eye")])
def test_homophones_and_one_word_inside_the_other_do_not_rhyme(a, b):
    assert prosody.echoes(a, b) and not prosody.rhymes(a, b) and not prosody.rhymes(b, a)


@pytest.mark.parametrize("a,b", [("ever", "never"), ("day", "away"), ("begin", "gin"), ("moon", "soon"),
                                 ("stale", "tale")])
def test_true_rhymes_that_look_alike_still_rhyme(a, b):
    assert prosody.rhymes(a, b), "the rest is no word (n-ever, s-tale), or the sound differs (be-GIN, JIN)"


def test_the_scanner_refuses_an_echo_rhyme():
    couplets = get_form("couplets")
    text = ("The winter wind was cold upon the tail\nAnd every child remembered every tale\n"
            "The winter wind was cold upon the tail\nAnd every child remembered every tale\n"
            "The winter wind was cold upon the tail\nAnd every child remembered every tale\n")
    verdict = scan_poem(text, couplets)
    assert all(v.meter_ok for v in verdict.lines) and verdict.rhyme_pairs_ok == 0


def test_the_generator_never_ends_on_an_echo_of_its_partner():
    lex = Lexicon(SMALL + ["tail", "tale", "sail", "mail", "pale"])
    rule = RhymeRule(frozenset(prosody.rhyme_keys("tail")), frozenset({"tail"}))
    assert lex.final_ok(RhymeRule(), "tale", "EY L")
    assert lex.final_ok(rule, "mail", "EY L") and not lex.final_ok(rule, "tale", "EY L")
    grammar = Grammar(line_grammar(lex, ("0101",), rule))
    assert grammar.accepts("The river mail\n") and not grammar.accepts("The river tale\n")


def test_the_bench_counts_what_a_reader_would_not_keep():
    limerick = get_form("limerick")
    # as the generator wrote it before: every line's rhyme word tacked on as the extra weak syllable
    old = ["In the depths of the blue, where did the sea", "Not in the sun no more, nor on land free?",
           "The ocean is not one.", "A creature born from none.", "That would be me: a giant man with three."]
    checks = reader_checks(Poem(limerick, "the sea", [PoemLine(t, True) for t in old]))
    assert checks == {**NONE, "rhymes_on_weak_syllables": 5}
    echo = ["There once was a man from the sea", "Who wanted to swim and to see", "He went for a dip",
            "And lost his big ship", "And now he is happy as me"]
    assert reader_checks(Poem(limerick, "x", [PoemLine(t, True) for t in echo]))["echo_rhymes"] == 1
    ballad = get_form("ballad")  # ABCB DEFE: line 5 (D) ends on line 1's word
    again = ["The river ran beside the hill", "And every child was free", "The morning sun was bright and warm",
             "And golden was the sea", "The river ran beside the hill", "And every child was me",
             "The evening sun was low and gold", "And silver was the tree"]
    assert reader_checks(Poem(ballad, "x", [PoemLine(t, True) for t in again]))["repeated_line_ends"] == 1


@pytest.mark.parametrize("form", ["couplets", "limerick"])
def test_poems_the_tiny_model_writes_pass_the_reader_checks(tiny, form):
    vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    tiny._poetry_vocab = vocab
    try:
        poem = compose(tiny, get_form(form), "the sea", seed=3, time_cap=60)
    finally:
        del tiny._poetry_vocab
    assert poem.complete and scan_poem(poem.text, poem.form).ok
    assert reader_checks(poem) == NONE


def test_no_line_ends_on_a_word_another_line_already_ends_on():
    ballad = get_form("ballad")
    finals = ["hill", "free", "warm", "sea", None]
    rule = rule_for(ballad, 4, finals)  # line 5 opens group D
    assert rule.used == {"hill", "free", "warm", "sea"}
    lex = Lexicon(SMALL + ["hill", "still", "warm", "until", "will"])
    assert not lex.final_ok(rule, "hill", "IH L") and lex.final_ok(rule, "still", "IH L")
    assert rule_for(ballad, 3, finals).banned == {"free"} and "sea" not in rule_for(ballad, 3, finals).used


# -- clear errors ---------------------------------------------------------------------------------
def test_zero_feet_is_refused_not_replaced_by_the_default():
    with pytest.raises(StoryloomError, match="Feet must be between 1 and 8"):
        resolve_form("custom", scheme="AABB", meter="iambic", feet=0)


@pytest.mark.parametrize("meter,feet", [("trochaic", None), (None, 4), ("anapestic", 3)])
def test_a_named_form_in_another_meter_is_refused_with_the_way_to_make_one(meter, feet):
    with pytest.raises(StoryloomError) as err:
        resolve_form("sonnet", None, meter, feet)
    message = str(err.value)
    assert "iambic pentameter" in message and "--form custom --scheme ABABCDCDEFEFGG" in message
    assert resolve_form("sonnet", None, "iambic", 5).key == "sonnet"  # saying what it is already is fine


@pytest.mark.parametrize("cap", [0, -5, float("nan"), float("inf")])
def test_a_time_cap_of_zero_is_refused(cap):
    from tests.unit.test_poetry_grammar import GrammarSampler

    with pytest.raises(StoryloomError, match="time cap must be more than 0 seconds"):
        compose(GrammarSampler(), get_form("haiku"), "x", time_cap=cap)
    poem = compose(GrammarSampler(), get_form("haiku"), "x", seed=1, time_cap=30)
    with pytest.raises(StoryloomError, match="time cap"):
        rewrite_line(GrammarSampler(), poem, 0, time_cap=cap)


@pytest.mark.parametrize("form", ["sonnet", "custom"])
def test_zero_or_negative_feet_is_named_before_anything_else(form):
    for feet in (0, -2, 9):
        with pytest.raises(StoryloomError, match=rf"Feet must be between 1 and 8 \(got {feet}\)"):
            resolve_form(form, "ABAB" if form == "custom" else None, None, feet)

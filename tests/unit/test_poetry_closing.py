"""A poem's last line ends its sentence: seven of twenty sonnets had ended mid-thought ("Is strong
enough to hold on to me till"). The token mask, the grammar and the verifier each hold the last
line to . ! or ? (a haiku aside), and the bench counts a poem that breaks off."""
from __future__ import annotations

import random

import pytest

from storyloom.modes.poetry.bench import reader_checks
from storyloom.modes.poetry.compose import Poem, PoemLine, compose, verifier
from storyloom.modes.poetry.constrain import END_PUNCTUATION, Lexicon, LineConstraint, RhymeRule, Vocabulary
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.grammar import line_grammar
from storyloom.modes.poetry.scan import scan_line, scan_poem
from tests.unit.gbnf import Grammar
from tests.unit.test_poetry import SMALL
from tests.unit.test_poetry_grammar import GrammarSampler

PENTAMETER = get_form("sonnet").templates(0)


def _walks(vocab, closing: bool, n: int = 40) -> list[str]:
    rng, out = random.Random(2), []
    for _ in range(n):
        line = LineConstraint(vocab, PENTAMETER, RhymeRule(), closing=closing)
        tokens = []
        while not line.done:
            token = rng.choice(line.allowed())
            line.advance(token)
            tokens.append(token)
        out.append(vocab_text(vocab, tokens))
    return out


def vocab_text(vocab, tokens) -> str:
    return vocab.tokenizer.decode(tokens).strip()


def test_the_mask_ends_a_closing_line_on_its_sentence_end(tiny):
    vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    closing = _walks(vocab, closing=True)
    assert all(text.endswith(END_PUNCTUATION) and scan_line(text, PENTAMETER).meter_ok for text in closing), closing
    # any other line may end bare (a sentence may run on into the next line)
    assert any(not text.endswith(END_PUNCTUATION) for text in _walks(vocab, closing=False))


def test_a_closing_lines_grammar_refuses_a_line_that_breaks_off():
    lex = Lexicon(SMALL)
    closing = Grammar(line_grammar(lex, PENTAMETER, RhymeRule(), closing=True))
    assert closing.accepts("The golden river sat along the sea.\n")
    assert closing.accepts("The golden river sat along the sea!\n")
    assert not closing.accepts("The golden river sat along the sea\n")
    assert Grammar(line_grammar(lex, PENTAMETER, RhymeRule())).accepts("The golden river sat along the sea\n")


def test_the_verifier_holds_only_the_last_line_to_a_sentence_end():
    couplets = get_form("couplets")
    last = couplets.lines - 1
    finals = [None] * couplets.lines
    assert not verifier(couplets, last, finals)("The golden river sat along the sea")
    assert verifier(couplets, last, finals)("The golden river sat along the sea.")
    assert verifier(couplets, 0, finals)("The golden river sat along the sea")


def test_a_haikus_image_need_not_be_a_sentence():
    haiku = get_form("haiku")
    assert not haiku.ends_sentence and get_form("sonnet").ends_sentence
    assert verifier(haiku, haiku.lines - 1, [None] * haiku.lines)("Echoes of the past")
    lines = ["The waves of the sea", "A reflection of the soul", "Lying at the edge"]
    assert reader_checks(Poem(haiku, "x", [PoemLine(t, True) for t in lines]))["open_endings"] == 0


@pytest.mark.parametrize("form", ["couplets", "limerick", "ballad"])
def test_poems_written_through_grammars_end_their_last_sentence(form):
    shape = get_form(form)
    for seed in (1, 2, 3):
        poem = compose(GrammarSampler(seed), shape, "the sea", seed=seed, time_cap=60)
        assert poem.complete and scan_poem(poem.text, shape).ok, poem.text
        assert poem.lines[-1].text.endswith(END_PUNCTUATION), poem.text


def test_the_bench_counts_a_poem_that_breaks_off():
    couplets = get_form("couplets")
    lines = ["The golden river sat along the sea", "And every child was running to be free"] * (couplets.lines // 2)
    assert reader_checks(Poem(couplets, "x", [PoemLine(t, True) for t in lines]))["open_endings"] == 1
    lines[-1] += "."
    assert reader_checks(Poem(couplets, "x", [PoemLine(t, True) for t in lines]))["open_endings"] == 0


def test_words_that_leave_a_line_hanging_never_end_one():
    from storyloom.modes.poetry.constrain import NOT_LINE_ENDS

    lex = Lexicon(SMALL + ["till", "yet", "none", "hill", "still", "set", "sun"])
    assert {"till", "yet", "none"} <= set(lex.sounds) and not (NOT_LINE_ENDS & lex.enders)
    assert {"hill", "still", "set", "sun"} <= lex.enders
    grammar = Grammar(line_grammar(lex, PENTAMETER, RhymeRule()))
    assert not grammar.accepts("The golden river sat along the till\n")
    assert grammar.accepts("The golden river till the sea was still\n")  # inside a line it may stand

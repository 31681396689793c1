"""Poetry on engines that follow a grammar but cannot be steered token by token: the GBNF
compiler's language (every string scans and rhymes), the writing loop over such an engine, and,
with llama-cpp-python installed, llama.cpp's own parser and a real constrained limerick."""
from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace

import pytest

from storyloom import StoryloomError
from storyloom.engine.generate import Capabilities
from storyloom.modes.poetry import prosody
from storyloom.modes.poetry.compose import WINDOW, compose, line_context, poem_prompt, rewrite_line
from storyloom.modes.poetry.constrain import END_PUNCTUATION, MIN_PARTNERS, Lexicon, RhymeRule, default_lexicon
from storyloom.modes.poetry.forms import get_form, load_forms
from storyloom.modes.poetry.grammar import line_grammar
from storyloom.modes.poetry.scan import last_word, report, scan_line, scan_poem
from tests.unit.gbnf import Grammar
from tests.unit.test_poetry import SMALL

PENTAMETER = get_form("sonnet").templates(0)
DAY = RhymeRule(frozenset(prosody.rhyme_keys("day")), frozenset({"day"}))


@pytest.fixture(scope="module")
def small() -> Lexicon:
    return Lexicon(SMALL)


def _draws(grammar: str, n: int, seed: int = 0) -> list[str]:
    g, rng = Grammar(grammar), random.Random(seed)
    out = []
    for _ in range(n):
        text = g.sample(rng)
        assert text.endswith("\n") and text.count("\n") == 1, repr(text)
        out.append(text[:-1])
    return out


# -- the compiler -----------------------------------------------------------------------------
@pytest.mark.parametrize("form,line", [("sonnet", 0), ("limerick", 0), ("limerick", 2), ("haiku", 1),
                                       ("ballad", 1), ("couplets", 0)])
@pytest.mark.parametrize("rule", [RhymeRule(), DAY, RhymeRule(partners=2)], ids=["free", "day", "opening"])
def test_every_string_of_a_line_grammar_scans_and_ends_on_an_allowed_rhyme(small, form, line, rule):
    templates = get_form(form).templates(line)
    grammar = line_grammar(small, templates, rule)
    assert grammar is not None
    for text in _draws(grammar, 150):
        assert scan_line(text, templates).meter_ok, text
        words = prosody.words_of(text)
        assert text[0].isupper() and all(c.islower() or c in " ,;:.!?'" for c in text[1:].replace("I", "i")), text
        assert not any(p in text[:-1] for p in END_PUNCTUATION), f"a sentence ends mid-line: {text}"
        final = words[-1]
        assert final in small.enders and final not in rule.banned, text
        if rule.keys:
            assert prosody.rhymes("day", final), text
        if rule.partners:
            assert any(len(small.by_key.get(k, ())) > rule.partners for k in prosody.rhyme_keys(final)), text


def test_the_grammar_accepts_good_lines_and_refuses_bad_ones(small):
    g = Grammar(line_grammar(small, PENTAMETER, DAY))
    assert g.accepts("The golden river sat along the way.\n")
    assert g.accepts("The silver moon, upon the river way\n")  # a comma mid-line
    assert not g.accepts("The silver moon, upon the sea today\n"), "to-day is day over again"
    assert not g.accepts("the golden river sat along the way.\n"), "the first word is capitalised"
    assert not g.accepts("The golden river sat along the day.\n"), "the partner's own word"
    assert not g.accepts("The golden river sat along the night.\n"), "night does not rhyme with day"
    assert not g.accepts("Beautiful river sat along the way.\n"), "BEAU-ti-ful puts a stress on a weak place"
    assert not g.accepts("The golden river. sat along the way\n"), "a sentence never ends mid-line"
    assert not g.accepts("The silver moon, upon the sea, away\n"), "no comma just before the last words"
    assert not g.accepts("The river sat along the way.\n"), "too short"
    assert not g.accepts("The golden river sat along the way\n\n"), "one line"


def test_every_pronunciation_counts_in_the_grammar():
    lex = Lexicon(["every", "the", "sea"])  # EV-ry (10) and EV-er-y (100)
    for syllables in (5, 6, 7):
        assert Grammar(line_grammar(lex, ("x" * syllables,), RhymeRule())).accepts("Every every sea\n"), syllables
    assert not Grammar(line_grammar(lex, ("xxxx",), RhymeRule())).accepts("Every every sea\n")


def test_the_rhyme_is_checked_per_pronunciation():
    # pre-SENT (01) rhymes with sent; PRE-sent (10) does not: the last word must rhyme as it is stressed
    lex = Lexicon(["present", "the", "sent", "went"])
    sent = RhymeRule(frozenset(prosody.rhyme_keys("sent")), frozenset({"sent"}))
    assert Grammar(line_grammar(lex, ("x01",), sent)).accepts("The present\n")
    # PRE-sent does not rhyme; "Present went" would put the rhyme on the weak last syllable
    assert line_grammar(lex, ("x10",), sent) is None
    assert Grammar(line_grammar(lex, ("x10",), RhymeRule())).accepts("The present\n")


def test_a_line_no_word_can_end_has_no_grammar(small):
    nothing = RhymeRule(frozenset({"ZH OW Z"}))
    assert line_grammar(small, PENTAMETER, nothing) is None


def test_word_groups_are_shared_so_the_grammar_grows_with_places_not_words():
    lex = default_lexicon()
    sonnet = line_grammar(lex, PENTAMETER, DAY)
    trimeter = line_grammar(lex, get_form("limerick").templates(2), DAY)
    rules = {line.split(" ::= ")[0]: line for line in sonnet.splitlines()}
    assert "w-10" in rules and "w-01" in rules  # one rule per stretch of meter a word may cover
    assert "w-0" in rules and "w-1" not in rules  # one-syllable words fit weak and strong alike: one rule
    # each place names groups, never words: no place rule holds a literal
    places = [line for name, line in rules.items() if name.startswith(("at-", "line-"))]
    assert places and all('"' not in line for line in places)
    assert max(line.count("|") + 1 for line in places) <= 10  # a few ways on from each place
    # a group's words are written once, the same text in every grammar that uses it
    assert rules["w-0-t"] in trimeter.splitlines()
    assert len(sonnet.encode()) < 300_000


def test_the_grammar_path_leaves_out_names_as_the_local_decoder_does():
    lex = default_lexicon()
    assert {"rome", "jake", "june"} & set(lex.sounds) == set()
    assert {"sea", "morning", "beautiful", "remember"} <= set(lex.sounds)


def test_quotes_and_backslashes_in_words_are_escaped():
    lex = Lexicon(["o'er", "the", "sea"])
    lex.sounds['say"'] = prosody.sounds("say")  # a crafted word no dictionary has
    lex.enders.add('say"')
    g = Grammar(line_grammar(lex, ("xxx",), RhymeRule()))
    assert g.accepts('The sea say"\n') and g.accepts("O'er the sea\n")


# -- writing a poem through a grammar ----------------------------------------------------------
class GrammarSampler:
    """An engine that follows a GBNF grammar (drawing from it at random) and nothing else: what a
    llama.cpp server offers, without a model. `wrong` lines are sent instead, ignoring the grammar."""

    capabilities = Capabilities(stream=False, grammar="gbnf", scoring=False, token_steering=False)

    def __init__(self, seed: int = 0, wrong: list[str] | None = None):
        from storyloom.engine.generate import ModelInfo

        self.info = ModelInfo(name="grammar-sampler", backend="test")
        self.name = self.info.name
        self.rng = random.Random(seed)
        self.wrong = list(wrong or [])
        self.requests: list[tuple[str, str]] = []

    def generate(self, prompt, settings, cancel=None, grammar=None):
        assert grammar is not None and settings.stop == ("\n",)
        self.requests.append((prompt, grammar))
        if self.wrong:
            return self.wrong.pop(0)
        return Grammar(grammar).sample(random.Random(settings.seed)).split("\n")[0]

    def count_tokens(self, text):
        return len(text.split())


@pytest.mark.parametrize("form", ["limerick", "couplets", "haiku", "ballad"])
def test_a_poem_written_through_grammars_passes_the_scanner(form):
    shape = get_form(form)
    gen = GrammarSampler()
    poem = compose(gen, shape, "the sea", seed=1, time_cap=120)
    assert poem.complete, poem.text
    verdict = scan_poem(poem.text, shape)
    assert verdict.ok, report(verdict, shape)
    # each request's prompt is the heading (with the topic) and the last lines before it, stanza breaks kept
    prompt, _ = gen.requests[-1]
    before = poem.lines[:-1][-WINDOW:]
    assert prompt.startswith(poem_prompt(gen, shape, "the sea")) and "the sea" in prompt
    assert prompt == line_context(poem_prompt(gen, shape, "the sea"), shape, poem.lines[:-1])
    assert all(line.text in prompt for line in before)
    assert len(poem.lines) <= WINDOW + 1 or poem.lines[0].text not in prompt


def test_a_line_that_does_not_scan_is_never_kept():
    shape = get_form("couplets")
    bad = ["The sea is wide and deep", "the cat", "Nothing rhymes here at all, no, not at all, not ever"]
    gen = GrammarSampler(wrong=bad * 10)
    poem = compose(gen, shape, "the sea", seed=2, time_cap=60)
    verdict = scan_poem(poem.text, shape)
    for line in poem.lines:
        assert line.text not in bad
        if line.ok:
            assert scan_line(line.text, shape.templates(0)).meter_ok
    assert verdict.ok == poem.complete


def test_same_seed_same_poem_through_grammars():
    shape = get_form("couplets")
    a = compose(GrammarSampler(), shape, "the moon", seed=4, time_cap=60)
    b = compose(GrammarSampler(), shape, "the moon", seed=4, time_cap=60)
    assert a.text == b.text


def test_rewriting_a_line_through_a_grammar_keeps_the_rhyme():
    shape = get_form("couplets")
    poem = compose(GrammarSampler(), shape, "the moon", seed=5, time_cap=60)
    new = rewrite_line(GrammarSampler(7), poem, 1, seed=9)
    assert new is not None and new.ok and new.text != poem.lines[1].text
    poem.lines[1] = new
    assert scan_poem(poem.text, shape).ok


def test_an_engine_with_neither_grammar_nor_token_steering_is_refused_in_one_sentence():
    from storyloom.engine.backends.scripted import ScriptedGenerator

    gen = ScriptedGenerator()
    with pytest.raises(StoryloomError) as err:
        compose(gen, get_form("haiku"), "x")
    message = str(err.value)
    assert message.startswith("scripted ") and ". " not in message and message.endswith(".")  # one sentence
    assert "grammar" in message and "each token" in message
    gen.capabilities = replace(gen.capabilities, grammar="lark")  # a dialect we do not write
    with pytest.raises(StoryloomError, match="neither"):
        compose(gen, get_form("haiku"), "x")


def test_modes_poetry_imports_no_torch():
    code = ("import sys\nimport storyloom.modes.poetry.compose, storyloom.modes.poetry.remote, "
            "storyloom.modes.poetry.bench, storyloom.modes.poetry.grammar\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m == 'storyloom.engine.logits'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- llama.cpp itself ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama():
    from tests.unit.llama_cpp_generator import LlamaCppGenerator, import_llama_cpp

    if import_llama_cpp() is None:
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python): llama.cpp checks skipped")
    from storyloom.engine import default_model

    gguf = default_model.gguf_file()
    return LlamaCppGenerator(gguf, default_model.converted_dir())  # its chat template, from its tokenizer


@pytest.mark.real_model
def test_llama_cpp_parses_every_line_grammar_of_every_form(llama):
    lex = default_lexicon()
    checked = 0
    for form in load_forms().values():
        for templates in dict.fromkeys(form.templates(i) for i in range(form.lines)):
            for rule in (RhymeRule(), RhymeRule(partners=MIN_PARTNERS), DAY):
                grammar = line_grammar(lex, templates, rule)
                assert grammar is not None and llama.parses(grammar), (form.key, templates, rule)
                checked += 1
    assert checked >= 15
    assert not llama.parses("root ::= w-x\n"), "the check can fail"


@pytest.mark.real_model
def test_a_real_model_writes_a_limerick_that_scans_through_llama_cpp_grammars(llama):
    shape = get_form("limerick")
    poem = compose(llama, shape, "the sea", seed=1, time_cap=600)
    verdict = scan_poem(poem.text, shape)
    assert poem.complete and verdict.ok, report(verdict, shape)
    assert len(llama.grammars) >= shape.lines  # every line went through llama.cpp under a grammar
    assert all(last_word(line.text) == line.last_word for line in poem.lines)

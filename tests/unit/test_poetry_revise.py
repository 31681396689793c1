"""Issue 13, sonnets with no defect: once the poem stands, the lines compose sees a flaw in are written
again (revise.py), and a new version is kept only if it has fewer flaws and no later line gains one."""
from __future__ import annotations

import dataclasses
import math

import pytest

from storyloom.modes import critic
from storyloom.modes.poetry import compose as composer
from storyloom.modes.poetry import revise
from storyloom.modes.poetry.compose import PoemLine, compose, poem_prompt
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.plan import TopicGauge
from storyloom.modes.poetry.scan import scan_poem

F = frozenset


def test_a_lines_flaws_are_those_compose_can_see():
    line = PoemLine("The ships go by the rocks and gulls set sail", True, "sail", final_logprob=-2.0)
    assert revise.flaws(line, -2.0) == F()
    assert revise.flaws(line, -9.0) == {"forced"}
    assert revise.flaws(line, -7.3, floor=-7.5) == F(), "a later line is held to the floor less the slack"
    assert revise.flaws(line, None) == F(), "a rhyme word not read is not forced"
    assert revise.flaws(dataclasses.replace(line, line_topic=0.1), -2.0) == {"astray"}  # under TOPIC_MARGIN
    assert revise.flaws(dataclasses.replace(line, line_topic=0.5), -2.0) == F()
    assert revise.flaws(dataclasses.replace(line, repeats=2), -2.0) == {"tic"}
    assert revise.flaws(dataclasses.replace(line, repeats=1), -2.0) == F()
    assert revise.flaws(dataclasses.replace(line, penalty=critic.FAIL), -2.0) == {"critic"}
    cut = PoemLine("And all the ships that sailed the high", True, "high")
    assert revise.flaws(cut, -2.0) == {"unfinished"}
    off_tic = dataclasses.replace(line, line_topic=-0.3, repeats=3)
    assert revise.flaws(off_tic, -2.0) == {"astray", "tic"}, "a tic counts off the topic too (unlike grade)"
    assert revise.flaws(PoemLine("", False), -20.0) == F()


def test_a_revision_is_kept_only_with_fewer_flaws_and_none_new_on_later_lines():
    assert revise.better([F({"tic", "astray"}), F()], [F({"astray"}), F()])
    assert revise.better([F({"tic"}), F({"tic"})], [F(), F()])
    assert not revise.better([F({"tic"}), F()], [F({"forced"}), F()]), "a flaw traded for another is no gain"
    assert not revise.better([F({"tic"}), F()], [F({"tic"}), F()])
    assert not revise.better([F({"tic"}), F()], [F(), F({"forced"})]), "a later line read forced after it"
    assert not revise.better([F({"tic"}), F({"astray"})], [F(), F({"astray", "tic"})])


def _poem(small, form: str = "couplets", seed: int = 4):
    poem = compose(small, get_form(form), "the sea", seed=seed, revision=False)
    assert poem.complete and poem.revisions == 0
    return poem


def _writer(small, poem):
    vocab = small._poetry_vocab
    writer = composer._TokenWriter(small, vocab, seed=9)
    prompt = poem_prompt(small, poem.form, poem.topic)
    writer.gauge = TopicGauge(small, vocab, prompt, poem_prompt(small, poem.form, ""))
    return writer, prompt


def test_the_poem_read_as_one_row_reads_each_rhyme_word_as_compose_drew_it(small):
    poem = _poem(small)
    finals = revise.read_finals(small, small._poetry_vocab, poem_prompt(small, poem.form, poem.topic), poem.form,
                                poem.lines)
    assert len(finals) == len(poem.lines) and all(f is not None and math.isfinite(f) for f in finals)
    # the first line is read after the heading alone, as it was drawn: the same tokens, the same
    # reading (one batched forward against one token at a time: a rounding apart)
    assert finals[0] == pytest.approx(poem.lines[0].final_logprob, abs=0.05)
    assert all(line.final_from is not None and 0 <= line.final_from < len(line.ids) for line in poem.lines)


def test_a_line_astray_is_written_again_and_the_new_version_kept(small, monkeypatch):
    monkeypatch.setattr(composer, "FORCED_FLOOR", -math.inf)  # the tiny model's rhyme words all read forced
    monkeypatch.setattr(composer, "DRIFT_FROM", 0)  # every line is read for its topic, and reads on it
    monkeypatch.setattr(composer, "critic_penalty", lambda *a, **k: 0.0)  # the critic fails every tiny line
    monkeypatch.setattr(TopicGauge, "line_topics", lambda self, lines: [1.0] * len(lines))
    poem = _poem(small)
    before = [line.text for line in poem.lines]
    assert not any(revise.flaws(line, line.final_logprob) for line in poem.lines)
    poem.lines[3] = dataclasses.replace(poem.lines[3], line_topic=-1.0)  # but line 4 read astray when written
    writer, prompt = _writer(small, poem)
    heard = []
    revise.revise(small, small._poetry_vocab, writer, poem, prompt, writer.gauge, composer.POEM_SETTINGS, 60.0,
                  on_revise=lambda i, line: heard.append((i, line)))
    assert poem.revisions == 1 and poem.revision_seconds > 0
    assert [i for i, _ in heard] == [3, 3] and heard[0][1] is None and heard[1][1] is poem.lines[3]
    assert poem.lines[3].text != before[3] and poem.lines[3].line_topic == 1.0
    assert [line.text for k, line in enumerate(poem.lines) if k != 3] == before[:3] + before[4:], "no other line changes"
    assert scan_poem(poem.text, poem.form).ok, poem.text


def test_a_new_version_that_leaves_a_later_line_forced_is_not_kept(small, monkeypatch):
    monkeypatch.setattr(composer, "DRIFT_FROM", 0)
    monkeypatch.setattr(composer, "critic_penalty", lambda *a, **k: 0.0)
    monkeypatch.setattr(TopicGauge, "line_topics", lambda self, lines: [1.0] * len(lines))
    poem = _poem(small)
    before = [line.text for line in poem.lines]
    poem.lines[3] = dataclasses.replace(poem.lines[3], line_topic=-1.0)

    def finals(generator, vocab, prompt, form, lines):  # the poem as written reads well; any other
        changed = [line.text for line in lines] != before  # leaves its last rhyme word forced
        return [-1.0] * (len(lines) - 1) + [-20.0 if changed else -1.0]

    monkeypatch.setattr(revise, "read_finals", finals)
    writer, prompt = _writer(small, poem)
    heard = []
    revise.revise(small, small._poetry_vocab, writer, poem, prompt, writer.gauge, composer.POEM_SETTINGS, 60.0,
                  on_revise=lambda i, line: heard.append((i, line)))
    assert poem.revisions == 0 and [line.text for line in poem.lines] == before
    alone = [(3, None)] * revise.REVISE_TRIES
    assert heard[:len(alone)] == alone and heard[len(alone):] in ([(2, None)], [(2, None), (3, None)]), heard
    # tried alone, then with its partner on another rhyme, never kept


def test_a_poem_with_no_flaw_is_left_as_it_is(small, monkeypatch):
    monkeypatch.setattr(composer, "FORCED_FLOOR", -math.inf)
    monkeypatch.setattr(composer, "critic_penalty", lambda *a, **k: 0.0)
    poem = _poem(small)
    writer, prompt = _writer(small, poem)
    monkeypatch.setattr(writer, "best_line", lambda *a, **k: pytest.fail("a line with no flaw was written again"))
    before = [line.text for line in poem.lines]
    revise.revise(small, small._poetry_vocab, writer, poem, prompt, writer.gauge, composer.POEM_SETTINGS, 60.0)
    assert [line.text for line in poem.lines] == before and poem.revisions == 0


def test_a_revision_rejudges_the_later_lines_against_the_new_one():
    def line(text: str) -> PoemLine:
        return PoemLine(text, True, text.split()[-1])

    a, b = line("The ships go by the rocks, a lone white sail"), line("He tends the lamp that burns, a lone far light")
    c, d = line("The gulls that cry above the water cold"), line("And still a lone grey boat goes out to sea")
    prompt = "A sonnet about the sea.\n\n"
    judged = revise.rejudged([a, b, c, d], 0, prompt, "the sea")
    assert [x.repeats for x in judged] == [0, 1, 0, 2], "'a lone' said by two earlier lines: a tic"
    revised = line("He tends the lamp that burns so far and bright")
    again = revise.rejudged([judged[0], revised] + judged[2:], 2, prompt, "the sea")
    assert again[1].repeats == 1 and judged[3].repeats == 2, "judged again as a copy, the old line left as it was"
    assert again[0] is judged[2], "a line whose judgment did not change is kept as it is"


def test_compose_gives_the_revision_half_the_time_the_poem_took(small, monkeypatch):
    seen = {}

    def spy(generator, vocab, writer, poem, prompt, gauge, settings, seconds, cancel=None, on_revise=None):
        seen.update(seconds=seconds, written=poem.seconds, lines=len(poem.lines), on_revise=on_revise)

    monkeypatch.setattr(revise, "revise", spy)
    noted = lambda i, line: None  # noqa: E731
    poem = compose(small, get_form("couplets"), "the sea", seed=4, on_revise=noted)
    assert seen["lines"] == 6 and seen["on_revise"] is noted
    assert seen["seconds"] == pytest.approx(revise.REVISE_SHARE * seen["written"])
    assert poem.seconds >= seen["written"]
    seen.clear()
    compose(small, get_form("couplets"), "the sea", seed=4, revision=False)
    assert not seen, "no revision asked for, none run"


def test_a_line_is_drawn_again_with_the_lines_before_it_seen_by_the_repetition_penalty(small):
    """compose fed each line to its decoder as the poem grew, so the sampler's repetition penalty saw
    the last lines; the revision opens its decoder the same way (opened at once on the whole context
    it saw none of them, and drew again the phrase it was to lose)."""
    poem = _poem(small)
    writer, prompt = _writer(small, poem)
    revise._open_as_written(writer, prompt, poem.form, poem.lines, 4, 20)
    assert writer.context == composer.line_context(prompt, poem.form, poem.lines[:4])
    seen = small.decode(writer.dec.history)
    assert poem.lines[3].text in seen and poem.lines[0].text not in seen, seen
    assert len(writer.dec.history) >= 20 or poem.lines[2].text in seen


def _astray_at_3(small, monkeypatch):
    monkeypatch.setattr(composer, "FORCED_FLOOR", -math.inf)
    monkeypatch.setattr(composer, "DRIFT_FROM", 0)
    monkeypatch.setattr(composer, "critic_penalty", lambda *a, **k: 0.0)
    monkeypatch.setattr(TopicGauge, "line_topics", lambda self, lines: [1.0] * len(lines))
    poem = _poem(small)
    poem.lines[3] = dataclasses.replace(poem.lines[3], line_topic=-1.0)
    return poem


def test_the_revision_never_falls_back_on_the_greedy_search_and_keeps_to_its_time(small, monkeypatch):
    poem = _astray_at_3(small, monkeypatch)
    writer, prompt = _writer(small, poem)
    asked = []
    real = writer.best_line

    def best_line(*args, **kwargs):
        asked.append((kwargs.get("search", True), kwargs.get("poem"), args[5]))
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "best_line", best_line)
    monkeypatch.setattr(writer, "_search", lambda *a, **k: pytest.fail("the revision searched greedily"))
    tries = poem.line_tries
    revise.revise(small, small._poetry_vocab, writer, poem, prompt, writer.gauge, composer.POEM_SETTINGS, 0.3)
    assert asked and all(search is False and counted is None for search, counted, _ in asked)
    assert all(deadline <= asked[0][2] + 0.3 for *_, deadline in asked), "no try's time runs past the revision's"
    assert poem.line_tries == tries, "the revision's draws are not counted as compose's"
    assert poem.revision_seconds < 5.0


def test_a_version_let_go_is_not_drawn_again(small, monkeypatch):
    poem = _astray_at_3(small, monkeypatch)
    writer, prompt = _writer(small, poem)
    monkeypatch.setattr(revise, "better", lambda old, new: False)  # every version is let go
    drawn, avoided = [], []
    real = writer.best_line

    def best_line(*args, **kwargs):
        avoided.append(kwargs["avoid"])
        line = real(*args, **kwargs)
        drawn.append(composer.plain(line.text) if line else None)
        return line

    monkeypatch.setattr(writer, "best_line", best_line)
    revise.revise(small, small._poetry_vocab, writer, poem, prompt, writer.gauge, composer.POEM_SETTINGS, 60.0)
    assert len(drawn) >= 2 and drawn[0] is not None
    assert drawn[0] in avoided[1], "the second try avoids the first try's version"
    assert len(set(d for d in drawn if d)) == len([d for d in drawn if d])


def test_a_revision_that_fails_keeps_the_poem_as_written(small, monkeypatch, caplog):
    monkeypatch.setattr(composer, "FORCED_FLOOR", -math.inf)
    monkeypatch.setattr(composer, "critic_penalty", lambda *a, **k: 0.0)

    def broken(*args, **kwargs):
        raise IndexError("index out of range in self")  # say, a long custom form past the context

    monkeypatch.setattr(revise, "revise", broken)
    poem = compose(small, get_form("couplets"), "the sea", seed=4)
    plain = compose(small, get_form("couplets"), "the sea", seed=4, revision=False)
    assert poem.complete and poem.text == plain.text
    assert "revision pass failed" in caplog.text


def test_the_poem_command_says_what_the_revision_did_and_no_revise_skips_it(small, monkeypatch, capsys):
    from storyloom import cli
    from storyloom.engine import models

    monkeypatch.setattr(models, "load", lambda spec, progress=None: small)
    ran = []
    real = revise.revise
    monkeypatch.setattr(revise, "revise", lambda *a, **k: (ran.append(1), real(*a, **k))[1])
    cli.main(["poem", "--form", "couplets", "--topic", "the sea", "--seed", "4", "--time-cap", "20"])
    err = capsys.readouterr().err
    assert ran and " revised in " in err, err
    ran.clear()
    cli.main(["poem", "--form", "couplets", "--topic", "the sea", "--seed", "4", "--no-revise"])
    err = capsys.readouterr().err
    assert not ran and "not revised]" in err, err

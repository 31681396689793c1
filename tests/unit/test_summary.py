"""Auto-summary memory: when it folds, that it never overflows, that failures change nothing,
that a small model's inventions are dropped, and the 200-turn measure (extractive stand-in)."""
from __future__ import annotations

import threading

import pytest

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import adventure as adv
from storyloom.modes import memory_bench
from storyloom.modes import summary as sm
from storyloom.modes.text import TokenCounter
from storyloom.store.stories import Game, Turn

COUNT = TokenCounter(lambda s: len(s.split()))


def _game(turns: int) -> Game:
    game = Game(title="t", context="You are a knight.", turns=[Turn("start", "Your quest begins.", "The road is long.")])
    for i in range(turns):
        game.turns.append(Turn("do", f"> You walk to place {i}.", f"At place {i} you meet Person{i} who has a key."))
    return game


class Fixed:
    """A summariser that answers from a list (and records what it was asked)."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    def summarize(self, text, words, cancel=None):
        self.asked.append((text, words))
        return self.answers.pop(0) if self.answers else "You walked on and met more people on the road."


def test_a_fold_is_planned_only_when_enough_turns_fell_out_and_the_summary_is_kept_up_to_date():
    game = _game(20)
    assert sm.plan(game, turns_in_prompt=21 - sm.FOLD_EVERY + 1, budget=100) is None
    job = sm.plan(game, turns_in_prompt=21 - sm.FOLD_EVERY, budget=100)
    assert (job.start, job.end) == (0, sm.FOLD_EVERY)
    assert "> You walk to place 0." in job.passage and "Person2" in job.passage
    backlog = sm.plan(game, turns_in_prompt=2, budget=100)
    assert backlog.end - backlog.start == sm.FOLD_MAX  # a backlog catches up a few turns at a time
    for mode in ("pinned", "off"):
        game.summary_mode = mode
        assert sm.plan(game, turns_in_prompt=2, budget=100) is None


def test_folds_add_a_line_and_merge_the_shortest_pair_to_stay_within_budget():
    job = sm.Fold(8, 12, "You met Ann at the mill.\nYou found a key.\nBob gave you a long red cloak and a map.", "...",
                  budget=26)
    writer = Fixed("You crossed the river with Cid.", "You met Ann and found a key.")
    text = sm.fold(job, writer, COUNT)
    assert text.splitlines() == ["You met Ann and found a key.", "Bob gave you a long red cloak and a map.",
                                 "You crossed the river with Cid."]
    assert writer.asked[1][0] == "You met Ann at the mill. You found a key."
    assert COUNT(adv.summary_line(text)) <= 26 and len(writer.asked) == 2


def test_the_summary_never_overflows_even_when_the_summariser_will_not_shorten():
    job = sm.Fold(0, 4, "\n".join(f"Line {i} says a great deal about many things." for i in range(6)), "...", budget=26)
    text = sm.fold(job, Fixed(*["This answer is far too long to be any use as a summary of two lines. " * 3] * 20),
                   COUNT)
    assert 0 < COUNT(adv.summary_line(text)) <= 25


def test_a_failed_or_stopped_fold_leaves_the_old_summary():
    game = _game(20)
    game.summary = "You met Ann."
    job = sm.plan(game, 4, 100)
    with pytest.raises(sm.SummaryFailed):
        sm.fold(job, Fixed(""), COUNT)
    stop = threading.Event()
    stop.set()
    with pytest.raises(sm.SummaryFailed):
        sm.fold(job, Fixed("You met Bob at the well."), COUNT, stop)
    assert game.summary == "You met Ann." and game.summary_upto == 0


def test_a_fold_is_not_applied_over_the_players_edit_pin_or_undo():
    game = _game(20)
    job = sm.plan(game, 4, 100)
    sm.edit(game, "My own summary.\n\nSecond line.")
    assert not sm.apply(game, job, "You met Bob.") and game.summary == "My own summary.\nSecond line."
    game.summary = ""
    sm.set_mode(game, "pinned")
    assert not sm.apply(game, job, "You met Bob.")
    sm.set_mode(game, "auto")
    del game.turns[2:]
    assert not sm.apply(game, job, "You met Bob.")
    game = _game(20)
    assert sm.apply(game, sm.plan(game, 4, 100), "You met Bob.") and game.summary_upto == sm.FOLD_MAX
    with pytest.raises(Exception, match="summary is one of"):
        sm.set_mode(game, "sometimes")


def test_the_model_summariser_drops_what_the_text_never_named_and_falls_back():
    source = "> You enter the tavern.\nCaptain Voss gives you a brass compass."
    gen = ScriptedGenerator(["Captain Voss gives you a compass. Then Lord Brimley steals it.",
                             "Sure! The wizard Zoltan appears."])
    writer = sm.ModelSummarizer(gen)
    assert writer.summarize(source, 40) == "Captain Voss gives you a compass."
    assert "Text:\n> You enter the tavern." in gen.prompts[0]
    assert writer.summarize(source, 40) == "Captain Voss gives you a brass compass."  # the stand-in's line
    assert (writer.calls, writer.fallbacks) == (2, 1)


def test_headless_keep_folds_as_turns_fall_out_of_a_real_sized_prompt():
    game = _game(0)
    play = adv.Adventure(game, primer=False)
    gen = ScriptedGenerator(context_length=300)
    for i in range(80):
        play.commit(Turn("do", f"> You walk to place {i}.", f"At place {i} you meet Person{i} who has a key."))
        sm.keep(play, gen, SamplerSettings(max_new_tokens=40), sm.ExtractiveSummarizer())
    built = play.prompt_for("", gen, SamplerSettings(max_new_tokens=40))
    assert game.summary and game.summary_upto >= len(game.turns) - built.turns_included - sm.FOLD_EVERY
    assert built.tokens <= built.budget
    assert COUNT(next(p.text for p in built.parts if p.name == "summary").strip()) <= adv.summary_budget(built.budget)


def test_after_200_turns_the_facts_of_turn_5_are_still_in_the_prompt():
    result = memory_bench.memory(None, turns=200, summarizer="extractive")
    assert result["turns"] == 200 and not result["turn_5_in_history"]  # long gone from the history
    assert result["memory_facts_in_prompt"] == 1.0
    assert "captain voss" in result["summary_named"] and "captain voss" in result["summary_facts_kept"]
    assert result["summary_facts_in_prompt"] == 1.0 and not result["summary_facts_lost_at_turn"]
    assert result["summary_tokens_max"] <= result["summary_budget"]
    assert result["prompt_tokens_max"] <= result["budget"] and result["failed_folds"] == 0


def test_the_stand_in_keeps_what_is_said_once_over_what_recurs():
    text = ('"Keep it," Pell says, and walks off. A one-eyed sailor named Captain Voss slides a brass compass '
            'across the table. "Keep it," Rook says, and walks off. At the mill, Pell hands you a nail. '
            '"Keep it," Pell says, and walks off. > You walk on. Rain begins to fall.')
    # the one-off sailor first, then what is new after him; the third "Keep it" adds nothing
    assert sm.ExtractiveSummarizer().summarize(text, 30) == (
        "A one-eyed sailor named Captain Voss slides a brass compass across the table. "
        "At the mill, Pell hands you a nail. Rain begins to fall.")
    assert sm.ExtractiveSummarizer().summarize(text, 16).startswith("A one-eyed sailor named Captain Voss")


def test_small_local_models_leave_the_summary_to_the_extractive_stand_in():
    from types import SimpleNamespace

    small = SimpleNamespace(info=SimpleNamespace(parameters=134_515_008))
    big = SimpleNamespace(info=SimpleNamespace(parameters=1_235_814_400))
    server = SimpleNamespace(info=SimpleNamespace(parameters=None))
    assert sm.summarizer_for(small) is sm.EXTRACTIVE
    assert isinstance(sm.summarizer_for(big), sm.ModelSummarizer)
    assert isinstance(sm.summarizer_for(server), sm.ModelSummarizer)

"""Phrase bias (NovelAI's lorebook phrase bias): the distribution it must produce, which token it
raises as a phrase begins, goes on and ends, both decode paths honouring it, and world info's
names reaching it through the adventure; plus a batch that ends early when enough is written."""
from __future__ import annotations

import math

import pytest
import torch

from storyloom.engine.biasing import PhraseBias, check
from storyloom.engine.logits import Context, apply_bias, choose_next
from storyloom.engine.sampling import SamplerSettings, SettingsError
from tests.decode_spy import on_path, spy_steps

PLAIN = SamplerSettings(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0)

# A toy tokenizer for the text-level tests: longest match over a fixed vocabulary.
VOCAB = [" Lady", " Ash", "worth", "Lady", "Ash", " Mira", "Mi", "ra", " the", " said", "\n", '"', " ", "a", "b",
         "c", "d", "e", "h", "i", "l", "o", "r", "s", "t", "w", "y", "A", "L", "M", " O", "ld", " T", "obias"]


def toy_encode(text: str) -> list[int]:
    ids, at = [], 0
    while at < len(text):
        best = max((v for v in VOCAB if text.startswith(v, at)), key=len)
        ids.append(VOCAB.index(best))
        at += len(best)
    return ids


def tok(piece: str) -> int:
    return VOCAB.index(piece)


# -- the distribution ------------------------------------------------------------------------
def test_a_bias_multiplies_the_tokens_odds_by_e_to_the_bias_over_temperature():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    for b, temperature in ((2.0, 1.0), (1.0, 1.0), (2.0, 2.0)):
        biased = apply_bias(probs.log(), [{3: b}]) / temperature
        before = torch.softmax(probs.log() / temperature, -1)[0]
        after = torch.softmax(biased, -1)[0]
        factor = math.exp(b / temperature)
        p = float(before[3])
        assert float(after[3]) == pytest.approx(p * factor / (1 - p + p * factor))
        # the others keep their ratios to each other
        assert float(after[0] / after[1]) == pytest.approx(float(before[0] / before[1]))


def test_the_sampler_draws_the_biased_token_as_often_as_the_bias_says():
    rows = 20_000
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(rows, -1)
    history = torch.zeros(rows, 0, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    plain = choose_next(logits, history, PLAIN, gen)
    biased = choose_next(logits, history, PLAIN, gen, Context(bias=[{3: 2.0}] * rows))
    expected = 0.05 * math.e ** 2 / (0.95 + 0.05 * math.e ** 2)  # 0.28 from 0.05
    assert float((plain == 3).float().mean()) == pytest.approx(0.05, abs=0.01)
    assert float((biased == 3).float().mean()) == pytest.approx(expected, abs=0.015)
    # greedy: a bias larger than the gap makes the token the likeliest; banned stays banned
    greedy = PLAIN.with_(temperature=0)
    assert int(choose_next(logits[:1], history[:1], greedy, None, Context(bias=[{2: 1.3}]))) == 2
    assert int(choose_next(logits[:1], history[:1], greedy, None, Context(bias=[{2: 9.0}], banned=[{2}]))) == 0


# -- which token a phrase raises ----------------------------------------------------------------
def test_the_first_token_is_the_phrase_as_it_follows_the_text():
    bias = PhraseBias([("Lady Ashworth", 3.0)], toy_encode)
    assert bias.pushes("", before="\n") == {tok("Lady"): 3.0}  # at the start of a line: no space
    assert bias.pushes(" the", before="\n") == {tok(" Lady"): 3.0}  # after a word: with its space
    assert bias.pushes(' said "', before="\n") == {tok("Lady"): 3.0}  # after an opening quote


def test_a_begun_phrase_is_continued_across_token_boundaries():
    bias = PhraseBias([("Lady Ashworth", 3.0)], toy_encode)
    assert bias.pushes(" the Lady", "\n") == {tok(" Ash"): 3.0}
    assert bias.pushes(" the Lady Ash", "\n") == {tok("worth"): 3.0}
    # a word that only ends like the phrase's start has not begun it ("Milady" is not "Lady")
    assert bias.pushes(" Milady", "\n") == {tok(" Lady"): 3.0}


def test_a_finished_phrase_is_not_pushed_again_and_a_broken_one_starts_over():
    bias = PhraseBias([("Lady Ashworth", 3.0), ("Mira", 2.0)], toy_encode)
    said = " the Lady Ashworth"
    assert bias.used(said) == ["Lady Ashworth"]
    assert bias.pushes(said, "\n") == {tok(" Mira"): 2.0}
    assert bias.pushes(said + " said", "\n") == {tok(" Mira"): 2.0}  # any case counts as said
    assert bias.pushes(" the lady ashworth said Mira", "\n") == {}
    assert bias.pushes(" the Lady Asher", "\n")[tok(" Lady")] == 3.0  # broken: the first token again


def test_phrase_bias_settings_are_checked():
    assert check([["Mira", 3]]) == (("Mira", 3.0),)
    for bad in ("Mira", [("Mira",)], [("", 1.0)], [("Mira", "lots")], [("Mira", 50.0)], [("Mira", True)]):
        with pytest.raises(ValueError):
            check(bad)
    with pytest.raises(SettingsError, match="phrase_bias"):
        SamplerSettings(phrase_bias=(("Mira", 99.0),))
    s = SamplerSettings(phrase_bias=[["Mira", 2]])
    assert s.phrase_bias == (("Mira", 2.0),) and SamplerSettings.from_dict(s.to_dict()) == s


# -- the decode loop, on a tiny random model ------------------------------------------------------
PROMPT = "You open the door. The room beyond is dark"
PHRASE = "old paper"


def _spy(monkeypatch):
    """Each step's logits, the phrase bias of each row, and the chosen tokens."""
    return spy_steps(monkeypatch, lambda history, context: [dict(b) for b in (context.bias or [])] if context else [])


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_the_loop_raises_the_phrase_then_its_continuation_then_nothing(tiny, engine, monkeypatch):
    gen = on_path(tiny, engine)
    first, second = gen.encode(" " + PHRASE, special=False)[:2]
    assert gen.decode([first, second]) == " " + PHRASE  # two tokens: the test needs a continuation
    settings = PLAIN.with_(max_new_tokens=12, seed=3, phrase_bias=((PHRASE, 12.0),))
    seen = _spy(monkeypatch)
    text = gen.generate(PROMPT, settings)
    assert text.count(PHRASE) == 1, text
    chosen = [int(t) for _, _, t in seen]
    pushes = [b[0] if b else {} for _, b, _ in seen]
    at = chosen.index(first)  # the model's own peaks may come first: the bias raises, not forces
    assert chosen[at + 1] == second
    assert all(p == {first: 12.0} for p in pushes[:at + 1]), (pushes, chosen, at)  # not begun: with its space
    assert pushes[at + 1] == {second: 12.0}  # begun: the token that goes on with it
    assert all(not p for p in pushes[at + 2:])  # said: never pushed again this turn
    # the distribution at the first step: the model's own, with the first token's odds x e^12
    logits = seen[0][0][0].float()
    before, after = torch.softmax(logits, -1)[first], torch.softmax(apply_bias(logits[None], [pushes[0]])[0], -1)[first]
    assert float(after / (1 - after)) == pytest.approx(float(before / (1 - before)) * math.exp(12.0), rel=1e-3)
    without = gen.generate(PROMPT, settings.with_(phrase_bias=()))
    assert PHRASE not in without  # the bias is what wrote it


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_every_candidate_in_a_batch_gets_its_own_phrase_bias(tiny, engine):
    gen = on_path(tiny, engine)
    settings = PLAIN.with_(max_new_tokens=12, seed=4, phrase_bias=((PHRASE, 12.0),))
    rows = gen.candidates(PROMPT, 3, settings)
    assert all(r.count(PHRASE) == 1 for r in rows), rows
    banned = gen.generate(PROMPT, settings.with_(banned=("door",)))  # the one-row path with bans too
    assert banned.count(PHRASE) == 1


def test_a_batch_can_end_once_enough_candidates_finished(tiny):
    settings = PLAIN.with_(max_new_tokens=30, seed=6, stop=("eyes",))  # row 2 stops, row 4 ends (EOS)
    full = tiny.candidates(PROMPT, 4, settings)
    calls = []

    def enough(texts, finished):
        calls.append((list(texts), list(finished)))
        return any(finished)  # the first finished candidate is enough

    early = tiny.candidates(PROMPT, 4, settings, enough=enough)
    assert len(calls) > 1 and not any(calls[0][1])  # asked after every step
    texts, finished = calls[-1]
    assert 1 <= sum(finished) < 4  # the test can fail: some rows were still going
    for i, done in enumerate(finished):
        assert full[i].startswith(early[i])  # same draws up to the stop: the rows as far as they got
        if done:
            assert early[i] == full[i]
    assert sum(map(len, early)) < sum(map(len, full))
    assert tiny.candidates(PROMPT, 4, settings, enough=lambda t, f: False) == full


# -- world info's names into the sampler ------------------------------------------------------
def test_triggered_entries_names_are_biased_by_their_own_or_the_default_bias():
    from storyloom.modes import worldinfo
    from storyloom.store.stories import WorldEntry

    mira = WorldEntry(["innkeeper"], "The innkeeper is Mira, a tall woman with a silver eye patch.")
    hale = WorldEntry(["butler"], "The butler is Mr Hale, an old man. Legends say he never sleeps.", bias=1.5)
    off = WorldEntry(["/ghosts?/i"], "Ghosts walk the halls of Grimwald at night.", bias=0)
    assert worldinfo.names(mira) == ["innkeeper", "Mira"]
    assert worldinfo.names(hale) == ["butler", "Mr Hale", "Hale"]  # "Legends" only opens a sentence
    assert worldinfo.phrase_bias([mira, hale, off], default=3.0) == (
        ("innkeeper", 3.0), ("Mira", 3.0), ("butler", 1.5), ("Mr Hale", 1.5), ("Hale", 1.5))
    assert worldinfo.phrase_bias([mira], default=0) == ()


def test_the_adventure_sends_the_triggered_names_to_the_sampler():
    from storyloom.engine.backends.scripted import ScriptedGenerator
    from storyloom.modes import adventure as adv
    from storyloom.store.stories import WorldEntry

    class Recording(ScriptedGenerator):
        def candidates(self, prompt, n, settings=None, cancel=None, on_step=None, grammar=None, enough=None, record=None, complete=None):
            self.settings = settings
            return super().candidates(prompt, n, settings, cancel, on_step, grammar, enough)

    setting, character = adv.find_scenario("fantasy/knight")
    game = adv.new_game(setting, character)
    game.turns[0].output = "The inn is warm."
    game.world_info = [WorldEntry(["innkeeper"], "The innkeeper is Mira, a tall woman.")]
    gen = Recording(["Mira smiles at you and hands you a key to the room upstairs."] * 4)
    play = adv.Adventure(game, None, lore_bias=2.5)
    turn = play.begin("do", "ask the innkeeper for a room")
    built = play.prompt_for(turn.action, gen, SamplerSettings())
    adv.run(play.generate(built.text, turn.action, gen, SamplerSettings(), candidates=4,
                          brief=play.brief_for(turn.action, built=built)))
    assert gen.settings.phrase_bias == (("innkeeper", 2.5), ("Mira", 2.5))
    assert "\n>" in gen.settings.stop
    play.lore_bias = 0
    built = play.prompt_for(turn.action, gen, SamplerSettings())
    adv.run(play.generate(built.text, turn.action, gen, SamplerSettings(), candidates=4,
                          brief=play.brief_for(turn.action, built=built)))
    assert gen.settings.phrase_bias == ()


def test_a_batch_is_enough_once_a_finished_candidate_passes_and_uses_the_lore():
    from storyloom.modes import adventure as adv, critic

    good = "The old innkeeper smiles and slides a brass key across the counter toward you."
    brief = critic.Brief(scene="You ask the innkeeper for a room. The inn is warm.", min_words=5)
    enough = adv.early_stop("> You ask the innkeeper for a room.", brief)
    assert not enough([good, "Here's your options: 1. Leave"], [False, True])  # only a failing one finished
    assert enough([good, "Here's your options: 1. Leave"], [True, True])
    assert enough([good, "Here's"], [True, False]) and enough.cut == [False, True]  # what the stop cut short
    # one still being written is enough once it holds a whole turn (ENOUGH_WORDS) that passes
    long = (good + " Behind her a fire crackles in the wide stone hearth, and two travellers argue quietly"
            " over a game of cards near the window. Then she")
    assert len(adv.clean_output(long).split()) >= adv.ENOUGH_WORDS and enough([long], [False])
    assert not enough([good + " Then she"], [False])
    lore = critic.Brief(scene=brief.scene, min_words=5, lore=("mira",))
    enough = adv.early_stop("> You ask the innkeeper for a room.", lore)
    assert not enough([good], [True])  # passes, but the triggered entry is not in it yet
    assert enough([good.replace("old innkeeper", "innkeeper Mira")], [True])


def test_a_passing_turn_about_nothing_in_the_scene_does_not_end_the_batch():
    """Played (detective, "examine the study door"): the first finished candidate, "The room seems
    to be huge. ...", passed and was shown; it shares no word with the scene."""
    from storyloom.modes import adventure as adv, critic

    brief = critic.Brief(scene="Lord Ashcombe lies dead in his locked study. The butler waits by the door.\n"
                               "> You examine the study door.", min_words=5, action="> You examine the study door.")
    astray = "The room seems to be huge. The walls seem to stretch high into the sky."
    answer = "The study door is oak, and its lock has been scratched around the keyhole by a careless key."
    assert critic.judge(astray, brief).passed and critic.judge(astray, brief).relevance == 0
    enough = adv.early_stop(brief.action, brief)
    assert not enough([astray, "The study"], [True, False])  # the others go on
    assert enough([astray, answer], [True, True])


def test_an_entrys_bias_is_checked_and_survives_every_export_format():
    from storyloom.store import lore_formats
    from storyloom.store.lorebooks import LoreError, Lorebook, check_entry
    from storyloom.store.stories import WorldEntry

    for bad in (11.0, "2", True):
        with pytest.raises(LoreError, match="bias"):
            check_entry(WorldEntry(["k"], "text", bias=bad))
    for good in (None, 0, -2, 2.5):
        check_entry(WorldEntry(["k"], "text", bias=good))
    book = Lorebook("Inn", [WorldEntry(["innkeeper"], "The innkeeper is Mira.", bias=1.5),
                            WorldEntry(["cellar"], "The cellar floods.", bias=0), WorldEntry(["door"], "Oak.")])
    for fmt in lore_formats.FORMATS:
        back = lore_formats.import_bytes(lore_formats.export(book, fmt).encode()).book
        assert [e.bias for e in back.entries] == [1.5, 0, None], fmt
    assert WorldEntry.from_dict(WorldEntry(["k"], "t", bias=2.0).__dict__).bias == 2.0
    assert WorldEntry.from_dict({"keys": ["k"], "text": "t"}).bias is None  # saved before the field


def test_naming_a_triggered_entry_counts_as_using_it_even_a_short_name():
    from storyloom.engine.backends.scripted import ScriptedGenerator
    from storyloom.modes import adventure as adv, critic
    from storyloom.store.stories import WorldEntry

    setting, character = adv.find_scenario("fantasy/wizard")
    game = adv.new_game(setting, character)
    game.turns[0].output = "Your tower is quiet."
    game.world_info = [WorldEntry(["familiar"], "Your familiar is Pip, a small grey owl.")]
    play = adv.Adventure(game, None)
    turn = play.begin("do", "call your familiar")
    built = play.prompt_for(turn.action, ScriptedGenerator(), SamplerSettings())
    brief = play.brief_for(turn.action, built=built)
    assert "pip" in brief.lore and "famil" not in brief.lore  # the key is in the action already
    named = critic.judge("Pip flutters down from the rafters and lands on your shoulder.", brief)
    plain = critic.judge("A bird flutters down from the rafters and lands on your shoulder.", brief)
    assert named.lore_used and not plain.lore_used and named.quality > plain.quality


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_a_batch_that_drops_finished_rows_goes_on_exactly_as_the_rows_left(tiny, engine):
    gen = on_path(tiny, engine)
    prompt = gen.encode(PROMPT)
    a, b, c = (gen.encode(w, special=False)[0] for w in (" old", " paper", " door"))
    state = gen.decode_state(prompt, 3)
    state.feed(torch.tensor([[a], [b], [c]]))
    state.keep([0, 2])  # row 1 finished
    shrunk = state.feed(torch.tensor([[b], [a]])).clone()
    fresh = gen.decode_state(prompt, 2)
    fresh.feed(torch.tensor([[a], [c]]))
    assert torch.allclose(shrunk, fresh.feed(torch.tensor([[b], [a]])), atol=1e-4)


def test_finished_rows_leave_the_batch_only_when_it_pays():
    from storyloom.engine.backends.transformers_backend import _worth_shrinking

    assert _worth_shrinking(4, 3, 60) and _worth_shrinking(2, 1, 60)
    assert not _worth_shrinking(4, 4, 60)  # nothing finished
    assert not _worth_shrinking(4, 1, 3)  # the copy would cost more than the steps left save


def test_a_whole_turn_ranks_above_a_one_liner_of_the_same_quality():
    from storyloom.modes import critic

    brief = critic.Brief(min_words=5)
    short = critic.judge("The door creaks open onto a dark hall.", brief)
    full = critic.judge("The door creaks open onto a dark hall. Dust hangs in the air, and somewhere far "
                        "below a bell rings once, then falls silent.", brief)
    assert short.passed and full.passed
    assert critic.best_first([short, full], full_words=25) == [1, 0]
    assert critic.best_first([short, full]) == [0, 1]  # without it, the order drawn decides

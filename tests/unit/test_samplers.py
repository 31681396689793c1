"""Each sampler against the distribution it must produce (crafted logits -> exact kept set and
probabilities), phrase banning on text, and both decode paths honouring them."""
from __future__ import annotations

import pytest
import torch

from storyloom.engine.banning import PhraseBan, token_at
from storyloom.engine.logits import Context, apply_dry, choose_next, filtered
from storyloom.engine.sampling import SamplerSettings, SettingsError
from tests.decode_spy import on_path, spy_steps

PLAIN = SamplerSettings(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0)


def _probs(logits, settings, gen=None, context=None):
    out = filtered(torch.tensor([logits]).log(), None, settings, gen or torch.Generator().manual_seed(0), context)
    return torch.softmax(out, -1)[0].tolist()


def test_min_p_keeps_tokens_at_least_min_p_times_the_best_and_renormalises():
    probs = _probs([0.5, 0.3, 0.15, 0.05], PLAIN.with_(min_p=0.2))  # the bar: 0.2 * 0.5 = 0.1
    assert probs == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0])
    assert _probs([0.5, 0.3, 0.15, 0.05], PLAIN.with_(min_p=0.7)) == pytest.approx([1.0, 0, 0, 0])
    assert _probs([0.5, 0.3, 0.15, 0.05], PLAIN) == pytest.approx([0.5, 0.3, 0.15, 0.05])  # 0 is off


def test_xtc_removes_every_top_choice_but_the_least_likely_of_them():
    xtc = PLAIN.with_(xtc_threshold=0.15, xtc_probability=1.0)
    # 0.4, 0.3 and 0.2 reach 0.15: the first two go, 0.2 (the least likely of them) stays
    assert _probs([0.4, 0.3, 0.2, 0.1], xtc) == pytest.approx([0, 0, 2 / 3, 1 / 3])
    # only one token reaches the threshold: nothing changes
    assert _probs([0.9, 0.05, 0.05], xtc) == pytest.approx([0.9, 0.05, 0.05])
    # a protected token (newline, end of text) would go: nothing changes
    protect = Context(xtc_protect=frozenset({0}))
    assert _probs([0.4, 0.3, 0.2, 0.1], xtc, context=protect) == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert _probs([0.4, 0.3, 0.2, 0.1], xtc.with_(xtc_probability=0.0)) == pytest.approx([0.4, 0.3, 0.2, 0.1])


def test_xtc_fires_with_its_probability():
    gen = torch.Generator().manual_seed(3)
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    draws = [int(choose_next(logits, torch.zeros((1, 0), dtype=torch.long),
                             PLAIN.with_(xtc_threshold=0.15, xtc_probability=0.5), gen)) for _ in range(2000)]
    # P(token 0) = 0.5 * 0.4 (XTC did not fire) + 0.5 * 0 (it did)
    assert draws.count(0) / 2000 == pytest.approx(0.2, abs=0.03)
    assert draws.count(3) / 2000 == pytest.approx(0.5 * 0.1 + 0.5 / 3, abs=0.03)


def test_dry_penalises_the_token_that_would_extend_a_repeat():
    dry = PLAIN.with_(dry_multiplier=0.8, dry_base=1.75, dry_allowed_length=2)
    history = torch.tensor([[1, 2, 3, 4, 1, 2, 3]])  # "1 2 3" again: 4 would repeat "1 2 3 4"
    out = apply_dry(torch.zeros((1, 6)), history, dry, frozenset())
    assert out[0].tolist() == pytest.approx([0, 0, 0, 0, -0.8 * 1.75 ** (3 - 2), 0])
    # a longer repeat costs more: base ** (length - allowed)
    long = apply_dry(torch.zeros((1, 6)), torch.tensor([[5, 1, 2, 3, 4, 5, 1, 2, 3]]), dry, frozenset())
    assert float(long[0, 4]) == pytest.approx(-0.8 * 1.75 ** (4 - 2))
    # shorter than allowed: no penalty
    short = apply_dry(torch.zeros((1, 6)), torch.tensor([[3, 4, 1, 3]]), dry, frozenset())
    assert short[0].tolist() == [0.0] * 6
    # a sequence breaker inside the repeat stops it (2 breaks "1 2 3": only "3" matches, length 1)
    broken = apply_dry(torch.zeros((1, 6)), history, dry, frozenset({2}))
    assert broken[0].tolist() == [0.0] * 6
    # the last token a breaker: nothing; the follower a breaker: never penalised
    assert apply_dry(torch.zeros((1, 6)), history, dry, frozenset({3}))[0].tolist() == [0.0] * 6
    assert apply_dry(torch.zeros((1, 6)), history, dry, frozenset({4}))[0].tolist() == [0.0] * 6
    # the range: only the last 4 tokens are looked at ("1 2 3" once): nothing to repeat
    assert apply_dry(torch.zeros((1, 6)), history, dry.with_(dry_range=4), frozenset())[0].tolist() == [0.0] * 6
    assert apply_dry(torch.zeros((1, 6)), history, PLAIN, frozenset())[0].tolist() == [0.0] * 6  # 0 = off


def test_dry_also_steers_greedy_and_bans_mask_a_token():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.5]])
    history = torch.tensor([[1, 2, 3, 4, 1, 2, 3]])
    greedy = PLAIN.with_(temperature=0)
    assert int(choose_next(logits, history, greedy, None)) == 4
    assert int(choose_next(logits, history, greedy.with_(dry_multiplier=1.0), None)) == 5
    assert int(choose_next(logits, history, greedy, None, Context(banned=[{4}]))) == 5



def test_bans_bias_and_penalty_share_one_copy_that_leaves_the_callers_logits_as_they_were():
    from storyloom.engine.logits import _ban, apply_bias, apply_repetition_penalty

    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5, 1.0], [1.0, 4.0, -2.0, 0.0, 2.5]])
    history = torch.tensor([[2, 3, 2, 1], [1, 1, 4, 0]])  # a token seen twice is penalised once
    bans, bias = [{2}, set()], [{}, {3: 3.5}]  # each changes a row's pick
    one_by_one = apply_repetition_penalty(apply_bias(_ban(logits, bans), bias), history, 1.3, 0)
    work = logits.clone()
    _ban(work, bans, inplace=True)
    apply_bias(work, bias, inplace=True)
    assert apply_repetition_penalty(work, history, 1.3, 0, inplace=True) is work
    assert torch.equal(work, one_by_one)
    before = logits.clone()
    settings = PLAIN.with_(temperature=0, repetition_penalty=1.3)
    picked = choose_next(logits, history, settings, None, Context(banned=bans, bias=bias))
    assert picked.tolist() == one_by_one.argmax(-1).tolist() == [0, 3]
    assert torch.equal(logits, before)  # the step's logits are read again (the drawn token's log-prob)

def test_settings_for_the_new_samplers_are_checked_and_round_trip():
    for name, value in (("min_p", 1.0), ("min_p", -0.1), ("dry_multiplier", -1), ("dry_base", 1.0),
                        ("dry_allowed_length", 0), ("dry_range", -1), ("xtc_threshold", 0.6),
                        ("xtc_probability", 1.5), ("dry_sequence_breakers", "\n"), ("banned", ("",)),
                        ("banned", ("  ",)), ("min_p", "a lot"), ("min_new_tokens", -1), ("min_new_tokens", 1.5)):
        with pytest.raises(SettingsError, match=name):
            SamplerSettings(**{name: value})
    s = SamplerSettings(min_p=0.05, dry_multiplier=0.8, dry_sequence_breakers=["\n", "::"], banned=["a shiver"],
                        xtc_probability=0.5)
    assert SamplerSettings.from_dict(s.to_dict()) == s
    assert s.to_dict()["banned"] == ["a shiver"]


# -- phrase banning on text ----------------------------------------------------------------
def test_banned_phrases_match_any_case_and_whole_words_only():
    ban = PhraseBan(["dragon", "shivers down"])
    assert ban.find("A Dragon! ").start == 2
    assert ban.find("a dragonfly") is None
    assert ban.find("the dragon", final=False) is None  # "dragon" could still become "dragonfly"
    assert ban.find("the dragon", final=True).start == 4
    assert ban.find("It sent SHIVERS DOWN her spine").phrase == "shivers down"
    assert ban.find("a snapdragon.") is None


def test_text_that_could_become_a_banned_phrase_is_held_back():
    ban = PhraseBan(["shivers down"])
    assert ban.hold("It sent shiv") == 4
    assert ban.hold("It sent shivers d") == 9
    assert ban.hold("It sent shivers") == 7
    assert ban.hold("It sent ") == 0
    assert ban.hold("outshiv") == 0  # not at a word start
    assert token_at([0, 3, 7, 12], 8) == 2 and token_at([0, 3, 7, 12], 0) == 0 and token_at([0, 3], 99) == 1


# -- both decode paths ---------------------------------------------------------------------
GREEDY = SamplerSettings(temperature=0, max_new_tokens=40, repetition_penalty=1.0)
PROMPT = "You open the door. The room beyond is dark"


def _spy(monkeypatch):
    """Record each step's logits (after the model), the history, and the token the loop chose."""
    return spy_steps(monkeypatch, lambda history, context: history.clone())


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_dry_keeps_the_decode_loop_from_repeating_on_both_paths(tiny, engine, monkeypatch):
    gen = on_path(tiny, engine)
    seen = _spy(monkeypatch)
    gen.generate(PROMPT, GREEDY)
    without = [int(t) for _, _, t in seen]
    assert _repeats(seen[0][1][0].tolist(), without, 3)  # the tiny model loops: the test can fail
    seen.clear()
    dry = GREEDY.with_(dry_multiplier=5.0, dry_base=4.0, dry_allowed_length=2, dry_sequence_breakers=("\x07",))
    gen.generate(PROMPT, dry)
    chosen = [int(t) for _, _, t in seen]
    assert chosen != without
    breakers = gen.sampler_context(dry).dry_breakers
    for logits, history, token in seen:  # every step took the best token after DRY's penalty
        assert int(token) == int(apply_dry(logits.float(), history, dry, breakers).argmax())
    # and a repeat DRY penalised was one the plain loop chose: the penalty is what changed the text
    first = next(i for i, (a, b) in enumerate(zip(without, chosen)) if a != b)
    logits, history, _ = seen[first]
    assert float(apply_dry(logits.float(), history, dry, breakers)[0, without[first]]) < float(logits[0, without[first]])


def _repeats(prompt: list[int], out: list[int], n: int) -> bool:
    """Does a generated token complete an n-gram that already occurred earlier?"""
    ids = prompt + out
    for end in range(len(prompt) + 1, len(ids) + 1):
        gram = tuple(ids[end - n:end])
        if len(gram) == n and any(tuple(ids[i:i + n]) == gram for i in range(0, end - n)):
            return True
    return False


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_min_p_and_xtc_hold_on_both_paths(tiny, engine, monkeypatch):
    gen = on_path(tiny, engine)
    seen = _spy(monkeypatch)
    settings = SamplerSettings(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, min_p=0.3,
                               max_new_tokens=30, seed=5)
    gen.generate(PROMPT, settings)
    for logits, _, token in seen:
        p = torch.softmax(logits[0].float(), -1)
        assert float(p[int(token)]) >= 0.3 * float(p.max()) - 1e-6
    seen.clear()
    xtc = settings.with_(min_p=0.0, temperature=4.0, xtc_threshold=0.004, xtc_probability=1.0)
    gen.generate(PROMPT, xtc)
    fired = 0
    protect = gen.sampler_context(xtc).xtc_protect
    for logits, _, token in seen:
        p = torch.softmax(logits[0].float() / xtc.temperature, -1)
        above = sorted(torch.nonzero(p >= 0.004).flatten().tolist(), key=lambda i: float(p[i]))
        if len(above) >= 2 and not set(above[1:]) & protect:
            fired += 1
            assert int(token) not in above[1:]  # every top choice but the least likely is gone
    assert fired  # the tiny model is peaked enough that XTC had work to do


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_a_banned_phrase_never_appears_and_both_paths_agree(tiny, engine):
    gen = on_path(tiny, engine)
    plain = gen.generate(PROMPT, GREEDY)
    words = [w for w in plain.replace("\ufffd", " ").split() if w.isalpha()]
    assert words, plain
    banned = gen.generate(PROMPT, GREEDY.with_(banned=(words[0],)))
    assert PhraseBan([words[0]]).find(banned, final=True) is None
    assert banned != plain
    # the cut is at the phrase: what came before it is the same text
    start = PhraseBan([words[0]]).find(plain, final=True).start
    assert banned.startswith(plain[:start].rstrip("\ufffd")[: max(0, start - 8)])
    streamed = list(gen.stream(PROMPT, GREEDY.with_(banned=(words[0],))))
    assert "".join(streamed) == banned  # nothing shown was taken back
    reference = on_path(tiny, "reference").generate(PROMPT, GREEDY.with_(banned=(words[0],)))
    assert banned == reference
    rows = gen.candidates(PROMPT, 2, GREEDY.with_(banned=(words[0],), temperature=1.0, seed=2))
    assert len(rows) == 2 and all(PhraseBan([words[0]]).find(r, final=True) is None for r in rows)


def test_a_phrase_split_across_tokens_is_backed_out_of_on_the_real_model(real_model):
    settings = SamplerSettings(temperature=0, max_new_tokens=40, repetition_penalty=1.0)
    prompt = "The knight drew his sword and faced the"
    plain = real_model.generate(prompt, settings)
    phrase = " ".join(w.strip(".,!?;:") for w in plain.split()[1:3])  # two words: several tokens
    assert len(real_model.encode(" " + phrase, special=False)) >= 2
    assert PhraseBan([phrase]).find(plain, final=True) is not None
    out = real_model.generate(prompt, settings.with_(banned=(phrase,)))
    assert PhraseBan([phrase]).find(out, final=True) is None and out.strip()


def test_the_sampler_bench_reports_each_sampler(tiny_model_dir):
    from storyloom.engine import sampler_bench

    result = sampler_bench.samplers(str(tiny_model_dir), history_tokens=64, repeats=2, decode_tokens=4)
    assert result["vocabulary"] == 400 and result["history_tokens"] >= 32
    assert set(result["added_ms_per_token"]) == {"min_p", "min_p_full_vocabulary", "dry", "xtc", "all_three",
                                                 "banned_phrases_5"}
    assert result["decode_ms_per_token"] > 0

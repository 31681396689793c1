"""The generator on a tiny random model: stops, cancel, seeds, candidates, scores, settings."""
from __future__ import annotations

import threading

import pytest

from storyloom.engine.generate import StopScanner, cut_at_stops
from storyloom.engine.sampling import SamplerSettings, SettingsError

GREEDY = SamplerSettings(temperature=0, max_new_tokens=30, repetition_penalty=1.0)
SAMPLED = SamplerSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=30, seed=11)
PROMPT = "You open the door."


def test_stream_yields_pieces_that_join_to_generate(tiny):
    pieces = list(tiny.stream(PROMPT, GREEDY))
    assert len(pieces) > 3
    assert "".join(pieces) == tiny.generate(PROMPT, GREEDY)
    assert tiny.last_stats.new_tokens == 30


def test_stop_string_keeps_text_before_it_and_drops_the_stop(tiny):
    full = tiny.generate(PROMPT, GREEDY)
    stop = full[6:9]
    assert stop.strip(), full
    expected = full[: full.find(stop)]
    got = tiny.generate(PROMPT, GREEDY.with_(stop=(stop,)))
    assert got == expected
    assert stop not in got


def test_stop_scanner_holds_back_a_partial_stop_across_pieces():
    scanner = StopScanner(["\n>"])
    text = ""
    shown = ""
    for piece in ["The door", " opens.\n", "> look"]:
        text += piece
        shown += scanner.feed(text)
        if piece == " opens.\n":
            assert shown == "The door opens."  # the newline might start "\n>": held
    assert scanner.stopped
    assert shown == "The door opens."


def test_stop_scanner_releases_held_text_when_no_stop_follows():
    scanner = StopScanner(["\n>"])
    shown = scanner.feed("Line one\n")
    shown += scanner.finish("Line one\n")
    assert shown == "Line one\n"
    assert cut_at_stops("a > b", ["> "]) == ("a ", True)
    assert cut_at_stops("plain", ["> "]) == ("plain", False)


def test_cancel_is_honoured_within_one_token(tiny):
    cancel = threading.Event()
    got = []
    for piece in tiny.stream(PROMPT, GREEDY.with_(max_new_tokens=100), cancel):
        got.append(piece)
        cancel.set()
    assert len(got) == 1
    assert tiny.last_stats.new_tokens <= 2


def test_cancel_before_start_produces_nothing(tiny):
    cancel = threading.Event()
    cancel.set()
    assert tiny.generate(PROMPT, GREEDY, cancel) == ""


def test_same_seed_same_text_other_seed_other_text(tiny):
    a = tiny.generate(PROMPT, SAMPLED)
    b = tiny.generate(PROMPT, SAMPLED)
    c = tiny.generate(PROMPT, SAMPLED.with_(seed=12))
    assert a == b
    assert a != c


def test_candidates_count_independence_and_seed(tiny):
    cands = tiny.candidates(PROMPT, 5, SAMPLED)
    assert len(cands) == 5
    assert all(isinstance(c, str) and c for c in cands)
    assert len(set(cands)) > 1, "candidates from one batch must be sampled independently"
    assert tiny.candidates(PROMPT, 5, SAMPLED) == cands
    assert tiny.last_stats.new_tokens > 30  # one batched call produced all of them


def test_greedy_candidates_match_the_single_stream(tiny):
    single = tiny.generate(PROMPT, GREEDY)
    assert tiny.candidates(PROMPT, 3, GREEDY) == [single] * 3


def test_candidates_stop_strings(tiny):
    full = tiny.generate(PROMPT, GREEDY)
    stop = full[6:9]
    assert tiny.candidates(PROMPT, 2, GREEDY.with_(stop=(stop,))) == [full[: full.find(stop)]] * 2


def test_score_prefers_the_models_own_continuation(tiny):
    own = tiny.generate(PROMPT, GREEDY)
    junk = "zq xv kj wq pz zz qq xx"
    assert tiny.score(PROMPT, own) > tiny.score(PROMPT, junk)
    scores = tiny.score_many(PROMPT, [junk, own, ""])
    assert scores[1] > scores[0]
    assert scores[2] == float("-inf")


def test_shared_prefix_scores_match_scoring_each_row_alone(tiny):
    import torch

    conts = [" The rain fell.", " You open the door and look", "", " zq"]
    prompt_ids = tiny.encode(PROMPT)
    expected = []
    for c in conts:
        ids = tiny.encode(c, special=False)
        if not ids:
            expected.append(float("-inf"))
            continue
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float(), -1)
        rows = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(ids))
        expected.append(float(logp[rows, torch.tensor(ids)].mean()))
    got = tiny.score_many(PROMPT, conts)
    assert got[2] == float("-inf")
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=1e-4)


def test_candidates_report_progress_each_step(tiny):
    steps = []
    out = tiny.candidates(PROMPT, 3, GREEDY.with_(max_new_tokens=7), on_step=steps.append)
    assert len(out) == 3
    assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= 7


def test_over_long_prompt_never_overflows_the_context(tiny):
    prompt = "The rain fell on the city all night. " * 200  # far past 256 positions
    assert tiny.count_tokens(prompt) > tiny.context_length
    out = tiny.generate(prompt, GREEDY.with_(max_new_tokens=10))
    assert isinstance(out, str)
    assert tiny.last_stats.prompt_tokens + 10 <= tiny.context_length


@pytest.mark.parametrize(
    "field,value",
    [("temperature", -0.1), ("temperature", "hot"), ("top_p", 0), ("top_p", 1.5), ("top_k", -1),
     ("top_k", 2.5), ("typical_p", 0), ("repetition_penalty", 0.5), ("repetition_range", -3),
     ("max_new_tokens", 0), ("stop", ("",)), ("stop", "\n"), ("seed", "x")],
)
def test_bad_settings_are_rejected_naming_the_field(field, value):
    with pytest.raises(SettingsError, match=field):
        SamplerSettings(**{field: value})


def test_settings_round_trip_and_unknown_keys():
    s = SamplerSettings(temperature=0.5, stop=["\n>"], seed=3)
    assert SamplerSettings.from_dict(s.to_dict()) == s
    with pytest.raises(SettingsError, match="warmth"):
        SamplerSettings.from_dict({"warmth": 1})


def test_sampler_filters_keep_the_best_token():
    import torch

    from storyloom.engine.logits import _top_p, _typical, apply_repetition_penalty

    logits = torch.tensor([[5.0, 1.0, 0.5, -2.0]])
    kept = _top_p(logits, 0.5)
    assert torch.isfinite(kept[0, 0]) and torch.isinf(kept[0, 1:]).all()
    assert torch.isfinite(_typical(logits, 0.2)).sum() >= 1
    penalised = apply_repetition_penalty(logits, torch.tensor([[0, 3]]), 2.0, 0)
    assert penalised[0, 0] == 2.5 and penalised[0, 3] == -4.0 and penalised[0, 1] == 1.0
    windowed = apply_repetition_penalty(logits, torch.tensor([[0, 3]]), 2.0, 1)
    assert windowed[0, 0] == 5.0  # token 0 is outside the one-token window


def test_chat_prompt_falls_back_to_plain_text_without_a_template(tiny):
    assert not tiny.info.chat_template
    assert tiny.chat_prompt([{"role": "user", "content": "Hi"}]) == "Hi\n\n"

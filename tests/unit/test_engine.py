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


def test_greedy_loop_matches_transformers_generate_on_one_and_many_rows(tiny):
    """Our decode loop (in-place KV cache, shared prefill) against the library's reference path."""
    import torch

    ids = tiny.encode(PROMPT)
    settings = GREEDY.with_(max_new_tokens=40)
    with torch.no_grad():
        ref = tiny.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                  do_sample=False, max_new_tokens=40, min_new_tokens=40, pad_token_id=tiny.pad_id)
    expected = ref[0, len(ids):].tolist()
    got = [int(step[0]) for step in tiny._steps(ids, 1, settings, None)]
    assert got == expected
    rows = [step.tolist() for step in tiny._steps(ids, 3, settings, None)]
    assert [r[2] for r in rows] == expected


def test_in_place_cache_survives_growth_and_batch_copies():
    import torch

    from storyloom.engine.kv_cache import ROOM, InPlaceLayer

    layer = InPlaceLayer()
    k = torch.randn(1, 2, 5, 4)
    layer.update(k, k + 1)
    steps = [torch.randn(1, 2, 1, 4) for _ in range(ROOM + 10)]  # past the first buffer
    for s_ in steps:
        keys, values = layer.update(s_, s_ + 1)
    want = torch.cat([k, *steps], dim=2)
    assert torch.equal(keys, want) and torch.equal(values, want + 1)
    layer.batch_repeat_interleave(3)
    new = torch.randn(3, 2, 1, 4)
    keys, _ = layer.update(new, new)
    assert keys.shape == (3, 2, want.shape[2] + 1, 4)
    assert torch.equal(keys[1, :, :-1], want[0]) and torch.equal(keys[:, :, -1:], new)


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


def test_sampling_on_the_best_tokens_keeps_the_distribution():
    import torch

    from storyloom.engine.logits import SUBSET, choose_next

    gen = torch.Generator().manual_seed(0)
    vocab = 5000
    logits = torch.full((4, vocab), -30.0)
    logits[:, [7, 4000, 123]] = torch.tensor([2.0, 1.0, 0.0])  # a peaked distribution
    empty = torch.zeros((4, 0), dtype=torch.long)
    draws = torch.cat([choose_next(logits, empty, SamplerSettings(temperature=1.0, top_p=0.99, top_k=0,
                                                                 repetition_penalty=1.0), gen)
                       for _ in range(500)])
    counts = torch.bincount(draws, minlength=vocab)
    assert set(torch.nonzero(counts).flatten().tolist()) <= {7, 4000, 123}
    share = counts[[7, 4000, 123]].float() / len(draws)
    assert torch.allclose(share, torch.softmax(torch.tensor([2.0, 1.0, 0.0]), 0), atol=0.04)
    top2 = torch.cat([choose_next(logits, empty, SamplerSettings(temperature=1.0, top_k=2, top_p=1.0,
                                                                 repetition_penalty=1.0), gen)
                      for _ in range(100)])
    assert set(top2.tolist()) == {7, 4000}
    flat = torch.zeros((1, vocab))  # the nucleus is wider than the subset: the full vocabulary is used
    wide = torch.cat([choose_next(flat, empty[:1], SamplerSettings(temperature=1.0, top_k=0, top_p=0.9,
                                                                   repetition_penalty=1.0), gen)
                      for _ in range(300)])
    assert int(wide.max()) > SUBSET * 2


def test_lean_engine_greedy_text_equals_the_reference_path(tiny):
    from storyloom.engine.backends.transformers_backend import TransformersGenerator

    lean = TransformersGenerator(tiny.model, tiny.tokenizer, "tiny", engine="lean")
    assert lean.fast is not None and lean.info.extra["engine"] == "lean"
    settings = GREEDY.with_(max_new_tokens=40)
    for prompt in (PROMPT, "The rain fell on the city all night, and nobody slept."):
        assert lean.generate(prompt, settings) == tiny.generate(prompt, settings)
    assert lean.candidates(PROMPT, 3, settings) == tiny.candidates(PROMPT, 3, settings)
    sampled = SAMPLED.with_(max_new_tokens=20)
    assert lean.generate(PROMPT, sampled) == lean.generate(PROMPT, sampled)  # seeded: reproducible


def test_lean_int8_engine_stays_close_and_unknown_engines_are_refused(tiny, monkeypatch):
    import torch

    from storyloom.engine.backends.transformers_backend import TransformersGenerator
    from storyloom.engine.fast_llama import FastLlama, KVState
    from storyloom.engine.models import ModelError

    ids = tiny.encode(PROMPT)
    exact, int8 = FastLlama(tiny.model, "fp32"), FastLlama(tiny.model, "int8")
    a = torch.log_softmax(exact.forward(torch.tensor([ids]), KVState()), -1)
    b = torch.log_softmax(int8.forward(torch.tensor([ids]), KVState()), -1)
    top = a[0].topk(5).indices
    assert (a[0, top] - b[0, top]).abs().max() < 0.5
    quick = TransformersGenerator(tiny.model, tiny.tokenizer, "tiny", engine="lean-int8")
    assert len(quick.generate(PROMPT, GREEDY.with_(max_new_tokens=10))) > 0
    monkeypatch.setenv("STORYLOOM_ENGINE", "warp")
    with pytest.raises(ModelError, match="STORYLOOM_ENGINE"):
        TransformersGenerator(tiny.model, tiny.tokenizer, "tiny")

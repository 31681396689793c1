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


def test_shared_prefix_scores_match_scoring_each_row_alone(tiny, monkeypatch):
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
    got = tiny.score_many(PROMPT, conts)  # in bf16 where the CPU has bf16 units
    assert got[2] == float("-inf")
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=0.02)
    lean = getattr(tiny.fast, "fast", tiny.fast)  # the torch forward that scores
    monkeypatch.setattr(lean, "bf16", False)  # in fp32: the library's numbers, to rounding
    for g, e in zip(tiny.score_many(PROMPT, conts), expected):
        assert g == pytest.approx(e, abs=1e-4)


def test_scores_from_each_tokens_own_log_prob_are_the_log_softmax_ones():
    import torch

    from storyloom.engine.backends.transformers_backend import _mean_token_logprobs, mean_logprobs

    gen = torch.Generator().manual_seed(0)
    first, logits = torch.randn(300, generator=gen) * 4, torch.randn(4, 5, 300, generator=gen) * 4
    conts = [[5, 9, 200, 7, 1, 2], [17], [], [299, 0]]  # right-padded rows, one empty
    want = mean_logprobs(torch.log_softmax(first, -1), torch.log_softmax(logits, -1), conts)
    got = _mean_token_logprobs(first, logits, conts)
    assert got[2] == want[2] == float("-inf")
    assert got == pytest.approx(want, abs=1e-5)


def test_one_token_rows_score_in_bf16_too(tiny, monkeypatch):
    """A row of one token is one position over the prompt's fp32 cache (it crashed on bf16 queries)."""
    lean = getattr(tiny.fast, "fast", tiny.fast)
    if not lean.bf16:
        pytest.skip("this CPU has no bf16 units: scoring runs in fp32 here")
    got = tiny.score_many(PROMPT, [" The"])
    monkeypatch.setattr(lean, "bf16", False)
    assert got == pytest.approx(tiny.score_many(PROMPT, [" The"]), abs=0.05)
    assert len(tiny.token_choices(PROMPT, " The rain")) >= 1


def test_a_one_token_prompt_is_run_once_and_scores_the_same(tiny, monkeypatch):
    import torch

    conts = [" The rain fell.", " You open the door and look"]
    prompt_ids = tiny.encode("\n")
    assert len(prompt_ids) == 1  # the neutral prompt: its cache is kept between calls
    expected = []
    for c in conts:
        ids = tiny.encode(c, special=False)
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float(), -1)
        expected.append(float(logp[torch.arange(len(ids)), torch.tensor(ids)].mean()))
    assert tiny.score_many("\n", conts) == pytest.approx(expected, abs=0.02)  # bf16 where the CPU has it
    monkeypatch.setattr(getattr(tiny.fast, "fast", tiny.fast), "bf16", False)
    assert tiny.score_many("\n", conts) == pytest.approx(expected, abs=1e-4)
    # the prompt is not run again, and no row feeds its last token (it predicts nothing scored)
    lean = tiny.fast
    fed = []
    forward = lean.forward
    monkeypatch.setattr(lean, "forward", lambda ids, state, all_logits=False: fed.append(tuple(ids.shape)) or
                        forward(ids, state, all_logits=all_logits))
    again = tiny.score_many("\n", conts)
    assert again == pytest.approx(expected, abs=1e-4)
    longest = max(len(tiny.encode(c, special=False)) for c in conts)
    from storyloom.engine.backends.transformers_backend import _stepped_rows

    # short rows go through the native step a position at a time, others in one forward
    stepped = _stepped_rows(lean, torch.Size([2, longest - 1]))
    assert fed == ([(2, 1)] * (longest - 1) if stepped else [(2, longest - 1)])


def test_short_rows_score_the_same_through_the_step_as_through_one_forward(tiny, monkeypatch):
    """The neutral pass's short rows go through the native step a position at a time (where it is
    built): the scores are the torch forward's, to fp32 rounding, for a row shorter than the others too."""
    from storyloom.engine.backends import transformers_backend as tb

    import torch

    conts = [" The rain fell.", " You open", " A gull cried."]
    longest = max(len(tiny.encode(c, special=False)) for c in conts)
    if not tb._stepped_rows(tiny.fast, torch.Size([len(conts), longest - 1])):
        pytest.skip("no native step here: every row goes through the torch forward")
    stepped = tiny.score_many("\n", conts)
    monkeypatch.setattr(tb, "STEPPED_ROW_TOKENS", 0)
    assert not tb._stepped_rows(tiny.fast, torch.Size([len(conts), longest - 1]))
    # where the CPU has bf16 units the forward scores in bf16 (0.006 off here): compare in fp32
    monkeypatch.setattr(tiny.fast.fast, "bf16", False)
    assert tiny.score_many("\n", conts) == pytest.approx(stepped, abs=1e-4)


def test_a_candidate_ends_once_the_caller_calls_it_complete(tiny):
    full = tiny.candidates(PROMPT, 2, GREEDY)
    calls = []
    cut = tiny.candidates(PROMPT, 2, GREEDY, complete=lambda text: calls.append(text) or len(text) >= 12)
    assert calls  # asked after the tokens came
    for whole, short in zip(full, cut):
        assert len(whole) > 12 and whole.startswith(short) and 12 <= len(short) < len(whole)
        # it ended at the first text the caller called complete
        assert short in calls and all(len(t) < 12 for t in calls if short.startswith(t) and t != short)


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


def _path(tiny, engine):
    from storyloom.engine.backends.transformers_backend import TransformersGenerator

    return TransformersGenerator(tiny.model, tiny.tokenizer, "tiny", engine=engine)


@pytest.mark.parametrize("engine", ["native"])
def test_fast_paths_greedy_text_equals_the_reference_path(tiny, engine):
    fast, reference = _path(tiny, engine), _path(tiny, "reference")
    assert fast.fast is not None and fast.info.extra["engine"] == engine
    assert reference.fast is None and reference.info.extra["engine"] == "reference"
    settings = GREEDY.with_(max_new_tokens=40)
    for prompt in (PROMPT, "The rain fell on the city all night, and nobody slept."):
        assert fast.generate(prompt, settings) == reference.generate(prompt, settings)
    assert fast.candidates(PROMPT, 3, settings) == reference.candidates(PROMPT, 3, settings)
    sampled = SAMPLED.with_(max_new_tokens=20)
    assert fast.generate(PROMPT, sampled) == fast.generate(PROMPT, sampled)  # seeded: reproducible


def _gguf_like_model(seed: int = 3, hidden: int = 64, intermediate: int = 128):
    """A tiny Llama whose weights lie on GGUF grids, as a converted Q4_1 GGUF's do: matrices on
    Q4_1 (32 per group, 16 levels from the group's min), the tied embedding on Q8_0."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2:
                continue
            g = p.view(p.shape[0], -1, 32)
            if "embed" in name:
                g.mul_(8)
                step = (g.abs().amax(-1, keepdim=True) / 127).half().float()  # GGUF's fp16 scales
                g.copy_(torch.round(g / step) * step)
            else:
                low, step = g.amin(-1, keepdim=True), (g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)) / 15
                if ".0." in name:  # layer 0 keeps its scales in fp16 as GGUF does, layer 1 in fp32
                    low, step = low.half().float(), step.half().float()
                g.copy_(torch.round((g - low) / step) * step + low)
    return model


def test_native_step_packs_grid_weights_exactly_and_matches_the_library_logits():
    import torch

    from storyloom.engine import native
    from storyloom.engine.fast_llama import KVState
    from storyloom.engine.native_llama import NativeLlama, pack

    assert native.library() is not None, native.unavailable()
    model = _gguf_like_model()
    step = NativeLlama.build(model)
    # layer 0's Q4_1 scales are fp16 (GGUF blocks), layer 1's are not (kept as fp32), the head is Q8_0
    assert step.kinds == {"q4_1": 7, "f32": 7, "q8_0": 1}
    kinds = [getattr(layer, f).type for layer in step._layers for f in ("q", "k", "v", "o", "gate", "up", "down")]
    assert kinds == [native.Q4_1] * 7 + [native.F32] * 7
    # in 16-row tiles where the build has their kernels (the step below runs on them)
    tiles = native.isa() in ("avx2", "avx512vnni")  # the builds with tiled kernels
    grid = [getattr(step._layers[0], f) for f in ("q", "k", "v", "o", "gate", "up", "down")] + [step.model.lm_head]
    assert [bool(m.flags & native.TILED) for m in grid] == [tiles] * 8
    weight = model.model.layers[0].self_attn.q_proj.weight
    kind, blocks = pack(weight)
    rebuilt = torch.empty(weight.shape)
    native.library().sl_dequant(kind, blocks.data_ptr(), weight.shape[0], weight.shape[1], rebuilt.data_ptr(), 1)
    assert torch.equal(rebuilt, weight)  # the blocks hold exactly the model's weights
    assert pack(torch.randn(8, 64))[0] == native.F32  # off the grid: kept as it is
    assert pack(torch.randn(8, 48))[0] == native.F32  # not a whole number of groups

    prompt = torch.tensor([[1, 5, 9, 33, 2, 70]])
    state = KVState()
    step.forward(prompt, state)
    step.expand(state, 2)
    ids = prompt.repeat(2, 1)
    for token in ([4, 8], [60, 61], [7, 7]):  # two rows, different tokens: the batched step
        ids = torch.cat([ids, torch.tensor([token]).T], dim=1)
        ours = step.forward(torch.tensor([token]).T, state)
        theirs = model(input_ids=ids).logits[:, -1]
        # the packed matrices are EXACT (fp32 inputs): the library's logits, to rounding
        assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_without_a_compiler_the_lean_path_runs(tiny, monkeypatch):
    from storyloom.engine import native
    from storyloom.engine.models import ModelError

    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setattr(native, "_why_not", None)
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CC", raising=False)
    fallback = _path(tiny, "native")
    assert fallback.info.extra["engine"] == "lean" and "compiler" in native.unavailable()
    assert fallback.generate(PROMPT, GREEDY) == _path(tiny, "reference").generate(PROMPT, GREEDY)
    for retired in ("lean", "native-q8", "warp"):
        monkeypatch.setenv("STORYLOOM_ENGINE", retired)
        with pytest.raises(ModelError, match="STORYLOOM_ENGINE"):
            _path(tiny, None)


def test_long_prompts_prefill_in_bf16_and_stay_close_to_the_library():
    """A prompt of 64+ tokens runs its matmuls in bf16 (the C helpers do the rest); the logits and
    the KV cache it leaves for decoding stay close to fp32, and decoding from it works."""
    import torch

    from storyloom.engine import native
    from storyloom.engine.fast_llama import BF16_PROMPT_MIN, FastLlama, KVState
    from storyloom.engine.native_llama import NativeLlama

    model = _gguf_like_model()
    # bf16 copies of the weights on any CPU, to exercise the path (bf16 units only make it fast;
    # setting the flag after the build left a CPU without them no copies to multiply by)
    step = NativeLlama(FastLlama(model, bf16_prompts=True, fuse=False), model, native.library())
    assert step.fast.bf16
    torch.manual_seed(0)
    prompt = torch.randint(3, 96, (1, BF16_PROMPT_MIN + 40))
    state = KVState()
    ours = torch.log_softmax(step.forward(prompt, state), -1)
    theirs = model(input_ids=prompt, use_cache=True)
    expected = torch.log_softmax(theirs.logits[:, -1], -1)
    assert 0 < (ours - expected).abs().max() < 0.02  # bf16, not fp32: close, not equal
    count = prompt.shape[1]
    for layer in (0, 1):  # [1, kv_heads, T, head_dim], keys rotated
        past = theirs.past_key_values.layers[layer]
        assert torch.allclose(state.cache[layer, 0, :, :, :count], past.keys, atol=0.01)
        assert torch.allclose(state.cache[layer, 1, :, :, :count], past.values, atol=0.01)
    ids = prompt
    for token in (5, 6, 7):
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        ours = torch.log_softmax(step.forward(torch.tensor([[token]]), state), -1)
        expected = torch.log_softmax(model(input_ids=ids).logits[:, -1], -1)
        assert (ours - expected).abs().max() < 0.02


def test_every_kernel_level_this_cpu_runs_gives_the_same_logits(tmp_path, monkeypatch):
    """The AVX2 and plain-C kernels (laptops without AVX-512) agree with the library forward."""
    import torch

    from storyloom.engine import native
    from storyloom.engine.fast_llama import FastLlama, KVState
    from storyloom.engine.native_llama import NativeLlama

    if native.compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    model = _gguf_like_model()
    runs = native.cpu_levels(native.compiler())
    for level in runs:
        step = NativeLlama(FastLlama(model), model, native.build(native.compiler(), level))
        state = KVState()
        ids = torch.tensor([[1, 5, 9, 33, 2, 70]])
        step.forward(ids, state)
        for token in (4, 60, 7):
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            ours = step.forward(torch.tensor([[token]]), state)
            theirs = model(input_ids=ids).logits[:, -1]
            assert torch.allclose(ours, theirs, atol=1e-4), (level, (ours - theirs).abs().max())


def test_the_lean_forward_in_bf16_stays_close_for_fresh_and_continued_prompts():
    """The torch path's own bf16 prompt code (no C compiler): a fresh long prompt, then a long
    continuation after it (masked attention over the cache), both close to the library."""
    import torch

    from storyloom.engine.fast_llama import BF16_PROMPT_MIN, FastLlama, KVState

    model = _gguf_like_model()
    lean = FastLlama(model, bf16_prompts=True)
    torch.manual_seed(1)
    first, more = torch.randint(3, 96, (1, BF16_PROMPT_MIN + 10)), torch.randint(3, 96, (1, BF16_PROMPT_MIN + 5))
    state = KVState()
    ours = torch.log_softmax(lean.forward(first, state), -1)
    assert (ours - torch.log_softmax(model(input_ids=first).logits[:, -1], -1)).abs().max() < 0.02
    ours = torch.log_softmax(lean.forward(more, state), -1)
    both = torch.cat([first, more], dim=1)
    assert (ours - torch.log_softmax(model(input_ids=both).logits[:, -1], -1)).abs().max() < 0.02


def test_models_the_fast_paths_do_not_know_fall_back_to_the_library_forward(tiny):
    """A GPT-2 (not Llama-shaped) runs on the reference path, with the same decode loop."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from storyloom.engine.backends.transformers_backend import TransformersGenerator

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tiny.tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=1, eos_token_id=2)
    gpt2 = TransformersGenerator(GPT2LMHeadModel(config), tiny.tokenizer, "gpt2", engine="native")
    assert gpt2.fast is None and gpt2.info.extra["engine"] == "reference"
    text = gpt2.generate(PROMPT, GREEDY.with_(max_new_tokens=12))
    assert gpt2.last_stats.new_tokens == 12 and len(text) > 0
    assert len(gpt2.candidates(PROMPT, 2, GREEDY.with_(max_new_tokens=5))) == 2


def test_packed_weights_are_kept_for_the_next_load_and_a_damaged_file_is_packed_again(tmp_path, monkeypatch):
    import shutil

    import torch
    from transformers import LlamaForCausalLM

    from storyloom.engine.fast_llama import KVState
    from storyloom.engine.native_llama import NativeLlama

    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    _gguf_like_model(hidden=256, intermediate=512).save_pretrained(tmp_path / "model")  # 1.2M weights

    def load():
        step = NativeLlama.build(LlamaForCausalLM.from_pretrained(tmp_path / "model"))
        state = KVState()
        step.forward(torch.tensor([[1, 5, 9]]), state)
        return step, step.forward(torch.tensor([[7]]), state)

    first, expected = load()
    packs = list((tmp_path / "models" / "native").glob("packed-*.safetensors"))
    assert first.pack_cache == "written" and len(packs) == 1
    again, logits = load()
    assert again.pack_cache == "read" and again.kinds == first.kinds == {"q4_1": 7, "f32": 7, "q8_0": 1}
    assert torch.equal(logits, expected)
    packs[0].write_bytes(b"not a safetensors file")
    repaired, logits = load()
    assert repaired.pack_cache == "written" and torch.equal(logits, expected)
    assert len(list((tmp_path / "models" / "native").glob("packed-*"))) == 1
    # another model's pack sweeps this one away once its folder is gone
    shutil.copytree(tmp_path / "model", tmp_path / "other")
    shutil.rmtree(tmp_path / "model")
    assert NativeLlama.build(LlamaForCausalLM.from_pretrained(tmp_path / "other")).pack_cache == "written"
    assert len(list((tmp_path / "models" / "native").glob("packed-*"))) == 1


def test_a_rows_text_before_its_stop_is_scanned_only_where_a_stop_is_in_it(monkeypatch):
    import pytest

    from storyloom.engine import generate
    from storyloom.engine.backends import transformers_backend as tb

    stops = ("<|im_end|>", "\n\n\n")
    assert tb._before_stop("A door.<|im_end|>More", stops) == "A door."
    assert tb._before_stop("A door.\n\n\nMore\ufffd", stops) == "A door."
    # asked for every row at every step: a text with no stop in it is not scanned
    monkeypatch.setattr(generate, "StopScanner", lambda _: pytest.fail("scanned a text with no stop in it"))
    assert tb._before_stop("A door opens<|im_\ufffd", stops) == "A door opens<|im_"  # half a stop is text
    assert tb._before_stop("", stops) == ""

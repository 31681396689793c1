"""Issue 16: .gguf files run from their own blocks (gguf_file, gguf_tokenizer, gguf_native).

Every model here is a tiny random-weight GGUF the test writes with gguf-py (gguf_synth), and the
reference is transformers' own GGUF loader (which dequantizes with gguf-py and undoes llama.cpp's
q/k permutation itself): an independent reading of the same file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from storyloom.engine import gguf_file, gguf_native, gguf_synth, gguf_tokenizer
from storyloom.engine.fast_llama import KVState
from storyloom.engine.gguf_synth import T, Shape

CASES = {  # name: (shape, mix)
    "llama-q8_0-tied": (Shape("llama", tied=True), "q8_0"),
    "llama-q4_k_m-untied": (Shape("llama", tied=False, layers=3), "q4_k_m"),
    "mistral-q5_k": (Shape("mistral", tied=False), "q5_k"),
    "qwen2-q8_0-biases": (Shape("qwen2", tied=False), "q8_0"),
    "qwen3-q6_k-norms": (Shape("qwen3", head_dim=128, tied=True), "q6_k"),
    "llama-q4_0": (Shape("llama"), "q4_0"),
    "llama-q4_1": (Shape("llama"), "q4_1"),
    "llama-q5_0": (Shape("llama"), "q5_0"),
    "llama-f16": (Shape("llama"), "f16"),
    "llama-bf16": (Shape("llama"), "bf16"),
}


@pytest.fixture(scope="module")
def lib_kinds():
    """'torch' always; 'native' too where the C step reads GGUF blocks (built in the shared
    models folder before any test points STORYLOOM_MODELS elsewhere)."""
    return ["torch"] + (["native"] if gguf_native.native_gguf() is not None else [])


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {name: gguf_synth.write(folder / f"{name}.gguf", shape, mix, seed=i)
            for i, (name, (shape, mix)) in enumerate(CASES.items())}


def _reference(path: Path):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if gguf_file.read(path, use_cache=False).arch == "mistral":
        # transformers' GGUF loader knows no "mistral" architecture: its twin, the same tensors
        # under "llama" (what llama.cpp's converter writes for Mistral models), is the reference
        shape, mix = CASES[path.stem]
        twin = path.with_name(path.stem + "-as-llama.gguf")
        gguf_synth.write(twin, Shape(**{**shape.__dict__, "arch": "llama"}), mix, seed=list(CASES).index(path.stem))
        path = twin
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def _forward(path: Path, kind: str) -> gguf_native.GGUFForward:
    header = gguf_file.read(path, use_cache=False)
    plan = gguf_file.plan(header)
    assert not isinstance(plan, str), plan
    return gguf_native.GGUFForward(header, plan, gguf_native.native_gguf() if kind == "native" else None)


def _lib(kind, lib_kinds):
    if kind not in lib_kinds:
        pytest.skip("the native step here does not read GGUF blocks")


# -- agreement with transformers --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["torch", "native"])
@pytest.mark.parametrize("name", list(CASES))
def test_logits_after_a_prompt_match_transformers(files, name, kind, lib_kinds):
    """A short prompt (fp32 in torch, or token by token in C) and the next token agree with the
    reference. The torch path dequantizes exactly and sums in fp32: 1e-3 on logits of size ~3 (it
    agrees to ~2e-6). The C step quantizes its activations to 8 bits per block of 32 for the
    integer dot products, as llama.cpp does (each value moves by up to 1/254 of its block's
    largest): that moves the logits by 1-2% of their norm here (at most 2.3% seen over these
    files; 0 for F16/BF16, whose kernels are float), so it must stay within 4%. A wrong rope,
    permutation, bias or norm moves them by tens of percent."""
    _lib(kind, lib_kinds)
    path = files[name]
    fwd, ref = _forward(path, kind), _reference(path)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, fwd.vocab, (1, 7), generator=g)
    state = KVState()
    first = fwd.forward(ids, state)
    second = fwd.forward(torch.tensor([[11]]), state)
    with torch.no_grad():
        expected = ref(torch.cat([ids, torch.tensor([[11]])], 1)).logits[0]
    for ours, want in ((first[0], expected[-2]), (second[0], expected[-1])):
        if kind == "torch":
            assert torch.allclose(ours, want, atol=1e-3), float((ours - want).abs().max())
        else:
            assert _relative(ours, want) < 0.04


def _relative(ours: torch.Tensor, want: torch.Tensor) -> float:
    return float((ours - want).norm() / want.norm())


@pytest.mark.parametrize("kind", ["torch", "native"])
def test_a_long_prompt_in_bf16_stays_close(files, kind, lib_kinds, monkeypatch):
    """Prompts of 64+ tokens multiply in bf16 (8-bit mantissas: each rounding moves a value by up
    to 2^-9 of itself). Over the tiny model's layers and head that moves logits of std ~0.9 by a
    few hundredths (0.02-0.05 seen); 0.15 is three times that, far below what a wrong weight,
    rope or mask does (whole units)."""
    _lib(kind, lib_kinds)
    path = files["llama-q4_k_m-untied"]
    fwd, ref = _forward(path, kind), _reference(path)
    fwd.bf16 = True  # the bf16 path on any CPU (slow without bf16 units, but the same arithmetic)
    ids = torch.randint(0, fwd.vocab, (1, 80), generator=torch.Generator().manual_seed(2))
    state = KVState()
    ours = fwd.forward(ids, state)[0]  # torch, bf16 (dequantized by C or by gguf-py)
    after = fwd.forward(torch.tensor([[11]]), state)[0]  # the next token: the C step reads that cache
    with torch.no_grad():
        expected = ref(torch.cat([ids, torch.tensor([[11]])], 1)).logits[0]
    assert float((ours - expected[-2]).abs().max()) < 0.15
    assert float((after - expected[-1]).abs().max()) < 0.15 if kind == "torch" else _relative(after, expected[-1]) < 0.04


def test_wrong_rope_is_caught_by_these_bounds(files):
    """The bounds above are not loose enough to hide a mistake: rotating halves instead of
    adjacent pairs on a llama file (the converter's permutation ignored) moves the logits far
    beyond them."""
    path = files["llama-q4_k_m-untied"]
    right, wrong = _forward(path, "torch"), _forward(path, "torch")
    wrong.plan = wrong.plan.__class__(**{**wrong.plan.__dict__, "rope_neox": True})
    ids = torch.randint(0, right.vocab, (1, 12), generator=torch.Generator().manual_seed(5))
    assert _relative(wrong.forward(ids, KVState())[0], right.forward(ids, KVState())[0]) > 0.1


def test_a_batch_continues_like_single_rows(files, lib_kinds):
    """Candidates share the prompt's cache: each row of a batch gets the logits it would alone."""
    kind = lib_kinds[-1]
    fwd = _forward(files["qwen2-q8_0-biases"], kind)
    prompt = torch.tensor([[5, 6, 7, 8, 9, 10]])
    state = KVState()
    fwd.forward(prompt, state)
    fwd.expand(state, 3)
    batched = fwd.forward(torch.tensor([[20], [21], [22]]), state)
    for row, token in enumerate((20, 21, 22)):
        alone = KVState()
        fwd.forward(prompt, alone)
        assert torch.allclose(batched[row], fwd.forward(torch.tensor([[token]]), alone)[0], atol=1e-4)


def test_all_logits_match_token_by_token(files):
    fwd = _forward(files["llama-q8_0-tied"], "torch")
    state = KVState()
    fwd.forward(torch.tensor([[3, 4, 5]]), state)
    every = fwd.forward(torch.tensor([[6, 7, 8]]), state, all_logits=True)[0]
    again = KVState()
    fwd.forward(torch.tensor([[3, 4, 5]]), again)
    for t, token in enumerate((6, 7, 8)):
        assert torch.allclose(every[t], fwd.forward(torch.tensor([[token]]), again)[0], atol=1e-4)


def test_llama3_rope_factors_and_linear_scaling(tmp_path):
    """Llama 3's rope_freqs tensor divides the frequencies (the reference gets the same
    frequencies from transformers' own llama3 rope formula); linear scaling by metadata
    divides the positions."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head_dim = 64
    config = LlamaConfig(hidden_size=256, num_attention_heads=4, max_position_embeddings=2048,
                         rope_theta=10000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    base = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    assert not torch.allclose(scaled, base)  # the formula scales some frequencies at this size
    path = gguf_synth.write(tmp_path / "l3.gguf", Shape("llama", rope_factors=(base / scaled).tolist()))
    fwd, ref = _forward(path, "torch"), _reference(path)
    assert torch.allclose(fwd.inv_freq, scaled, rtol=1e-5)
    ref.model.rotary_emb.inv_freq = scaled.clone()
    ids = torch.randint(0, fwd.vocab, (1, 40), generator=torch.Generator().manual_seed(3))
    fwd.bf16 = False
    with torch.no_grad():
        assert torch.allclose(fwd.forward(ids, KVState())[0], ref(ids).logits[0, -1], atol=1e-3)
    linear = gguf_synth.write(tmp_path / "lin.gguf", Shape("llama", extra_meta={
        "llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}))
    assert torch.allclose(_forward(linear, "torch").inv_freq, base / 4.0, rtol=1e-5)


# -- what runs natively, and why not --------------------------------------------------------------
def test_the_plan_reads_each_architecture(files):
    plans = {name: gguf_file.plan(gguf_file.read(p, use_cache=False)) for name, p in files.items()}
    assert plans["llama-q8_0-tied"].tied and not plans["llama-q8_0-tied"].rope_neox
    assert not plans["llama-q4_k_m-untied"].tied
    # Q6_K: the head, and attn_v/ffn_down of the last of 3 layers (llama.cpp's use_more_bits)
    assert plans["llama-q4_k_m-untied"].kinds == {"Q4_K": 20, "Q6_K": 3}
    assert plans["qwen2-q8_0-biases"].biases and plans["qwen2-q8_0-biases"].rope_neox
    q3 = plans["qwen3-q6_k-norms"]
    assert q3.qk_norm and q3.head_dim == 128 and q3.heads * q3.head_dim == 512  # wider than dim 256
    assert plans["mistral-q5_k"].arch == "mistral" and not plans["mistral-q5_k"].rope_neox


def test_q4_k_m_mix_follows_llama_cpp():
    mix = gguf_synth.mix_type
    assert mix("q4_k_m", "output.weight", 16, False) == T["Q6_K"]
    assert mix("q4_k_m", "token_embd.weight", 16, True) == T["Q6_K"]  # tied: the head is the embedding
    assert mix("q4_k_m", "token_embd.weight", 16, False) == T["Q4_K"]
    downs = [mix("q4_k_m", f"blk.{i}.ffn_down.weight", 16, True) == T["Q6_K"] for i in range(16)]
    assert downs == [True, True, False, False, True, False, False, True, False, False, True, False, False,
                     True, True, True]
    assert mix("q4_k_m", "blk.3.attn_q.weight", 16, True) == T["Q4_K"]


@pytest.mark.parametrize("change,reason", [
    (dict(shape=Shape("phi3")), "architecture 'phi3' is not one the native step runs"),
    (dict(overrides={"blk.0.ffn_up.weight": 11}), "blk.0.ffn_up.weight is type 11"),  # Q3_K
    (dict(shape=Shape("llama", extra_meta={"llama.rope.scaling.type": "longrope"})), "rope scaling 'longrope'"),
    (dict(shape=Shape("llama", extra_meta={"llama.expert_count": 8})), "mixture of experts"),
])
def test_what_the_native_step_cannot_run_says_why(tmp_path, models, change, reason):
    path = gguf_synth.write(tmp_path / "m.gguf", change.get("shape", Shape()), overrides=change.get("overrides"))
    way, why = gguf_native.route(path)
    assert way == "transformers" and why.startswith("transformers conversion: ") and reason in why
    assert "\n" not in why


def test_route_names_the_native_path_or_its_absence(files, models, monkeypatch):
    way, why = gguf_native.route(files["llama-q4_k_m-untied"])
    if gguf_native.native_gguf() is not None:
        assert way == "native" and why.startswith("native GGUF blocks: llama, 3 layers")
    else:
        assert way == "transformers" and "native step" in why
    assert gguf_native.route(files["llama-q8_0-tied"], engine="reference")[1].endswith("STORYLOOM_ENGINE=reference asks for it")


# -- the header and tokenizer caches ----------------------------------------------------------------
def test_a_truncated_file_is_refused_before_any_pointer(tmp_path, files, models):
    cut = tmp_path / "cut.gguf"
    data = files["llama-q8_0-tied"].read_bytes()
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(gguf_file.GGUFError, match="cut.gguf is damaged"):
        gguf_file.read(cut)
    assert gguf_native.route(cut)[0] == "transformers"


def test_the_header_cache_is_used_checked_and_rebuilt(files, models):
    path = files["llama-q8_0-tied"]
    assert gguf_file.read(path).source == "file"
    assert gguf_file.read(path).source == "cache"
    cached = gguf_file.cache_dir(path) / "header.json"
    data = json.loads(cached.read_text())
    data["tensors"]["blk.0.attn_q.weight"][2] = path.stat().st_size  # points past the end
    cached.write_text(json.dumps(data))
    again = gguf_file.read(path)
    assert again.source == "file"  # rebuilt, never trusted
    assert again.tensors["blk.0.attn_q.weight"].offset < path.stat().st_size
    os.chmod(cached, 0o666)  # writable by others: not read
    assert gguf_file.read(path).source == "file"
    os.chmod(cached.parent, 0o777)
    assert gguf_file.read(path).source == "file"


def test_the_tokenizer_is_built_once_and_rebuilt_when_it_does_not_fit(files, models):
    path = files["llama-q8_0-tied"]
    header = gguf_file.read(path)
    tokenizer = gguf_tokenizer.load(path, header)
    assert len(tokenizer) == gguf_synth.vocab_size("tiny")
    folder = gguf_file.cache_dir(path) / "tokenizer"
    assert (folder / "tokenizer.json").is_file()
    assert gguf_tokenizer._cached(folder, len(tokenizer)) is not None
    # a cache of another vocabulary (a planted or stale one) is not used
    assert gguf_tokenizer._cached(folder, len(tokenizer) + 1) is None
    marker = json.loads((folder / "storyloom.json").read_text())
    (folder / "storyloom.json").write_text(json.dumps({**marker, "tokens": 7}))
    assert len(gguf_tokenizer.load(path, header)) == len(tokenizer)  # rebuilt from the file
    assert json.loads((folder / "storyloom.json").read_text())["tokens"] == len(tokenizer)
    with open(folder / "tokenizer.json", "a") as f:  # edited (or truncated) after it was saved
        f.write(" ")
    assert gguf_tokenizer._cached(folder, len(tokenizer)) is None
    gguf_tokenizer.load(path, header)
    assert gguf_tokenizer._cached(folder, len(tokenizer)) is not None
    os.chmod(folder, 0o777)
    assert gguf_tokenizer._cached(folder, len(tokenizer)) is None


# -- the Generator ------------------------------------------------------------------------------------
def test_the_generator_streams_batches_scores_and_steers(files, models, lib_kinds):
    from storyloom.engine.constrained import open_decoder
    from storyloom.engine.sampling import SamplerSettings

    path = files["qwen3-q6_k-norms"]
    header = gguf_file.read(path)
    lib = gguf_native.native_gguf() if "native" in lib_kinds else None
    gen = gguf_native.load(path, header, gguf_file.plan(header), path.name, lib)
    assert gen.capabilities.batch and gen.capabilities.scoring and gen.capabilities.token_steering
    settings = SamplerSettings(temperature=0.9, seed=4, max_new_tokens=6)
    text = gen.generate("the cat sat on the mat", settings)
    assert text == gen.generate("the cat sat on the mat", settings)  # seeded: repeatable
    assert gen.last_stats.new_tokens >= 1
    assert len(gen.candidates("the cat", 3, settings)) == 3
    # scores: the mean log-prob of each continuation, as feeding it token by token gives
    prompt, cont = "the cat sat", " on the mat"
    scores = gen.score_many(prompt, [cont, " in", ""])
    ids, follow = gen.encode(prompt), gen.encode(cont, special=False)
    state = gen.decode_state(ids)
    total = 0.0
    for token in follow:
        total += float(torch.log_softmax(state.logits[0].float(), -1)[token])
        state.feed(torch.tensor([[token]]))
    # (scoring runs in torch fp32; the token-by-token path in C with 8-bit activations)
    assert scores[0] == pytest.approx(total / len(follow), abs=2e-3 if lib is None else 2e-2)
    assert scores[2] == float("-inf")
    decoder = open_decoder(gen, "the cat")
    mark = decoder.mark()
    token, _ = decoder.sample([100, 101, 102], settings)
    assert token in (100, 101, 102)
    decoder.step(token)
    decoder.rewind(mark)
    assert decoder.state.length == len(gen.encode("the cat"))


def test_models_load_takes_the_route_it_names(files, models, monkeypatch):
    """A supported file runs natively when the C step reads GGUF blocks; without it, the
    transformers conversion, and `model info`'s path line says so."""
    from storyloom.engine import models as model_specs

    path = files["llama-q8_0-tied"]
    gen = model_specs.load(str(path))
    if gguf_native.native_gguf() is not None:
        assert gen.info.backend == "native-gguf" and gen.info.extra["path"].startswith("native GGUF blocks")
    monkeypatch.setattr(gguf_native, "native_gguf", lambda: None)
    converted = model_specs.load(str(path))
    assert converted.info.backend == "transformers"
    assert converted.info.extra["path"].startswith("transformers conversion: ")


def test_model_info_says_which_path_and_why(files, models, capsys, monkeypatch):
    from storyloom.cli import main

    assert main(["model", "info", "--model", str(files["qwen2-q8_0-biases"])]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    path_line = next(line for line in lines if line.startswith("path:"))
    if gguf_native.native_gguf() is not None:
        assert path_line.startswith("path: native GGUF blocks: qwen2, 2 layers, 256 wide")
        assert "backend: native-gguf" in lines
    else:
        assert path_line.startswith("path: transformers conversion: ")


def test_rows_through_the_c_matmul_and_the_bf16_path_keep_their_bias(files, lib_kinds):
    """With the C library, short prompts' rows go to sl_matmul (8 per pass; qwen2's q bias added
    there), long ones are dequantized to bf16 for torch (the bias added after)."""
    _lib("native", lib_kinds)
    path = files["qwen2-q8_0-biases"]
    fwd, ref = _forward(path, "native"), _forward(path, "torch")
    layer, other = fwd.layers[0], ref.layers[0]
    for rows in (3, 20):
        x = torch.randn(rows, fwd.plan.dim, generator=torch.Generator().manual_seed(rows))
        want = ref.linear(x, other.q, False, other.bias["q"])
        assert _relative(fwd.linear(x, layer.q, False, layer.bias["q"]), want) < 0.02  # 8-bit activations
        assert _relative(fwd.linear(x, layer.q, True, layer.bias["q"]), want) < 0.01  # bf16


def test_prompt_threads_leave_busy_cores_alone(monkeypatch, tmp_path):
    loadavg = tmp_path / "loadavg"
    real = Path

    def fake(p, *a):
        return real(loadavg) if str(p) == "/proc/loadavg" else real(p, *a)

    monkeypatch.setattr(gguf_native, "Path", fake)
    monkeypatch.setattr(gguf_native.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    loadavg.write_text("0.50 0.40 0.30 1/150 999\n")
    assert gguf_native.prompt_threads(2) == 2  # only us running: both cores
    loadavg.write_text("3.00 2.00 1.00 2/150 999\n")
    assert gguf_native.prompt_threads(2) == 1  # one other busy task: one core left
    loadavg.write_text("17.0 16.0 12.0 21/150 999\n")
    assert gguf_native.prompt_threads(2) == 1  # never fewer than one

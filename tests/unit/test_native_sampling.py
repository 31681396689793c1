"""native/sample.c against the torch sampler it stands in for: the same top-k values bit for bit
(so a seeded draw is the same token), and the drawn tokens' log-probs to float precision."""
from __future__ import annotations

import pytest
import torch

from storyloom.engine import logits as L
from storyloom.engine import native
from storyloom.engine.sampling import SamplerSettings

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")


@pytest.fixture(scope="module", autouse=True)
def built(native_builds):
    mp = pytest.MonkeyPatch()
    mp.setenv("STORYLOOM_MODELS", str(native_builds))
    lib = native.build(native.compiler())
    mp.setattr(native, "_loaded", lib)
    yield lib
    mp.undo()


def _torch_top_k(logits, history, settings, banned):
    """The torch path of choose_next up to its top-k, as written there."""
    x = logits.float().clone()
    L._ban(x, banned, inplace=True)
    L.apply_repetition_penalty(x, history, settings.repetition_penalty, settings.repetition_range, inplace=True)
    return torch.topk(x / settings.temperature, settings.top_k, dim=-1)


@pytest.mark.parametrize("batch", [1, 3, 4])
@pytest.mark.parametrize("settings", [
    SamplerSettings(),  # the default: top-k 50, penalty 1.1 over 256 tokens, temperature 0.8
    SamplerSettings(temperature=1.3, top_k=7, repetition_penalty=1.5, repetition_range=0),
    SamplerSettings(temperature=0.5, top_k=100, repetition_penalty=1.0),
])
def test_the_native_top_k_is_torchs_bit_for_bit(batch, settings):
    gen = torch.Generator().manual_seed(batch)
    for trial in range(20):
        logits = torch.randn(batch, 5000, generator=gen) * 4
        # tokens seen more than once, and a prompt longer than the penalty's window
        history = torch.randint(0, 300, (batch, 400), generator=gen)
        banned = [{2, 7}] * batch if trial % 2 else [{int(history[b, -1])} if b % 2 else set() for b in range(batch)]
        got = L._native_top_k(logits, history, settings, L.Context(banned=banned))
        assert got is not None
        want = _torch_top_k(logits, history, settings, banned)
        assert torch.equal(got[0], want.values)
        assert torch.equal(got[1], want.indices)


def test_a_row_that_is_a_view_and_a_short_history():
    settings = SamplerSettings()
    logits = torch.randn(1, 3000).expand(4, -1)  # a prompt's logits for 4 candidates: stride 0
    history = torch.randint(0, 3000, (4, 9))
    got = L._native_top_k(logits, history, settings, L.Context())
    want = _torch_top_k(logits, history, settings, None)
    assert torch.equal(got[0], want.values) and torch.equal(got[1], want.indices)


def test_equal_values_rank_the_lower_id_first():
    logits = torch.zeros(1, 100)
    logits[0, [90, 10, 50]] = 5.0
    vals, ids = L._native_top_k(logits, torch.zeros(1, 0, dtype=torch.long),
                                SamplerSettings(top_k=4, temperature=1.0), L.Context())
    assert ids[0].tolist() == [10, 50, 90, 0] and vals[0].tolist() == [5.0, 5.0, 5.0, 0.0]


def test_seeded_draws_are_the_same_with_and_without_the_native_pass(monkeypatch):
    settings = SamplerSettings(seed=3)
    logits = torch.randn(4, 8000, generator=torch.Generator().manual_seed(1)) * 3
    history = torch.randint(0, 8000, (4, 300), generator=torch.Generator().manual_seed(2))
    context = L.Context(banned=[{0}] * 4)

    def draws():
        gen = torch.Generator().manual_seed(5)
        return [L.choose_next(logits, history, settings, gen, context).tolist() for _ in range(50)]

    fast = draws()
    monkeypatch.setattr(L, "NATIVE", False)
    assert draws() == fast


def test_samplers_it_does_not_do_stay_in_torch():
    logits, history = torch.randn(2, 500), torch.randint(0, 500, (2, 20))
    for settings in (SamplerSettings(top_k=0), SamplerSettings(temperature=0.0),
                     SamplerSettings(dry_multiplier=0.8)):
        assert L._native_top_k(logits, history, settings, L.Context()) is None
    assert L._native_top_k(logits, history, SamplerSettings(), L.Context(bias=[{3: 1.0}, {}])) is None
    assert L._native_top_k(logits.double(), history, SamplerSettings(), L.Context()) is None


def test_token_logprobs_match_log_softmax(monkeypatch):
    logits = torch.randn(4, 49152, generator=torch.Generator().manual_seed(0)) * 5
    tokens = torch.tensor([0, 17, 49151, 300])
    want = torch.log_softmax(logits.double(), -1).gather(1, tokens[:, None]).squeeze(1).tolist()
    assert L.token_logprobs(logits, tokens) == pytest.approx(want, abs=2e-6)
    monkeypatch.setattr(L, "NATIVE", False)
    assert L.token_logprobs(logits, tokens) == pytest.approx(want, abs=2e-5)

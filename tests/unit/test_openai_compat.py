"""The remote backend against a small fake server: what it finds out on connecting, how it uses
each ability, retries, and the one sentence it says when things go wrong (never the API key)."""
from __future__ import annotations

import threading

import pytest

from storyloom import StoryloomError

from storyloom.engine import models
from storyloom.engine.backends.openai_compat import RemoteError, parse_remote
from storyloom.engine.sampling import SamplerSettings
from tests.fake_openai import FakeServer, token_id

S = SamplerSettings(seed=3, max_new_tokens=6)


def test_a_vllm_like_server_gets_n_scoring_grammar_its_window_and_token_counts():
    with FakeServer("vllm", context=4096) as fake:
        gen = models.load(fake.spec)
        caps = gen.capabilities
        assert caps.batch and caps.scoring and caps.grammar == "gbnf" and caps.exact_tokens
        assert gen.context_length == 4096 and gen.info.extra["server"].endswith("(vllm)")
        assert gen.count_tokens("the keeper lit the lamp") == 5  # from the server's /tokenize
        before = len(fake.completions())
        texts = gen.candidates("Once", 3, S)
        assert len(texts) == 3 and len(set(texts)) == 3
        assert len(fake.completions()) == before + 1 and fake.completions()[-1]["n"] == 3  # one request
        assert gen.score_many("The keeper", [" lit the lamp", ""]) == [-1.0, float("-inf")]
        gen.generate("A poem:", S, grammar='root ::= "x"')
        assert fake.completions()[-1]["structured_outputs"] == {"grammar": 'root ::= "x"'}
        # sampler settings travel in the server's own names, with the seed
        body = fake.completions()[-1]
        assert body["seed"] == 3 and body["top_k"] == 50 and body["repetition_penalty"] == 1.1


def test_phrase_bias_reaches_a_server_as_the_first_tokens_logit_bias():
    with FakeServer("vllm") as fake:
        gen = models.load(fake.spec)
        gen.candidates("Once", 2, S.with_(phrase_bias=(("Mira", 3.0), ("Lady Ashworth", 2.0))))
        # only each phrase's first token, as it follows a word: a server cannot follow a phrase
        assert fake.completions()[-1]["logit_bias"] == {str(token_id(" Mira")): 3.0, str(token_id(" Lady")): 2.0}
        assert gen.ignored_samplers(S.with_(phrase_bias=(("Mira", 3.0),))) == []
        gen.generate("Once", S)
        assert "logit_bias" not in fake.completions()[-1]
    with FakeServer("plain") as fake:  # no token ids to name: said, not sent
        gen = models.load(fake.spec)
        settings = S.with_(phrase_bias=(("Mira", 3.0),))
        gen.generate("Once", settings)
        assert "logit_bias" not in fake.completions()[-1]
        assert gen.ignored_samplers(settings) == ["phrase bias (the server does not say its token ids)"]


def test_a_bare_server_gets_concurrent_requests_an_estimate_and_no_ranking_by_scores():
    with FakeServer("plain") as fake:
        gen = models.load(fake.spec)
        caps = gen.capabilities
        assert not caps.batch and not caps.scoring and caps.grammar is None and not caps.exact_tokens
        assert gen.context_length == 2048 and "assuming 2048" in gen.info.extra["context"]
        assert gen.count_tokens("a" * 100) == 40  # 2.5 characters a token: an over-count
        before = len(fake.completions())
        texts = gen.candidates("Once", 3, S)
        sent = fake.completions()[before:]
        assert len(texts) == 3 and len(sent) == 3 and sorted(b["seed"] for b in sent) == [3, 4, 5]
        with pytest.raises(StoryloomError, match="cannot follow a grammar"):
            gen.generate("A poem:", S, grammar='root ::= "x"')
        with pytest.raises(NotImplementedError):
            gen.score_many("x", ["y"])
    with FakeServer("plain") as fake:
        gen = models.load(fake.spec + "#fake-model;ctx=8192")
        assert gen.context_length == 8192


def test_busy_answers_are_retried_and_a_server_that_stays_busy_is_one_sentence():
    with FakeServer("plain") as fake:
        gen = models.load(fake.spec)
        fake.fail = [503, 502]
        assert gen.generate("Once", S)  # two failures, then it answers
        assert fake.fail == []
        fake.fail = [429] * 10
        with pytest.raises(RemoteError) as failed:
            gen.generate("Once", S)
        assert str(failed.value) == f"The server at {parse_remote(fake.spec).base_url} answered 429: busy."


def test_garbage_and_a_dropped_connection_are_one_sentence_each():
    with FakeServer("plain") as fake:
        gen = models.load(fake.spec)
        fake.garbage = True
        with pytest.raises(RemoteError, match="cannot read|closed the connection"):
            gen.generate("Once", S)
        fake.garbage = False
        fake.drop_after = 2
        got = []
        with pytest.raises(RemoteError, match="closed the connection in the middle of its reply"):
            for piece in gen.stream("Once", S.with_(max_new_tokens=20)):
                got.append(piece)
        assert len(got) <= 2


def test_the_api_key_is_sent_but_never_shown(monkeypatch):
    monkeypatch.setenv("STORYLOOM_API_KEY", "sk-very-secret-123")
    with FakeServer("plain") as fake:
        gen = models.load(fake.spec)
        fake.echo_header, fake.fail = True, [500] * 10
        with pytest.raises(RemoteError) as failed:
            gen.generate("Once", S)
        assert "sk-very-secret-123" not in str(failed.value) and "***" in str(failed.value)
        assert "sk-very-secret-123" not in repr(gen.info)


def test_nobody_listening_and_cancel():
    with FakeServer("plain") as fake:
        spec = fake.spec
        gen = models.load(spec)
        cancel = threading.Event()
        pieces = []
        for piece in gen.stream("Once", S.with_(max_new_tokens=50), cancel):
            pieces.append(piece)
            cancel.set()
        assert len(pieces) == 1
    with pytest.raises(RemoteError, match="cannot be reached"):
        models.load(spec)

"""Candidates from a remote server, as co-write and the adventure use them: the log-probs that
come with the writing (so ranking need not score the texts again), a candidate that stops where
its turn is whole (its stream closed, so the server stops too), and a batch that `enough` ends."""
from __future__ import annotations

import pytest

from storyloom.engine import models
from storyloom.engine.backends.openai_compat import with_found
from storyloom.engine.generate import RowLogprobs
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import critic
from storyloom.modes.cowrite import CoWrite, new_story
from tests.fake_openai import FakeServer

S = SamplerSettings(seed=3, max_new_tokens=12)
STORY = "The keeper had not spoken to anyone in three weeks when the boat arrived."
LONG = 2000  # words a fake reply runs to when nothing stops it


def asking(gen) -> list[str]:
    """Spy on score_many: the prompts it is asked to score after."""
    asked: list[str] = []
    real = gen.score_many
    gen.score_many = lambda prompt, texts: asked.append(prompt) or real(prompt, texts)
    return asked


@pytest.mark.parametrize("family", ["vllm", "plain"])  # n in one request; one request a candidate
def test_each_candidate_comes_with_its_tokens_log_probs(family):
    with FakeServer(family) as fake:
        gen = models.load(fake.spec)
        assert gen.found.raw_logprobs and gen.found.record_logprobs
        assert "log-probs while writing" in gen.info.extra["abilities"]
        before = len(fake.completions())
        record: list[RowLogprobs] = []
        texts = gen.candidates("Once", 3, S, record=record)
        sent = fake.completions()[before:]
        assert len(sent) == (1 if family == "vllm" else 3) and all(b["logprobs"] == 1 for b in sent)
        assert len(record) == 3
        for text, row in zip(texts, record):
            words = text.split(" ")[1:]  # the fake's tokens are words, each after a space
            assert row.logprobs == [-1.0] * len(words) == [-1.0] * 12
            assert row.ends == [len(" ".join([""] + words[: i + 1])) for i in range(len(words))]
        # without a record nothing asks the server for log-probs (they can cost it time)
        gen.candidates("Once", 2, S)
        assert "logprobs" not in fake.completions()[-1]


def test_cowrite_ranks_by_the_log_probs_that_came_with_the_writing():
    with FakeServer("vllm") as fake:
        gen = models.load(fake.spec)
        assert gen.capabilities.scoring  # so co-write ranks by the model (ModelRanker)
        fake.prose = 150
        play = CoWrite(new_story("The Keeper", opening=STORY, candidates_n=3, length="paragraph"))
        asked = asking(gen)
        ranked = play.propose(gen, SamplerSettings(seed=1))
        assert len(ranked) >= 2
        assert set(asked) <= {critic.NEUTRAL_PROMPT}  # at most the neutral pass: the rows were not scored again
        assert all(c.logprob == pytest.approx(-1.0) for c in ranked)  # the fake's log-prob of every token


def test_log_probs_a_server_reports_after_its_sampler_are_not_recorded_and_ranking_scores():
    with FakeServer("vllm") as fake:
        fake.post_sampler = True  # its log-probs change with the temperature: not the model's own
        gen = models.load(fake.spec)
        assert gen.found.token_logprobs and not gen.found.raw_logprobs and not gen.found.record_logprobs
        record: list[RowLogprobs] = []
        gen.candidates("Once", 2, S, record=record)
        assert record == [] and "logprobs" not in fake.completions()[-1]
        fake.prose = 150
        play = CoWrite(new_story("The Keeper", opening=STORY, candidates_n=3, length="paragraph"))
        asked = asking(gen)
        play.propose(gen, SamplerSettings(seed=1))
        assert asked[0] == play.prompt_for(gen, SamplerSettings()).text  # the rows are scored


@pytest.mark.parametrize("family", ["vllm", "plain"])
def test_a_candidate_stops_where_the_caller_calls_it_complete_and_its_stream_is_closed(family):
    with FakeServer(family) as fake:
        gen = models.load(fake.spec)
        fake.prose, fake.chunk_delay = LONG, 0.002  # a server writing on and on, as it decodes
        calls: list[str] = []
        texts = gen.candidates("Once", 3, S.with_(max_new_tokens=LONG),
                               complete=lambda text: calls.append(text) or len(text.split()) >= 10)
        assert all(len(t.split()) == 10 for t in texts)  # each ended at the first text called complete
        assert all(t in calls for t in texts)
        # the client closed the stream(s): the server did not write the rest
        assert all(sent < LONG // 2 for sent in fake.streamed(1 if family == "vllm" else 3))


def test_a_paragraph_turn_over_a_server_ends_at_its_whole_turn_not_the_token_cap():
    with FakeServer("plain") as fake:
        gen = models.load(fake.spec)
        fake.prose, fake.chunk_delay = LONG, 0.002
        play = CoWrite(new_story("The Keeper", opening=STORY, candidates_n=2, length="paragraph"))
        ranked = play.propose(gen, SamplerSettings(seed=1))
        words = sorted(len(c.text.split()) for c in ranked)
        # the first to be whole ends at PARAGRAPH_WORDS in whole sentences; the other there too,
        # or (co-write's `enough`, once it is the last one going) at its first whole paragraph
        assert len(words) == 2 and words[1] >= 60 and 35 <= words[0] and words[1] < 80
        assert all(sent < 100 for sent in fake.streamed(2))  # not the 120-token cap


def test_enough_ends_the_call_and_requests_not_yet_sent_are_not_sent():
    with FakeServer("plain") as fake:
        gen = with_found(models.load(fake.spec), parallel=1)  # one request at a time (llama-cpp-python)
        fake.prose, fake.chunk_delay = LONG, 0.002
        before = len(fake.completions())
        seen: list[list[bool]] = []

        def enough(texts, finished):
            seen.append(list(finished))
            return len(texts[0].split()) >= 5

        texts = gen.candidates("Once", 3, S.with_(max_new_tokens=LONG), enough=enough)
        assert len(texts[0].split()) == 5 and texts[1:] == ["", ""]
        assert len(fake.completions()) == before + 1 and fake.streamed(1)[0] < LONG // 2
        assert seen[-1] == [False, False, False]  # asked while the first was still going
    with FakeServer("vllm") as fake:  # one request with n: it is closed
        gen = models.load(fake.spec)
        fake.prose, fake.chunk_delay = LONG, 0.002
        texts = gen.candidates("Once", 3, S.with_(max_new_tokens=LONG),
                               enough=lambda texts, finished: len(texts[1].split()) >= 5)
        assert len(texts[1].split()) == 5 and all(len(t.split()) <= 6 for t in texts)
        assert fake.streamed(1)[0] < LONG // 2


def test_a_stop_string_the_server_was_not_sent_still_ends_its_candidate():
    with FakeServer("plain") as fake:
        gen = models.load(fake.spec)
        fake.prose, fake.chunk_delay = LONG, 0.002
        stops = ("zzz1", "zzz2", "zzz3", "zzz4", "rain")  # the API takes 4: "rain" stays here
        texts = gen.candidates("Once", 2, S.with_(max_new_tokens=LONG, stop=stops))
        assert "rain" not in fake.completions()[-1]["stop"]
        assert all(t and "rain" not in t and len(t.split()) < 25 for t in texts)
        assert all(sent < LONG // 2 for sent in fake.streamed(2))


def test_a_turns_shortest_length_reaches_the_servers_that_take_min_tokens():
    for family, sent in (("vllm", True), ("plain", False)):
        with FakeServer(family) as fake:
            gen = models.load(fake.spec)
            gen.candidates("Once", 1, S.with_(min_new_tokens=8))
            assert ("min_tokens" in fake.completions()[-1]) is sent
            assert fake.completions()[-1].get("min_tokens", 8) == 8
            gen.candidates("Once", 1, S)
            assert "min_tokens" not in fake.completions()[-1]

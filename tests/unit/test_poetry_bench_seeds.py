"""`storyloom bench poetry --first-seed S`: poems on seeds held out from tuning (S..S+N-1)."""
from __future__ import annotations

import json

from storyloom.modes.poetry import bench
from storyloom.modes.poetry.constrain import Vocabulary
from tests.unit.test_poetry import SMALL


def test_the_bench_writes_its_poems_on_the_seeds_from_first_seed(tiny, monkeypatch):
    tiny._poetry_vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    seeds = []
    real = bench.compose

    def compose(gen, form, topic, seed=None, **kw):
        seeds.append((seed, topic))
        return real(gen, form, topic, seed=seed, **kw)

    monkeypatch.setattr(bench, "compose", compose)
    try:
        result = bench.poetry(forms=["haiku"], poems=2, gen=tiny, first_seed=11)
    finally:
        del tiny._poetry_vocab
    assert seeds == [(11, bench.TOPICS[0]), (12, bench.TOPICS[1])]  # a seed's topic, as for seeds 1..N
    assert [row["seed"] for row in result["forms"]["haiku"]["per_poem"]] == [11, 12]
    assert result["first_seed"] == 11 and result["forms"]["haiku"]["poems"] == 2


def test_the_cli_passes_first_seed_and_defaults_to_seed_1(monkeypatch, capsys):
    from storyloom import cli

    calls = []
    monkeypatch.setattr(bench, "poetry", lambda spec, **kw: calls.append(kw) or {"first_seed": kw["first_seed"]})
    assert cli.main(["bench", "poetry", "--poems", "3", "--first-seed", "21"]) == 0
    assert json.loads(capsys.readouterr().out)["first_seed"] == 21
    assert cli.main(["bench", "poetry"]) == 0
    assert [c["first_seed"] for c in calls] == [21, 1] and calls[0]["poems"] == 3

"""`storyloom play` and `storyloom bench quality` headless, on the tiny random model."""
from __future__ import annotations

import json

from storyloom.cli import main


def test_play_prints_json_with_each_turns_verdict(tiny_model_dir, tmp_path, capsys):
    actions = tmp_path / "actions.txt"
    actions.write_text("look around\n\n# a comment\nsay: Who is there?\nstory: The wind rises.\n")
    code = main(["play", "--scenario", "fantasy/knight", "--actions", str(actions), "--seed", "3",
                 "--candidates", "2", "--json", "--model", str(tiny_model_dir)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    kinds = [t["kind"] for t in data["turns"]]
    assert kinds == ["start", "do", "say", "story"] and data["candidates"] == 2
    assert data["turns"][2]["action"] == '> You say "Who is there?"'
    for turn in data["turns"]:
        assert set(turn["verdict"]) == {"passed", "penalty", "relevance", "findings"}
        assert turn["candidates"] >= 1 and turn["batches"] >= 1
    assert data["passed"] == sum(t["verdict"]["passed"] for t in data["turns"])


def test_play_is_reproducible_and_explains_on_stderr(tiny_model_dir, tmp_path, capsys):
    actions = tmp_path / "a.txt"
    actions.write_text("open the door\n")
    args = ["play", "--actions", str(actions), "--seed", "5", "--model", str(tiny_model_dir), "--explain"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert main(args) == 0
    again = capsys.readouterr()
    assert first.out == again.out and "> You open the door." in first.out
    assert "ranked by critic" in first.err


def test_play_and_bench_quality_refuse_bad_input_in_one_line(tiny_model_dir, tmp_path, capsys):
    assert main(["play", "--actions", str(tmp_path / "missing.txt"), "--model", str(tiny_model_dir)]) == 2
    assert "Cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("say:\n")
    assert main(["play", "--actions", str(bad), "--model", str(tiny_model_dir)]) == 2
    assert "no action after it" in capsys.readouterr().err
    assert main(["play", "--actions", str(bad), "--scenario", "moon/cow"]) == 2
    assert "No scenario 'moon/cow'" in capsys.readouterr().err
    assert main(["bench", "quality", "--modes", "poetry", "--model", str(tiny_model_dir)]) == 2


def test_bench_quality_reports_k1_and_k_per_mode(tiny_model_dir, capsys, monkeypatch):
    from storyloom.modes import quality_bench

    monkeypatch.setattr(quality_bench, "SCENARIOS", ["fantasy/knight"])
    monkeypatch.setattr(quality_bench, "ACTIONS", [("do", "look around")])
    monkeypatch.setattr(quality_bench, "WORLD_CASES", quality_bench.WORLD_CASES[:1])
    monkeypatch.setattr(quality_bench, "COWRITE_OPENINGS", quality_bench.COWRITE_OPENINGS[:1])
    assert main(["bench", "quality", "--candidates", "2", "--model", str(tiny_model_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["k"] == 2
    for mode in ("adventure", "tree", "cowrite", "world_info"):
        assert {"k=1", "k=2"} <= set(data[mode])
    assert data["adventure"]["k=1"]["turns"] == 2  # the opening and one action
    assert 0.0 <= data["adventure"]["k=2"]["pass_share"] <= 1.0
    assert "seconds_ratio_k2_vs_k1" in data["adventure"]
    assert {"option_rows_drawn", "options_shown_of_wanted"} <= set(data["tree"]["k=2"])

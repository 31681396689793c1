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
    for mode in ("adventure", "tree", "cowrite"):
        assert {"k=1", "k=2"} <= set(data[mode])
    assert {"sample_rate", "picked", "picked_no_credit"} <= set(data["world_info"]["k=2"]["by_style"]["note"])
    assert data["adventure"]["k=1"]["turns"] == 2  # the opening and one action
    assert 0.0 <= data["adventure"]["k=2"]["pass_share"] <= 1.0
    assert "seconds_ratio_k2_vs_k1" in data["adventure"] and "median_scenario_ratio_k2_vs_k1" in data["adventure"]
    assert {"option_rows_drawn", "options_shown_of_wanted"} <= set(data["tree"]["k=2"])
    assert {"seconds_ratio_k2_vs_k1", "median_scenario_ratio_k2_vs_k1"} <= set(data["tree"])  # k=1, k=2 side by side
    assert data["cowrite"]["k=1"]["turns"] == 6  # one opening, two seeds, three turns each
    # the decode work behind the seconds: k rows drawn in one batch are more tokens than one row
    assert 0 < data["cowrite"]["k=1"]["tokens_drawn_per_turn"] < data["cowrite"]["k=2"]["tokens_drawn_per_turn"]
    assert {"seconds_ratio_k2_vs_k1", "median_turn_ratio_k2_vs_k1", "first_turn_ratio_k2_vs_k1"} <= set(data["cowrite"])
    for k, most in (("k=1", 1), ("k=2", 2)):  # what the ranking had to pick from, and the steps it took
        run = data["cowrite"][k]
        assert run["steps_per_turn"] > 0 and 0 <= run["passing_per_turn"] <= run["judged_per_turn"] <= most
    assert data["cowrite"]["k=1"]["turns_judging_over_one"] == 0


def test_world_info_bench_counts_facts_per_placement_against_the_same_game_without_the_entry(monkeypatch):
    from storyloom.engine.backends.scripted import ScriptedGenerator
    from storyloom.engine.sampling import SamplerSettings
    from storyloom.modes import quality_bench

    class Reader(ScriptedGenerator):
        """Mentions the innkeeper's name only when the prompt told it."""

        def _stream(self, prompt, settings, cancel):
            self.prompts.append(prompt)
            yield ("Mira, the tall innkeeper, hands you a key and points up the creaking stairs to a small room."
                   if "Mira" in prompt else "The innkeeper hands you a key and points up the creaking stairs to a room.")

    monkeypatch.setattr(quality_bench, "WORLD_CASES", quality_bench.WORLD_CASES[:1])
    result = quality_bench.world_info(Reader(), 2, SamplerSettings(seed=1), styles=("head", "note", "note+primer"))
    assert result["fact_mentioned_when_absent"] == 0.0 and result["absent"]["sample_rate"] == 0.0
    for style in ("head", "note", "note+primer"):
        assert result["by_style"][style] == {"sample_rate": 1.0, "picked": 1.0, "picked_no_credit": 1.0,
                                             "candidates": 2, "picked_mentions": 1, "batches": 1,
                                             "pick_pass_share": 1.0}
    assert result["fact_mentioned_when_triggered"] == 1.0 and result["cases"] == 1


def test_bench_memory_reports_the_turn_5_facts_and_the_budgets(capsys):
    assert main(["bench", "memory", "--summarizer", "extractive", "--turns", "120"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["turns"] == 120 and data["summarizer"] == "extractive"
    assert data["memory_facts_in_prompt"] == 1.0 and data["summary_named"]
    assert data["summary_tokens_max"] <= data["summary_budget"] and data["prompt_tokens_max"] <= data["budget"]
    assert main(["bench", "memory", "--turns", "5"]) == 2
    assert "--turns must be between 10 and 2000" in capsys.readouterr().err

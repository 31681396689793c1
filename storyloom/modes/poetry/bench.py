"""`storyloom bench poetry`: do generated poems scan and rhyme, how fast, how fluent. Prints JSON.

For each form, poems with seeds 1..N: the share of lines the scanner passes, the share of rhyme
pairs that rhyme, seconds per poem, and fluency (mean token log-prob of the poem under the
model, next to an unconstrained sample of the same length from the same prompt). Also scans
Shakespeare's sonnets (tests/data) to show how strict the scanner is.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from storyloom.engine import models
from storyloom.engine.default_model import Progress, _quiet
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.poetry.compose import compose, poem_prompt, vocabulary_for
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.scan import scan_line, scan_poem

TOPICS = ["the sea", "autumn", "a lost key", "the city at night", "my grandmother's garden",
          "a cat", "winter", "the moon", "an old train", "the first day of spring"]
SHAKESPEARE = Path(__file__).resolve().parents[3] / "tests" / "data" / "shakespeare-sonnets.txt"


def shakespeare(path: Path = SHAKESPEARE) -> dict:
    if not path.exists():
        return {"error": f"{path} not found"}
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    templates = get_form("sonnet").templates(0)
    verdicts = [scan_line(line, templates) for line in lines]
    scorable = [v for v in verdicts if not v.unknown]
    passing = sum(v.meter_ok for v in verdicts)
    return {"lines": len(lines), "iambic_pentameter": passing, "share": round(passing / len(lines), 3),
            "lines_with_unknown_words": len(lines) - len(scorable),
            "share_of_scorable": round(passing / len(scorable), 3) if scorable else None}


def poetry(spec: str = "default", forms: list[str] | None = None, poems: int = 10, time_cap: float = 90.0,
           progress: Progress = _quiet) -> dict:
    gen = models.load(spec, progress)
    start = time.perf_counter()
    vocab = vocabulary_for(gen)
    result: dict = {"model": gen.name, "vocabulary_words": len(vocab),
                    "vocabulary_build_s": round(time.perf_counter() - start, 2), "forms": {}}
    for key in forms or ["sonnet", "limerick", "ballad", "couplets", "haiku"]:
        form = get_form(key)
        rows = []
        for seed in range(1, poems + 1):
            progress(f"{form.name}: poem {seed} of {poems}", (seed - 1) / poems)
            topic = TOPICS[(seed - 1) % len(TOPICS)]
            poem = compose(gen, form, topic, seed=seed, time_cap=time_cap)
            verdict = scan_poem(poem.text, form)
            prompt = poem_prompt(gen, form, topic)
            tokens = sum(line.tokens for line in poem.lines) or 1
            free = gen.generate(prompt, SamplerSettings(seed=seed, max_new_tokens=tokens))
            poem_lp, free_lp = gen.score_many(prompt, [poem.text, free])
            rows.append({"seed": seed, "topic": topic, "seconds": round(poem.seconds, 2),
                         "lines_passing": sum(v.meter_ok for v, line in zip(verdict.lines, poem.lines) if line.ok),
                         "lines": form.lines, "rhyme_pairs": verdict.rhyme_pairs,
                         "rhyme_pairs_ok": verdict.rhyme_pairs_ok, "complete": poem.complete,
                         "backtracks": poem.backtracks, "logprob_poem": round(poem_lp, 3),
                         "logprob_unconstrained": round(free_lp, 3), "text": poem.text})
        lines = sum(r["lines"] for r in rows)
        pairs = sum(r["rhyme_pairs"] for r in rows)
        result["forms"][key] = {
            "poems": len(rows),
            "complete_poems": sum(r["complete"] for r in rows),
            "share_lines_passing": round(sum(r["lines_passing"] for r in rows) / lines, 4),
            "share_rhyme_pairs_passing": round(sum(r["rhyme_pairs_ok"] for r in rows) / pairs, 4) if pairs else None,
            "seconds_per_poem_mean": round(statistics.fmean(r["seconds"] for r in rows), 2),
            "seconds_per_poem_max": max(r["seconds"] for r in rows),
            "mean_logprob_poem": round(statistics.fmean(r["logprob_poem"] for r in rows), 3),
            "mean_logprob_unconstrained": round(statistics.fmean(r["logprob_unconstrained"] for r in rows), 3),
            "per_poem": rows,
        }
    result["shakespeare_scan"] = shakespeare()
    return result

"""`storyloom bench cowrite`: the cost of sampling several candidates, and what ranking buys.

Prints JSON. Speed: time for n candidates of `tokens` tokens in one batched call against one
candidate. Quality: on fixed story openings, the repeated 4-gram rate of the top-ranked
candidate against a random one (seeded) and against the mean over all candidates.
"""
from __future__ import annotations

import random
import statistics
import time

from storyloom.engine import compute_threads, models
from storyloom.engine.default_model import Progress, _quiet
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.cowrite import CoWrite, new_story, repeated_ngram_rate

OPENINGS = [
    ("The Lighthouse", "The lighthouse keeper had not spoken to anyone in three weeks when the boat arrived."),
    ("Salt", "My grandmother kept a jar of salt from every sea she had swum in."),
    ("The Last Train", "The last train out of the city left at midnight, and Mara was not on it."),
    ("Orchard", "Every autumn the orchard gave more apples than the village could eat."),
    ("The Clockmaker", "The clockmaker's shop had forty clocks, and none of them told the same time."),
    ("Snowbound", "By the third day of snow we had burned the chairs and started on the books."),
    ("The Letter", "The letter arrived forty years late, addressed to a woman who had never existed."),
    ("Night Shift", "Nurse Okafor liked the night shift because the hospital told the truth after dark."),
    ("The Map", "The map showed an island where the sea charts showed only water."),
    ("Dust", "The farm had not seen rain in two years when the stranger came up the road."),
    ("The Choir", "The choir had sung in the cathedral for six hundred years without missing a Sunday."),
    ("Glass", "Tomas blew glass for a living, and sometimes the glass remembered things."),
    ("The Tenant", "The new tenant paid a year's rent in cash and asked only that no one knock."),
    ("Harbour Lights", "On the night of the festival every boat in the harbour hung a lantern but one."),
    ("The Bees", "When the old beekeeper died, someone had to go and tell the bees."),
    ("Static", "The radio in the kitchen had been playing static for a week, and then it spoke my name."),
    ("The Garden Wall", "Behind the garden wall there was a door that had been bricked up from the other side."),
    ("Ferry", "The ferryman charged one coin for the crossing and two for the return."),
    ("Winter Market", "At the winter market you could buy anything, if you knew which stall to ask."),
    ("The Astronomer", "The astronomer found the new star on a Tuesday and told no one for a month."),
]


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cowrite(spec: str = "default", tokens: int = 60, n: int = 4, prompts: int = 20, repeats: int = 3,
            progress: Progress = _quiet) -> dict:
    gen = models.load(spec, progress)
    result: dict = {"model": gen.name, "threads": compute_threads(), "candidates": n}

    # -- speed: one batched call for n candidates against one ---------------------------------
    progress(f"Timing 1 vs {n} candidates of {tokens} tokens", None)
    title, opening = OPENINGS[0]
    prompt = f"{title}\n\n{opening}\n\n"
    settings = SamplerSettings(temperature=0.9, top_p=0.95, max_new_tokens=tokens, seed=1)
    gen.candidates(prompt, 1, settings.with_(max_new_tokens=4))  # warm-up
    one = _median_seconds(lambda: gen.candidates(prompt, 1, settings), repeats)
    one_tokens = gen.last_stats.new_tokens
    many = _median_seconds(lambda: gen.candidates(prompt, n, settings), repeats)
    many_tokens = gen.last_stats.new_tokens
    texts = gen.candidates(prompt, n, settings)
    rank_s = _median_seconds(lambda: gen.score_many(prompt, texts), repeats)
    result["speed"] = {
        "tokens_per_candidate": tokens,
        "one_candidate_s": round(one, 3), "one_candidate_tokens": one_tokens,
        f"{n}_candidates_s": round(many, 3), f"{n}_candidates_tokens": many_tokens,
        "ratio": round(many / one, 3), "target_ratio": 1.5,
        f"ranking_{n}_s": round(rank_s, 3),
        "ratio_with_ranking": round((many + rank_s) / one, 3),
    }

    # -- quality: does the ranker pick less repetitive text than chance? -------------------------
    # Once with the default sampler, and once without its repetition penalty at a lower
    # temperature, where small models fall into loops and a ranker has something to catch.
    conditions = {
        "default_sampler": SamplerSettings(),
        "loop_prone_sampler": SamplerSettings(temperature=0.6, top_k=0, top_p=1.0, repetition_penalty=1.0),
    }
    for label, base in conditions.items():
        rows = []
        chosen = OPENINGS[:prompts]
        for i, (title, opening) in enumerate(chosen, 1):
            progress(f"Ranking candidates for {len(chosen)} openings ({label})", (i - 1) / len(chosen))
            play = CoWrite(new_story(title, opening=opening, candidates_n=n))
            try:
                ranked = play.propose(gen, base.with_(seed=i))
            except Exception as exc:  # noqa: BLE001 - a prompt with no usable candidate is counted, not fatal
                rows.append({"opening": title, "error": str(exc)})
                continue
            story_text = play.story_text()
            rates = [repeated_ngram_rate(c.text, story_text, 4) for c in ranked]
            pick = random.Random(i).randrange(len(ranked))
            rows.append({"opening": title, "offered": len(ranked), "top": rates[0], "random": rates[pick],
                         "mean": statistics.fmean(rates), "top_logprob": ranked[0].logprob,
                         "random_logprob": ranked[pick].logprob})
        result[label] = _summary(rows)
    return result


def _summary(rows: list[dict]) -> dict:
    done = [r for r in rows if "error" not in r]
    summary: dict = {"prompts": len(rows), "prompts_with_candidates": len(done)}
    if done:
        top = statistics.fmean(r["top"] for r in done)
        rnd = statistics.fmean(r["random"] for r in done)
        summary |= {
            "repeated_4gram_rate_top": round(top, 4),
            "repeated_4gram_rate_random": round(rnd, 4),
            "repeated_4gram_rate_mean_of_all": round(statistics.fmean(r["mean"] for r in done), 4),
            "top_better_than_random": sum(r["top"] < r["random"] for r in done),
            "top_equal_to_random": sum(r["top"] == r["random"] for r in done),
            "top_worse_than_random": sum(r["top"] > r["random"] for r in done),
            "mean_logprob_top": round(statistics.fmean(r["top_logprob"] for r in done), 3),
            "mean_logprob_random": round(statistics.fmean(r["random_logprob"] for r in done), 3),
            "verdict": ("the ranker's pick repeats less than a random pick" if top < rnd else
                        "no difference: the ranker's pick repeats as little as a random pick here" if top == rnd else
                        "the ranker's pick repeats MORE than a random pick on these prompts"),
        }
    summary["per_prompt"] = rows
    return summary

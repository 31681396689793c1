"""`storyloom bench quality`: how often what a player reads passes the critic, with sample-and-rank
off (one candidate) and on (k in one batch), on a fixed set of scenarios and actions.

Per mode: the share of turns the critic passes, the repeated 4-gram rate, mean words per turn
and seconds per turn; for story trees also how many of the wanted options survive the critic;
and whether triggered world info reaches the output more often than the same facts untriggered.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import adventure as adv
from storyloom.modes import critic
from storyloom.modes.cowrite import CoWrite, new_story, repeated_ngram_rate
from storyloom.modes.tree import Tree, expand, option_brief, outcome_brief
from storyloom.store.stories import WorldEntry
from storyloom.store.trees import Node

SCENARIOS = ["fantasy/knight", "mystery/detective", "apocalyptic/scavenger", "space/pilot", "horror/heir",
             "fantasy/wizard"]
ACTIONS = [("do", "look around"), ("say", "Who is there?"), ("do", "walk forward carefully"),
           ("do", "pick up the nearest object")]
# World info: an entry whose key is in the action but whose facts are not (name, attribute).
WORLD_CASES = [
    ("fantasy/knight", "innkeeper", "The innkeeper is Mira, a tall woman with a silver eye patch.",
     ("mira", "eye patch", "silver"), "ask the innkeeper for a room"),
    ("mystery/detective", "butler", "The butler is Mr Hale, an old man with a limp and a brass hearing horn.",
     ("hale", "limp", "hearing horn", "brass"), "question the butler"),
    ("space/pilot", "ORIN", "ORIN speaks in a calm female voice and glows amber when it is worried.",
     ("amber", "female", "calm voice", "glow"), "ask ORIN what it sees"),
    ("horror/heir", "portrait", "The portrait in the hall shows your great-aunt Agatha holding a black cat.",
     ("agatha", "black cat", "cat"), "look at the portrait"),
    ("apocalyptic/scavenger", "radio", "The radio only ever plays one song, an old waltz, and then a woman counting.",
     ("waltz", "counting", "song"), "turn on the radio"),
    ("fantasy/knight", "blacksmith", "The blacksmith is Doran, a bald giant who sings while he works.",
     ("doran", "bald", "sing", "giant"), "visit the blacksmith"),
    ("mystery/detective", "widow", "The widow is Lady Ashworth, who wears black lace and never stops smiling.",
     ("ashworth", "lace", "smil"), "talk to the widow"),
    ("space/pilot", "engine", "The ship's engine hums in a rising whine and leaks green coolant when it overheats.",
     ("whine", "green", "coolant"), "check the engine"),
    ("horror/heir", "gardener", "The gardener is Old Tobias, a mute man with muddy hands and a crow on his shoulder.",
     ("tobias", "mute", "crow", "muddy"), "find the gardener"),
    ("fantasy/wizard", "familiar", "Your familiar is Pip, a small grey owl who hoots when danger is near.",
     ("pip", "owl", "hoot", "grey"), "call your familiar"),
]
COWRITE_OPENINGS = [
    ("The Keeper", "The lighthouse keeper had not spoken to anyone in three weeks when the boat arrived."),
    ("Snow", "By the time the train stopped, the snow had covered the tracks behind us."),
    ("The Letter", "My grandmother's letter arrived a week after her funeral, in her careful blue handwriting."),
    ("Market Day", "Every Saturday the square filled with stalls, and every Saturday the old man sold nothing."),
    ("The Bees", "When the old beekeeper died, someone had to go and tell the bees."),
    ("Ferry", "The ferryman charged one coin for the crossing and two for the return."),
    ("Glass", "Tomas blew glass for a living, and sometimes the glass remembered things."),
    ("Static", "The radio in the kitchen had been playing static for a week, and then it spoke my name."),
]


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 3) if flags else 0.0


def _summary(texts: list[str], passed: list[bool], seconds: list[float]) -> dict:
    return {"turns": len(texts), "pass_share": _rate(passed),
            "repeated_4gram_rate": round(statistics.fmean(repeated_ngram_rate(t, "", 4) for t in texts), 3)
            if texts else 0.0,
            "mean_words": round(statistics.fmean(len(t.split()) for t in texts), 1) if texts else 0.0,
            "seconds_per_turn": round(statistics.fmean(seconds), 3) if seconds else 0.0}


def adventures(generator, ks, settings: SamplerSettings, model_rank: bool = False, scenarios=None,
               progress=None) -> dict:
    """Each scenario played at every k in turn (k=1, k=4, next scenario...), so the seconds of
    each k come from the same minutes of a shared, busy machine; per k the summary, and per
    pair of k the ratio of mean seconds and the median of the scenarios' own ratios."""
    runs = {k: {"texts": [], "passed": [], "seconds": [], "failures": {}, "by_scenario": [], "related": []} for k in ks}
    for spec in scenarios or SCENARIOS:
        setting, character = adv.find_scenario(spec)
        for k in ks:
            run = runs[k]
            game = adv.new_game(setting, character, "Ada")
            played = adv.play_actions(game, list(ACTIONS), generator, settings, candidates=k, model_rank=model_rank)
            for turn in played:
                run["texts"].append(turn.output)
                run["passed"].append(turn.pick.verdict.passed)
                run["related"].append(turn.pick.verdict.relevance > 0)
                run["seconds"].append(turn.seconds)
                for f in turn.pick.verdict.findings:
                    if f.cost >= critic.FAIL:
                        run["failures"][f.code] = run["failures"].get(f.code, 0) + 1
            run["by_scenario"].append(sum(t.seconds for t in played))
            if progress:
                progress(f"adventure k={k}: {spec}", None)
    out = {}
    for k, run in runs.items():
        out[f"k={k}"] = _summary(run["texts"], run["passed"], run["seconds"])
        # turns that share a content word with the scene (context, last turns, the action): a
        # passing turn about nothing that was there ("The room seems to be huge.") is not an answer
        out[f"k={k}"]["scene_share"] = _rate(run["related"])
        out[f"k={k}"]["failures"] = dict(sorted(run["failures"].items(), key=lambda kv: -kv[1]))
    if len(ks) == 2:
        one, many = runs[ks[0]]["by_scenario"], runs[ks[1]]["by_scenario"]
        out[f"median_scenario_ratio_k{ks[1]}_vs_k{ks[0]}"] = round(statistics.median(
            m / o for o, m in zip(one, many) if o), 2)
    return out


def trees(generator, ks, settings: SamplerSettings, scenarios=None, progress=None) -> dict:
    """Per scenario: the root's options (5 wanted), then the outcome of the first one. Each
    scenario is played at every k in turn (as adventures() does), so the seconds of each k come
    from the same minutes of the machine; per pair of k also the median of the scenarios' ratios."""
    runs = {k: {"option_rows": 0, "option_passed": 0, "shown": 0, "wanted": 0, "astray": 0, "outcomes": [],
                "passed": [], "seconds": []} for k in ks}
    primer = adv.load_primer()
    for n, spec in enumerate(scenarios or SCENARIOS):
        setting, character = adv.find_scenario(spec)
        tree = Tree(f"{setting.name}: {character.name}", scenario=character.context.replace("{name}, ", ""))
        root = Node("bench", None, "", character.prompt.replace("{name}", "you") + " a path leads on.")
        tries = settings.with_(seed=(settings.seed or 0) + n)
        for k in ks:
            run = runs[k]
            start = time.perf_counter()
            options = expand(generator, tree, [root], want_outcome=False, actions=5, settings=tries, candidates=k)
            run["option_rows"] += options.options_drawn
            run["option_passed"] += options.options_passed
            run["shown"] += len(options.actions)
            run["wanted"] += 5
            run["astray"] += sum(any(f.code == "drift" for f in critic.judge(a, option_brief(root.outcome)).findings)
                                 for a in options.actions)
            action = options.actions[0] if options.actions else "Look around."
            child = Node("bench", "root", action, "")
            try:
                outcome = expand(generator, tree, [root, child], want_outcome=True, actions=0, settings=tries,
                                 candidates=k).outcome
            except StoryloomError:  # nothing usable: a failed outcome
                outcome = ""
            run["seconds"].append(time.perf_counter() - start)
            run["outcomes"].append(outcome)
            run["passed"].append(critic.judge(outcome, outcome_brief(tree, [root, child], primer)).passed)
        if progress:
            progress(f"trees: {spec}", None)
    out = {}
    for k, run in runs.items():
        summary = {"outcomes_" + key: value
                   for key, value in _summary(run["outcomes"], run["passed"], run["seconds"]).items()}
        rows, passing = run["option_rows"], run["option_passed"]
        summary.update({"option_rows_drawn": rows,
                        "option_rows_passing": _rate([True] * passing + [False] * (rows - passing)),
                        "options_shown_of_wanted": _rate([True] * run["shown"] + [False] * (run["wanted"] - run["shown"])),
                        "options_shown_pass_share": 1.0 if run["shown"] else 0.0,  # only passing options are shown
                        # shown options that act on nothing the passage named ("Take off your armor.")
                        "options_shown_astray": run["astray"]})
        out[f"k={k}"] = summary
    if len(ks) == 2:
        one, many = runs[ks[0]]["seconds"], runs[ks[1]]["seconds"]
        out[f"median_scenario_ratio_k{ks[1]}_vs_k{ks[0]}"] = round(statistics.median(
            m / o for o, m in zip(one, many) if o), 2)
    return out


def cowrites(generator, ks, settings: SamplerSettings, length: str = "paragraph", progress=None,
             seeds: int = 2, turns: int = 3) -> dict:
    """Co-write sessions: on each opening and seed, `turns` model turns one after another, each
    the top candidate under the critic, picked into the story as a writer would (a story's prompt
    grows as it does in use). Each opening is written at every k in turn (as adventures() does),
    so the seconds of each k come from the same minutes of the machine; per pair of k also the
    median of the turns' own ratios, and the ratio over first turns alone (a one-line prompt).
    `tokens_drawn_per_turn`: the tokens every candidate of a turn took together, the decode work
    its seconds pay for (k rows of a batch cost less than k single rows, not nothing).
    `steps_per_turn`: the batch's decode steps; `judged_per_turn`: the candidates offered (what
    the ranking had to pick from), `passing_per_turn` those of them the critic passes."""
    runs = {k: {"texts": [], "passed": [], "seconds": [], "first": [], "tokens": [], "steps": [], "judged": [],
                "passing": []} for k in ks}
    for n, (title, opening) in enumerate(COWRITE_OPENINGS):
        for seed in range(seeds):
            for k in ks:
                run = runs[k]
                play = CoWrite(new_story(title, opening=opening, candidates_n=k, length=length))
                for turn in range(turns):
                    steps = [0]
                    start = time.perf_counter()
                    try:
                        ranked = play.propose(generator, settings.with_(
                            seed=(settings.seed or 0) + n + 100 * seed + 1000 * turn),
                            on_step=lambda i: steps.__setitem__(0, i))  # noqa: B023 - called within this turn
                    except StoryloomError:  # nothing usable: a failed turn
                        ranked = []
                    run["seconds"].append(time.perf_counter() - start)
                    run["steps"].append(steps[0])
                    run["judged"].append(len(ranked))
                    run["passing"].append(sum(v.passed for v in play.verdicts(ranked)))
                    stats = getattr(generator, "last_stats", None)  # of the turn's one batch
                    run["tokens"].append(stats.new_tokens if stats is not None else 0)
                    if turn == 0:
                        run["first"].append(run["seconds"][-1])
                    text = ranked[0].text if ranked else ""
                    run["texts"].append(text)
                    run["passed"].append(critic.judge(text, play.brief()).passed)
                    if ranked:
                        play.offer(ranked)
                        play.pick(0)
        if progress:
            progress(f"co-write: {title}", None)
    out = {f"k={k}": _summary(run["texts"], run["passed"], run["seconds"]) for k, run in runs.items()}
    for k, run in runs.items():
        out[f"k={k}"]["tokens_drawn_per_turn"] = round(statistics.fmean(run["tokens"]), 1) if run["tokens"] else 0.0
        for key in ("steps", "judged", "passing"):
            out[f"k={k}"][f"{key}_per_turn"] = round(statistics.fmean(run[key]), 2) if run[key] else 0.0
        out[f"k={k}"]["turns_judging_over_one"] = sum(j > 1 for j in run["judged"])
        out[f"k={k}"]["turns_passing_over_one"] = sum(p > 1 for p in run["passing"])
    if len(ks) == 2:
        one, many = runs[ks[0]], runs[ks[1]]
        out[f"median_turn_ratio_k{ks[1]}_vs_k{ks[0]}"] = round(statistics.median(
            m / o for o, m in zip(one["seconds"], many["seconds"]) if o), 2)
        out[f"first_turn_ratio_k{ks[1]}_vs_k{ks[0]}"] = round(
            statistics.fmean(many["first"]) / statistics.fmean(one["first"]), 2)
    return out


def world_info(generator, k: int, settings: SamplerSettings, progress=None, styles=(adv.WORLD_INFO_STYLE,),
               seeds: int = 1, cases=None, lore_bias: float = adv.worldinfo.DEFAULT_BIAS) -> dict:
    """How often an entry's facts (a name or attribute the action does not say) reach the
    output when the entry is triggered, per placement style, vs the same game without it.

    Each case and style draws one batch of k candidates (seeds: batches), cleaned as a turn is:
    `sample_rate` is the share of all candidates that mention a fact (what one candidate a turn,
    k=1, would show); `picked` the share of batches whose critic pick mentions one (`picked_mentions`
    of `batches`; `pick_pass_share`: how many of those picks the critic passes), with the
    ranking credit for world info (critic.LORE_CREDIT), and `picked_no_credit` without it. One
    batch serves all three, so the comparison costs one generation per case and style. A
    triggered entry's names are raised while writing by `lore_bias` (the phrase bias; 0: off)."""
    conditions = ["absent", *styles]
    stats = {c: {"samples": [], "picked": [], "picked_no_credit": [], "passed": []} for c in conditions}
    for n, (spec, key, text, facts, action) in enumerate(WORLD_CASES if cases is None else cases):
        for case in conditions:
            for seed in range(seeds):
                setting, character = adv.find_scenario(spec)
                game = adv.new_game(setting, character, "Ada")
                game.turns[0].output = "The place is quiet, and nobody seems to notice you arrive."
                if case != "absent":
                    game.world_info = [WorldEntry([key], text)]
                play = adv.Adventure(game, None, world_style=None if case == "absent" else case, lore_bias=lore_bias)
                turn = play.begin("do", action)
                tries = settings.with_(seed=(settings.seed or 0) + n + 100 * seed)
                built = play.prompt_for(turn.action, generator, tries)
                tries = play.turn_settings(tries, play.brief_for(turn.action, built=built))
                texts = [adv.clean_output(raw, turn.action) for raw in generator.candidates(built.text, k, tries)]
                texts = [t for t in texts if t] or [""]
                mention = [any(f in t.lower() for f in facts) for t in texts]
                stats[case]["samples"] += mention
                for name, credit in (("picked", True), ("picked_no_credit", False)):
                    play.lore_rank = credit
                    brief = play.brief_for(turn.action, built=built)
                    verdicts = [critic.judge(t, brief) for t in texts]
                    best = critic.best_first(verdicts)[0]
                    stats[case][name].append(mention[best])
                    if credit:
                        stats[case]["passed"].append(verdicts[best].passed)
        if progress:
            progress(f"world info k={k}: {spec}", None)
    rates = {c: {"sample_rate": _rate(v["samples"]), "picked": _rate(v["picked"]),
                 "picked_no_credit": _rate(v["picked_no_credit"]), "candidates": len(v["samples"]),
                 "picked_mentions": sum(v["picked"]), "batches": len(v["picked"]), "pick_pass_share": _rate(v["passed"])}
             for c, v in stats.items()}
    absent = rates.pop("absent")
    in_use = rates.get(adv.WORLD_INFO_STYLE) or max(rates.values(), key=lambda r: r["picked"])
    return {"fact_mentioned_when_absent": absent["picked"], "fact_mentioned_when_triggered": in_use["picked"],
            "absent": absent, "by_style": rates, "style_in_use": adv.WORLD_INFO_STYLE,
            "rank_credit": adv.WORLD_INFO_RANK, "lore_bias": lore_bias, "k": k,
            "cases": len(WORLD_CASES if cases is None else cases),
            "seeds": seeds}


def quality(spec: str, k: int = adv.DEFAULT_CANDIDATES, seed: int = 1, modes=("adventure", "tree", "cowrite",
                                                                           "world_info"),
            progress: Callable[[str, float | None], None] | None = None, world_styles=(adv.WORLD_INFO_STYLE,),
            world_seeds: int = 1, lore_bias: float = adv.worldinfo.DEFAULT_BIAS) -> dict:
    from storyloom.config import load_config
    from storyloom.engine import models

    generator = models.load(spec, progress)
    settings = load_config().sampler.with_(seed=seed)
    result: dict = {"model": generator.name, "k": k, "seed": seed, "sampler": settings.to_dict(),
                    "scoring": critic.can_score(generator)}
    ks = (1, k) if k != 1 else (1,)
    side_by_side = {"adventure": adventures, "tree": trees, "cowrite": cowrites}
    for mode in modes:
        runs = {}
        if mode in side_by_side:  # every k at once, scenario by scenario (the same minutes of the machine)
            runs = side_by_side[mode](generator, ks, settings, progress=progress)
        elif mode == "world_info":  # one batch gives k=1 (sample_rate) and k (picked)
            runs[f"k={k}"] = world_info(generator, k, settings, progress=progress, styles=world_styles,
                                        seeds=world_seeds, lore_bias=lore_bias)
        one, many = runs.get("k=1", {}), runs.get(f"k={k}", {})
        for key in ("seconds_per_turn", "outcomes_seconds_per_turn"):
            if one.get(key) and many.get(key):
                runs[f"seconds_ratio_k{k}_vs_k1"] = round(many[key] / one[key], 2)
        result[mode] = runs
    return result

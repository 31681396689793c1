"""`storyloom bench memory`: after 200 turns, are the facts of turn 5 still in the prompt?

The turns come from a scripted story (every turn names its own place, person and thing, so the
summary has plenty to forget); turn 5 names the facts measured. The player writes two of them
into memory at turn 5; the summariser (by default whichever the app picks for the model:
`summary.summarizer_for`; or the model itself, or the deterministic extractive stand-in) folds turns as they fall out of the prompt. Reported: the share of turn-5 facts that memory
holds and that the summary named (when it folded turn 5) which are still in the prompt at the
end, and the most tokens the summary and the prompt ever took against their budgets.
"""
from __future__ import annotations

import random
import time

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import adventure as adv
from storyloom.modes import summary as sm
from storyloom.store.stories import Game, Turn

FACT_TURN = 5
FACTS = ("captain voss", "brass compass", "silver gull", "north cliffs", "one-eyed")
FACT_TEXT = ("A one-eyed sailor named Captain Voss slides a brass compass across the table. \"It points to the "
             "wreck of the Silver Gull, below the north cliffs,\" he says.")
MEMORY = "Captain Voss gave you the brass compass."  # what the player writes into memory at turn 5
MEMORY_FACTS = ("captain voss", "brass compass")
PLACES = ["mill", "orchard", "chapel", "market", "bridge", "ferry", "watchtower", "quarry", "vineyard", "bakery",
          "graveyard", "lighthouse", "stable", "library", "tannery", "well", "harbour", "barracks", "abbey", "inn"]
PEOPLE = ["Mara", "Oswin", "Tilda", "Bertram", "Nell", "Corin", "Hester", "Jory", "Wenna", "Aldric", "Ysolde",
          "Pell", "Garrick", "Elspeth", "Rook", "Fenna"]
THINGS = ["a copper ring", "a torn letter", "a jar of honey", "a bone whistle", "a wax seal", "an iron nail",
          "a blue ribbon", "a cracked mirror", "a bag of salt", "a wooden doll", "a silver spoon", "a rope ladder"]
SCENES = ["You reach the {place}. {person} is there and shows you {thing}. {weather}",
          "{weather} At the {place}, {person} hands you {thing} and asks for nothing in return.",
          "{person} waits by the {place} with {thing}. \"Keep it,\" {person} says, and walks off.",
          "The road bends toward the {place}. You find {thing} in the mud, and {person} watches you pick it up.",
          "Inside the {place} it is warm. {person} trades you {thing} for a few coins. {weather}"]
WEATHER = ["The wind is cold.", "Rain begins to fall.", "The sun is low and red.", "Fog rolls in from the river.",
           "Somewhere a bell rings.", "Crows argue on the roofs."]
ACTIONS = ["walk on", "look around", "talk to the stranger", "take what is offered", "rest a while", "follow the road"]


def story(turns: int, seed: int = 5) -> tuple[list[tuple[str, str]], list[str]]:
    """The actions and the outputs of a scripted story of `turns` turns (the opening first)."""
    rng = random.Random(seed)
    outputs = ["You arrive in the town of Kelby at dusk, with a pack and a little money."]
    actions = []
    for i in range(1, turns + 1):
        actions.append(("do", rng.choice(ACTIONS)))
        if i == FACT_TURN:
            outputs.append(FACT_TEXT)
            continue
        place, person, thing = rng.choice(PLACES), rng.choice(PEOPLE), rng.choice(THINGS)
        outputs.append(rng.choice(SCENES).format(place=place, person=person, thing=thing,
                                                 weather=rng.choice(WEATHER)))
    return actions, outputs


class _Story(ScriptedGenerator):
    """The scripted story, counting tokens as the summarising model does (so budgets are real).
    A retry (the same prompt again: the loop guard found a repeat) gets the same text, so the
    story never runs out early."""

    def __init__(self, outputs, count_tokens):
        super().__init__(outputs)
        self._count = count_tokens
        self._last: tuple[str, str] | None = None

    def _stream(self, prompt, settings, cancel):
        if self._last is not None and self._last[0] == prompt:
            self.queue.appendleft(self._last[1])
        self._last = (prompt, self.queue[0] if self.queue else self.default)
        return super()._stream(prompt, settings, cancel)

    def count_tokens(self, text: str) -> int:
        return self._count(text)


def _found(facts, text: str) -> list[str]:
    low = text.lower()
    return [f for f in facts if f in low]


def memory(spec: str | None = "default", turns: int = 200, summarizer: str = "auto", progress=None) -> dict:
    """Play `turns` scripted turns with auto-summary on; see the module docstring."""
    if summarizer in ("auto", "model"):
        from storyloom.engine import models

        generator = models.load(spec or "default", progress)
        # auto: whoever the app picks for this model (the stand-in under 1B parameters)
        writer: sm.Summarizer = sm.summarizer_for(generator) if summarizer == "auto" else sm.ModelSummarizer(generator)
        count = generator.count_tokens
        name = f"{generator.name} ({'model' if isinstance(writer, sm.ModelSummarizer) else 'extractive'})"
    else:
        writer, count, name = sm.ExtractiveSummarizer(), (lambda s: len(s.split()) * 4 // 3 + 1), "extractive"
    actions, outputs = story(turns)
    story_gen = _Story(outputs, count)
    game = Game(title="Memory bench", context="You are a traveller with a pack and a walking stick.",
                turns=[Turn("start", "You walk down the hill toward the town.", "")])
    settings = SamplerSettings(max_new_tokens=80)
    state = {"summary_facts": None, "max_summary": 0, "max_prompt": 0, "budget": 0, "summary_budget": 0,
             "folds": 0, "failed": 0, "seconds": 0.0, "lost_at": {}}
    counter = adv.TokenCounter(count)

    def after(play: adv.Adventure) -> None:
        n = len(play.game.turns) - 1
        if n == FACT_TURN:
            play.game.memory = MEMORY
        start = time.perf_counter()
        try:
            job = sm.keep(play, story_gen, settings, writer)
        except sm.SummaryFailed:
            job, state["failed"] = None, state["failed"] + 1
        state["seconds"] += time.perf_counter() - start
        if job is not None:
            state["folds"] += 1
            if state["summary_facts"] is None and job.start <= FACT_TURN < job.end:
                state["summary_facts"] = _found(FACTS, play.game.summary)
        built = play.prompt_for("", story_gen, settings)
        state["budget"], state["summary_budget"] = built.budget, adv.summary_budget(built.budget)
        state["max_prompt"] = max(state["max_prompt"], built.tokens)
        part = next((p for p in built.parts if p.name == "summary"), None)
        if part is not None:
            state["max_summary"] = max(state["max_summary"], counter(part.text.strip()))
            for fact in state["summary_facts"] or ():
                if fact not in part.text.lower():
                    state["lost_at"].setdefault(fact, n)
        if progress and n % 10 == 0:
            progress(f"memory: turn {n}/{turns}", n / turns)

    adv.play_actions(game, actions, story_gen, settings, candidates=1, primer=False, after_turn=after)
    play = adv.Adventure(game, None, primer=False)
    final = play.prompt_for("> You look around.", story_gen, settings)
    summary_part = "".join(p.text for p in final.parts if p.name == "summary")
    memory_part = "".join(p.text for p in final.parts if p.name == "memory")
    named = state["summary_facts"] or []
    kept = _found(named, summary_part)
    return {
        "summarizer": name, "turns": len(game.turns) - 1, "fact_turn": FACT_TURN,
        "turn_5_in_history": FACT_TEXT[:40] in "".join(p.text for p in final.parts if p.name == "history"),
        "memory_facts": list(MEMORY_FACTS), "memory_facts_in_prompt": _rate(_found(MEMORY_FACTS, memory_part),
                                                                            MEMORY_FACTS),
        "summary_named": named, "summary_named_share": _rate(named, FACTS),
        "summary_facts_in_prompt": _rate(kept, named), "summary_facts_kept": kept,
        "summary_facts_lost_at_turn": state["lost_at"],
        "prompt_tokens_max": state["max_prompt"], "budget": state["budget"],
        "summary_tokens_max": state["max_summary"], "summary_budget": state["summary_budget"],
        "folds": state["folds"], "failed_folds": state["failed"],
        "model_calls": getattr(writer, "calls", None), "model_fallbacks": getattr(writer, "fallbacks", None),
        "summary_seconds": round(state["seconds"], 1), "final_summary": game.summary,
    }


def _rate(found, of) -> float:
    return round(len(found) / len(of), 3) if of else 0.0

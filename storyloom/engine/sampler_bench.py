"""`storyloom bench samplers`: what each sampler adds per token on the native path. Prints JSON.

The token-choice step runs on real next-token logits of the model (its whole vocabulary) with a
real history (a story prompt plus what the model wrote), once per setting, many times; each
sampler's figure is its setting's time minus the base setting's. Phrase banning is timed in the
decode loop itself (its text checks per token), and a backtrack costs one decode step.
"""
from __future__ import annotations

import platform
import statistics
import time

from storyloom.engine.default_model import Progress, _quiet
from storyloom.engine.sampling import SamplerSettings

BASE = SamplerSettings()  # StoryLoom's defaults: top-k 50, top-p 0.95, repetition penalty 1.1
# Each sampler alone on top of the base; min-p also on the full vocabulary (top-k and top-p off,
# as min-p presets run it), against the same base with them off.
FULL = BASE.with_(top_k=0, top_p=1.0)
CASES = {
    "min_p": (BASE, BASE.with_(min_p=0.05)),
    "min_p_full_vocabulary": (FULL, FULL.with_(min_p=0.05)),
    "dry": (BASE, BASE.with_(dry_multiplier=0.8)),
    "xtc": (BASE, BASE.with_(xtc_threshold=0.1, xtc_probability=1.0)),  # fires every token: the worst case
    "all_three": (BASE, BASE.with_(min_p=0.05, dry_multiplier=0.8, xtc_threshold=0.1, xtc_probability=1.0)),
}
BANNED = ("shivers down her spine", "a testament to", "ozone", "barely above a whisper", "tapestry")


def _paired_ms(logits, history, base, with_it, gen, repeats: int) -> tuple[float, float]:
    """(median ms of the base choice, median ms it adds): base and sampler timed in alternating
    rounds of 10 choices, so load from other processes falls on both alike."""
    import torch

    from storyloom.engine.logits import choose_next

    rng = torch.Generator().manual_seed(0)
    contexts = gen.sampler_context(base), gen.sampler_context(with_it)

    def round_ms(settings, context) -> float:
        start = time.process_time()
        for _ in range(10):
            choose_next(logits, history, settings, rng, context)
        return (time.process_time() - start) * 100  # CPU ms per choice

    for settings, context in zip((base, with_it), contexts):
        round_ms(settings, context)  # warm-up
    bases, diffs = [], []
    for _ in range(repeats):
        b = round_ms(base, contexts[0])
        w = round_ms(with_it, contexts[1])
        bases.append(b)
        diffs.append(w - b)
    return statistics.median(bases), statistics.median(diffs)


def samplers(spec: str = "default", history_tokens: int = 1024, repeats: int = 30, decode_tokens: int = 48,
             progress: Progress = _quiet) -> dict:
    import torch

    from storyloom.engine import models
    from storyloom.engine.bench import STORY, _prompt_of

    gen = models.load(models.parse_spec(spec), progress)
    if not hasattr(gen, "sampler_context"):
        from storyloom import StoryloomError

        raise StoryloomError("bench samplers times the local decode loop: give a local model, not a server.")
    progress("Real logits and history", None)
    prompt = _prompt_of(gen, history_tokens)
    ids = gen.encode(prompt)
    state = gen.decode_state(ids)
    logits = state.logits.clone()
    history = torch.tensor([ids], dtype=torch.long)
    result: dict = {
        "model": gen.name,
        "engine": gen.info.extra.get("engine"),
        "vocabulary": int(logits.shape[-1]),
        "history_tokens": int(history.shape[-1]),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "base": "top_k 50, top_p 0.95, repetition_penalty 1.1 (StoryLoom's defaults)",
    }
    start = time.perf_counter()
    gen.sampler_context(BASE.with_(dry_multiplier=0.8, xtc_probability=0.5))
    result["token_sets_once_ms"] = round((time.perf_counter() - start) * 1000, 1)  # DRY breakers, XTC's kept
    added, base_ms = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU time of one thread: what the step costs, not what other load costs
    try:
        for name, (base, with_it) in CASES.items():
            progress(f"Sampler: {name}", None)
            base_ms[base is FULL], added[name] = _paired_ms(logits, history, base, with_it, gen, repeats)
            added[name] = round(added[name], 3)
        banning = _banning_ms(gen, ids, repeats)
    finally:
        torch.set_num_threads(threads)
    result["base_choice_ms"] = round(base_ms[False], 3)
    result["full_vocabulary_choice_ms"] = round(base_ms[True], 3)
    result["added_ms_per_token"] = added

    progress("Decode step and phrase banning", None)
    tokens = decode_tokens
    plain = BASE.with_(temperature=0, max_new_tokens=tokens, repetition_penalty=1.0)
    gen.generate(STORY, plain.with_(max_new_tokens=4))  # warm-up
    steps = []
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            start = time.process_time()
            gen.generate(STORY, plain)
            steps.append((time.process_time() - start) / max(1, gen.last_stats.new_tokens))
    finally:
        torch.set_num_threads(threads)
    result["decode_ms_per_token"] = round(statistics.median(steps) * 1000, 2)  # CPU ms, one thread
    result["added_ms_per_token"]["banned_phrases_5"] = round(banning, 3)
    result["backtrack_ms"] = result["decode_ms_per_token"]  # the cache goes back, one token is fed again
    result["note"] = ("added_ms_per_token: each sampler's cost over the base choice on this vocabulary (CPU ms of "
                      "one thread, paired medians); banned_phrases_5: the ban's own work per token (text checks, the history "
                      "rebuilt) on a 48-token output; the forward is the same with or without it; decode_ms_per_token: one whole "
                      "token (step and choice) in CPU ms of one thread, for scale")
    return result


def _banning_ms(gen, prompt_ids: list[int], repeats: int) -> float:
    """Per token, what the banning loop does beyond the plain one: look for a formed phrase, find
    what to hold back, and build the history tensor from the kept ids."""
    import torch

    from storyloom.engine.banning import PhraseBan
    from storyloom.engine.bench import STORY

    ban = PhraseBan(BANNED)
    text = STORY[:240]  # about 48 tokens of output
    out_ids = gen.encode(text, special=False)
    rounds = []
    for _ in range(repeats):
        start = time.process_time()
        for n in range(1, len(out_ids) + 1):
            shown = text[: len(text) * n // len(out_ids)]
            ban.find(shown)
            ban.hold(shown)
            torch.tensor([prompt_ids + out_ids[:n]], dtype=torch.long)
        rounds.append((time.process_time() - start) * 1000 / len(out_ids))
    return statistics.median(rounds)

"""`storyloom bench poetry`: do generated poems scan and rhyme, how fast, how fluent. Prints JSON.

For each form, poems with seeds 1..N: the share of lines the scanner passes, the share of rhyme
pairs that rhyme, seconds per poem, and fluency (mean token log-prob of the poem under the
model, next to an unconstrained sample of the same length from the same prompt, where the
engine can score text). On an engine that follows grammars instead of being steered token by
token, also the grammar's size per line. Also scans Shakespeare's sonnets (tests/data) to show
how strict the scanner is.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from storyloom.engine import models
from storyloom.engine.constrained import steers_tokens
from storyloom.engine.default_model import Progress, _quiet
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.poetry.compose import compose, poem_prompt, vocabulary_for
from storyloom.modes.poetry.constrain import MIN_PARTNERS, RhymeRule, default_lexicon
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.grammar import line_grammar
from storyloom.modes.poetry.prosody import echoes, rhyme_keys
from storyloom.modes.poetry.scan import last_word, scan_line, scan_poem

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


READER_CHECKS = ("rhymes_on_weak_syllables", "echo_rhymes", "repeated_line_ends")


def reader_checks(poem) -> dict:
    """What a reader would not keep, counted apart from the scanner's verdict (each should be 0):
    lines that scan only with the rhyme on a weak syllable (a one-syllable word tacked on as the
    extra weak syllable, say), rhyme pairs that echo (tale/tail, ever/forever), and lines ending
    on a word (or its echo) that a line of another rhyme group already ended on."""
    form, lines = poem.form, poem.lines
    weak = echo = repeated = 0
    ends = [last_word(line.text) if line.ok else "" for line in lines]
    for i, end in enumerate(ends):
        if end and any(other and form.letters[j] != form.letters[i] and (other == end or echoes(other, end))
                       for j, other in enumerate(ends[:i])):
            repeated += 1
    for i, line in enumerate(lines):
        if not line.ok:
            continue
        templates = form.templates(i)
        if scan_line(line.text, templates, stressed_rhyme=False).meter_ok and not scan_line(line.text, templates).meter_ok:
            weak += 1
        partners = form.partners(i)
        if partners and lines[partners[0]].ok and echoes(last_word(lines[partners[0]].text), last_word(line.text)):
            echo += 1
    return {"rhymes_on_weak_syllables": weak, "echo_rhymes": echo, "repeated_line_ends": repeated}


def grammar_sizes() -> dict:
    """Bytes of the GBNF grammar of a line (what the grammar path sends with each request)."""
    lexicon = default_lexicon()
    out = {}
    for key, line in (("sonnet", 0), ("limerick", 0), ("limerick", 2), ("haiku", 0)):
        form = get_form(key)
        day = RhymeRule(frozenset(rhyme_keys("day")), frozenset({"day"}))
        for name, rule in (("opening", RhymeRule(partners=MIN_PARTNERS)), ("rhyming_with_day", day)):
            grammar = line_grammar(lexicon, form.templates(line), rule) or ""
            out[f"{key}_line{line + 1}_{name}"] = len(grammar.encode())
    return out


def poetry(spec: str = "default", forms: list[str] | None = None, poems: int = 10, time_cap: float = 90.0,
           progress: Progress = _quiet, gen=None) -> dict:
    """`gen`: an already loaded generator instead of `spec` (a grammar-only engine, say)."""
    gen = gen if gen is not None else models.load(spec, progress)
    start = time.perf_counter()
    steered = steers_tokens(gen)
    result: dict = {"model": gen.name, "path": "tokens" if steered else "grammar"}
    if steered:
        result["vocabulary_words"] = len(vocabulary_for(gen))
    else:
        result["vocabulary_words"] = len(default_lexicon())
        result["grammar_bytes"] = grammar_sizes()
    result["vocabulary_build_s"] = round(time.perf_counter() - start, 2)
    result["forms"] = {}
    scoring = gen.capabilities.scoring or steered
    for key in forms or ["sonnet", "limerick", "ballad", "couplets", "haiku"]:
        form = get_form(key)
        rows = []
        for seed in range(1, poems + 1):
            progress(f"{form.name}: poem {seed} of {poems}", (seed - 1) / poems)
            topic = TOPICS[(seed - 1) % len(TOPICS)]
            poem = compose(gen, form, topic, seed=seed, time_cap=time_cap)
            verdict = scan_poem(poem.text, form)
            row = {"seed": seed, "topic": topic, "seconds": round(poem.seconds, 2), **reader_checks(poem),
                   "seconds_per_line": round(poem.seconds / form.lines, 2),
                   "lines_passing": sum(v.meter_ok for v, line in zip(verdict.lines, poem.lines) if line.ok),
                   "lines": form.lines, "rhyme_pairs": verdict.rhyme_pairs,
                   "rhyme_pairs_ok": verdict.rhyme_pairs_ok, "complete": poem.complete,
                   "backtracks": poem.backtracks, "line_tries": poem.line_tries}
            if scoring:
                prompt = poem_prompt(gen, form, topic)
                tokens = sum(line.tokens for line in poem.lines) or 1
                free = gen.generate(prompt, SamplerSettings(seed=seed, max_new_tokens=tokens))
                poem_lp, free_lp = gen.score_many(prompt, [poem.text, free])
                row.update(logprob_poem=round(poem_lp, 3), logprob_unconstrained=round(free_lp, 3))
            row["text"] = poem.text
            rows.append(row)
        lines = sum(r["lines"] for r in rows)
        pairs = sum(r["rhyme_pairs"] for r in rows)
        summary = {
            "poems": len(rows),
            "complete_poems": sum(r["complete"] for r in rows),
            "share_lines_passing": round(sum(r["lines_passing"] for r in rows) / lines, 4),
            "share_rhyme_pairs_passing": round(sum(r["rhyme_pairs_ok"] for r in rows) / pairs, 4) if pairs else None,
            "seconds_per_poem_mean": round(statistics.fmean(r["seconds"] for r in rows), 2),
            "seconds_per_poem_max": max(r["seconds"] for r in rows),
            "seconds_per_line_mean": round(sum(r["seconds"] for r in rows) / lines, 2),
            **{k: sum(r[k] for r in rows) for k in READER_CHECKS},
        }
        if scoring:
            summary["mean_logprob_poem"] = round(statistics.fmean(r["logprob_poem"] for r in rows), 3)
            summary["mean_logprob_unconstrained"] = round(statistics.fmean(r["logprob_unconstrained"] for r in rows), 3)
        result["forms"][key] = {**summary, "per_poem": rows}
    result["shakespeare_scan"] = shakespeare()
    return result

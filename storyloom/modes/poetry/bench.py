"""`storyloom bench poetry`: do generated poems scan and rhyme, how fast, how fluent. Prints JSON.

For each form, poems with seeds 1..N (or first_seed..first_seed+N-1: seeds held out from tuning):
the share of lines the scanner passes, the share of rhyme pairs that rhyme, seconds per poem, and
fluency (mean token log-prob of the poem under the model, next to an unconstrained sample of the
same length from the same prompt, where the engine can score text). On an engine that follows
grammars instead of being steered token by token, also the grammar's size per line. Also scans
Shakespeare's sonnets (assets/, so an installed wheel has them) to show how strict the scanner is.

Each form also counts the defects a reader named (reader_checks, model_checks: each should be 0),
the fluency gap (unconstrained minus poem mean log-prob), seconds and CPU seconds per poem, and
the load average seen while it ran (another program's load slows every poem), and the lines the
revision wrote again (revise.py) with the seconds it took (part of the poem's).
"""
from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path

from storyloom.engine import models
from storyloom.engine.constrained import steers_tokens
from storyloom.engine.default_model import Progress, _quiet
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import wordfilter
from storyloom.modes.poetry.compose import (REPEATED_PHRASE_LINES, breaks_off, compose, opening, phrase_repeats,
                                            poem_prompt, vocabulary_for)
from storyloom.modes.poetry.constrain import FILLER, MIN_PARTNERS, SLANG, RhymeRule, default_lexicon
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.grammar import line_grammar
from storyloom.modes.poetry.prosody import echoes, rhyme_keys, words_of
from storyloom.modes.poetry.scan import last_word, scan_line, scan_poem
from storyloom.paths import assets_dir

TOPICS = ["the sea", "autumn", "a lost key", "the city at night", "my grandmother's garden",
          "a cat", "winter", "the moon", "an old train", "the first day of spring"]
SHAKESPEARE = "shakespeare-sonnets.txt"  # in assets/


def shakespeare(path: Path | None = None) -> dict:
    path = path or assets_dir() / SHAKESPEARE
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


READER_CHECKS = ("rhymes_on_weak_syllables", "echo_rhymes", "repeated_line_ends", "acronym_readings",
                 "repeated_openings", "repeated_phrases", "filler_words", "filtered_words", "open_endings")
MODEL_CHECKS = ("forced_rhyme_words", "topic_drift")  # need an engine that scores text
FORCED_LOGPROB = -8.0  # nats for the last word: a word the model would not have said there
DRIFT_AFTER = 6  # lines after the sixth are where drift was seen


def reader_checks(poem) -> dict:
    """What a reader would not keep, counted apart from the scanner's verdict (each should be 0),
    in lines: lines that scan only with the rhyme on a weak syllable (a one-syllable word tacked on
    as the extra weak syllable, say), rhyme pairs that echo (tale/tail, ever/forever), lines ending
    on a word (or its echo) that a line of another rhyme group already ended on, lines that scan
    only by reading a word letter by letter (am as A.M.), lines opening with the same four words as
    an earlier one, lines that share a phrase (two words ending on one of its own, the topic's aside:
    "a lone star", "a lone one") with two or more earlier lines, lines with filler words (dude, lame),
    lines with a word the word filter lists, and a last line that does not end its sentence
    ("...to hold on to me till")."""
    form, lines = poem.form, poem.lines
    weak = echo = repeated = spelled = openings = filler = filtered = tics = 0
    topic = frozenset(words_of(poem.topic))
    ends = [last_word(line.text) if line.ok else "" for line in lines]
    for i, end in enumerate(ends):
        if end and any(other and form.letters[j] != form.letters[i] and (other == end or echoes(other, end))
                       for j, other in enumerate(ends[:i])):
            repeated += 1
    seen: set[tuple[str, ...]] = set()
    for i, line in enumerate(lines):
        if not line.ok:
            continue
        templates = form.templates(i)
        ok = scan_line(line.text, templates).meter_ok
        if scan_line(line.text, templates, stressed_rhyme=False).meter_ok and not ok:
            weak += 1
        if scan_line(line.text, templates, spelled=True).meter_ok and not ok:
            spelled += 1
        partners = form.partners(i)
        if partners and lines[partners[0]].ok and echoes(last_word(lines[partners[0]].text), last_word(line.text)):
            echo += 1
        start = opening(line.text)
        if start is not None:
            openings += start in seen
            seen.add(start)
        tics += phrase_repeats(line.text, [x.text for x in lines[:i] if x.ok], topic) >= REPEATED_PHRASE_LINES
        words = words_of(line.text)
        filler += any(w in FILLER or w in SLANG for w in words)
        filtered += any(wordfilter.blocked(w) for w in words)
    return {"rhymes_on_weak_syllables": weak, "echo_rhymes": echo, "repeated_line_ends": repeated,
            "acronym_readings": spelled, "repeated_openings": openings, "repeated_phrases": tics,
            "filler_words": filler, "filtered_words": filtered, "open_endings": open_ending(poem)}


def open_ending(poem) -> int:
    """1 when the poem's last line breaks off: no . ! or ? at its end (where its form ends on a sentence)."""
    last = poem.lines[-1] if poem.lines else None
    return int(last is not None and last.ok and breaks_off(poem.form, len(poem.lines) - 1, last.text))


_LAST = re.compile(r"^(.*?)\s*([A-Za-z][A-Za-z']*)([^A-Za-z]*)$")


def model_checks(gen, poem, prompt: str, other_prompt: str) -> dict:
    """Defects the model itself can see. forced_rhyme_words: lines whose last word has a log-prob
    below FORCED_LOGPROB after the poem so far, read as its text reads, stanza breaks and all (as
    compose wrote it and the fluency is scored; the rhyme word tacked on, not said). topic_drift:
    lines after the sixth that the topic's heading makes no likelier than another topic's
    (log-prob with this heading minus with the other's, <= 0). Also the mean of that gain early and late."""
    forced = 0
    finals = []
    before = prompt
    breaks = poem.form.stanza_breaks()
    for i, line in enumerate(poem.lines):
        if not line.ok:
            before += "\n" if i in breaks else ""
            continue
        m = _LAST.match(line.text)
        if m:
            word = " " + m.group(2) if m.group(1) else m.group(2)
            n = max(1, gen.count_tokens(word))
            lp = gen.score(before + m.group(1), word) * n
            finals.append(lp)
            forced += lp < FORCED_LOGPROB
        before += line.text + "\n" + ("\n" if i in breaks else "")
    texts = [line.text for line in poem.lines if line.ok]
    gains = ([a - b for a, b in zip(gen.score_many(prompt, texts), gen.score_many(other_prompt, texts))]
             if texts else [])
    late = gains[DRIFT_AFTER:]
    return {"forced_rhyme_words": forced, "topic_drift": sum(g <= 0 for g in late),
            "rhyme_word_logprob_mean": round(statistics.fmean(finals), 3) if finals else None,
            "topic_gain_early": round(statistics.fmean(gains[:DRIFT_AFTER]), 3) if gains else None,
            "topic_gain_late": round(statistics.fmean(late), 3) if late else None}


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
           progress: Progress = _quiet, gen=None, first_seed: int = 1) -> dict:
    """`gen`: an already loaded generator instead of `spec` (a grammar-only engine, say). Seeds
    first_seed.. (a seed's topic is TOPICS[(seed - 1) % len(TOPICS)], as for seeds 1..N)."""
    gen = gen if gen is not None else models.load(spec, progress)
    start = time.perf_counter()
    steered = steers_tokens(gen)
    result: dict = {"model": gen.name, "path": "tokens" if steered else "grammar", "first_seed": first_seed}
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
        for n, seed in enumerate(range(first_seed, first_seed + poems)):
            progress(f"{form.name}: poem {n + 1} of {poems} (seed {seed})", n / poems)
            topic = TOPICS[(seed - 1) % len(TOPICS)]
            load, cpu = os.getloadavg()[0], time.process_time()
            poem = compose(gen, form, topic, seed=seed, time_cap=time_cap)
            rows.append(measure(gen, poem, seed, time.process_time() - cpu, max(load, os.getloadavg()[0]), scoring))
        result["forms"][key] = {**summarise(rows, scoring), "per_poem": rows}
    result["shakespeare_scan"] = shakespeare()
    return result


def measure(gen, poem, seed: int, cpu: float, load: float, scoring: bool) -> dict:
    """One poem's row: the scanner's verdict, the defects, time, and (scoring) fluency."""
    form, topic = poem.form, poem.topic
    verdict = scan_poem(poem.text, form)
    row = {"seed": seed, "topic": topic, "seconds": round(poem.seconds, 2), "cpu_seconds": round(cpu, 2),
           "load_average": round(load, 2), **reader_checks(poem),
           "seconds_per_line": round(poem.seconds / form.lines, 2),
           "lines_passing": sum(v.meter_ok for v, line in zip(verdict.lines, poem.lines) if line.ok),
           "lines": form.lines, "rhyme_pairs": verdict.rhyme_pairs,
           "rhyme_pairs_ok": verdict.rhyme_pairs_ok, "complete": poem.complete, "scanner_pass": verdict.ok,
           "backtracks": poem.backtracks, "line_tries": poem.line_tries, "searched_lines": poem.searches,
           "revised_lines": poem.revisions, "revision_seconds": round(poem.revision_seconds, 2)}
    if scoring:
        prompt = poem_prompt(gen, form, topic)
        other = poem_prompt(gen, form, TOPICS[(TOPICS.index(topic) + 1) % len(TOPICS)] if topic in TOPICS else "a cat")
        tokens = sum(line.tokens for line in poem.lines) or 1
        free = gen.generate(prompt, SamplerSettings(seed=seed, max_new_tokens=tokens))
        poem_lp, free_lp = gen.score_many(prompt, [poem.text, free])
        row.update(logprob_poem=round(poem_lp, 3), logprob_unconstrained=round(free_lp, 3),
                   **model_checks(gen, poem, prompt, other))
    row["text"] = poem.text
    return row


def summarise(rows: list[dict], scoring: bool) -> dict:
    lines = sum(r["lines"] for r in rows)
    pairs = sum(r["rhyme_pairs"] for r in rows)
    checks = READER_CHECKS + (MODEL_CHECKS if scoring else ())
    summary = {
        "poems": len(rows),
        "complete_poems": sum(r["complete"] for r in rows),
        "poems_passing_scanner": sum(r["scanner_pass"] for r in rows),
        "share_lines_passing": round(sum(r["lines_passing"] for r in rows) / lines, 4),
        "share_rhyme_pairs_passing": round(sum(r["rhyme_pairs_ok"] for r in rows) / pairs, 4) if pairs else None,
        "seconds_per_poem_mean": round(statistics.fmean(r["seconds"] for r in rows), 2),
        "seconds_per_poem_max": max(r["seconds"] for r in rows),
        "seconds_per_line_mean": round(sum(r["seconds"] for r in rows) / lines, 2),
        "cpu_seconds_per_poem_mean": round(statistics.fmean(r["cpu_seconds"] for r in rows), 2),
        "load_average_max": max(r["load_average"] for r in rows),
        "searched_lines": sum(r["searched_lines"] for r in rows),
        "revised_lines": sum(r["revised_lines"] for r in rows),
        "revision_seconds_per_poem_mean": round(statistics.fmean(r["revision_seconds"] for r in rows), 2),
        "defects": {k: sum(r[k] for r in rows) for k in checks},
    }
    summary["defects_total"] = sum(summary["defects"].values())
    if scoring:
        summary["mean_logprob_poem"] = round(statistics.fmean(r["logprob_poem"] for r in rows), 3)
        summary["mean_logprob_unconstrained"] = round(statistics.fmean(r["logprob_unconstrained"] for r in rows), 3)
        summary["fluency_gap"] = round(summary["mean_logprob_unconstrained"] - summary["mean_logprob_poem"], 3)
        for k in ("rhyme_word_logprob_mean", "topic_gain_early", "topic_gain_late"):
            values = [r[k] for r in rows if r.get(k) is not None]
            summary[k] = round(statistics.fmean(values), 3) if values else None
    return summary

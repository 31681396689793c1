"""Auto-summary memory: turns that fell out of the prompt are folded into a running summary kept
beside memory, so what happened long ago still reaches the model.

The summary is one line per fold. Each fold asks the summariser for a short line about the new
turns only (small models summarise a passage far better than they rewrite a whole summary);
when the lines outgrow their budget, the shortest adjacent pair is merged into one line (so
lines get merged about equally often, as in a binary counter, instead of the oldest being
squeezed again and again), and a last single line that is still too long is cut to whole words.
So the summary never overflows `summary_budget`, and a failed or cancelled fold changes nothing.

Pure Python, no UI: the adventure screen runs `fold` in a background worker after a turn is
committed; `storyloom bench memory` and the tests run it in line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import critic
from storyloom.modes.text import SENTENCE_END, TokenCounter, cut_special, fit_text
from storyloom.store.stories import Game, Turn

FOLD_EVERY = 4  # fold once this many turns are out of the prompt and not yet in the summary
FOLD_MAX = 8  # turns per fold at most: a backlog (after a pin or "off") catches up over several turns
LINE_WORDS = 40  # what one fold's line may say
MERGE_WORDS = 50  # what a merge of two lines may say
MODES = ("auto", "pinned", "off")
MODE_LABEL = {"auto": "kept up to date", "pinned": "pinned (kept as it is)", "off": "off (left out of the prompt)"}


class SummaryFailed(StoryloomError):
    """The summariser gave nothing usable (or was stopped): the old summary stays."""


class Summarizer(Protocol):
    def summarize(self, text: str, words: int, cancel=None) -> str:
        """`text` in at most about `words` words, keeping names, places and objects."""


@dataclass(frozen=True)
class Fold:
    """Turns [start, end) to fold into `summary` (as it was when the fold was planned)."""

    start: int
    end: int
    summary: str
    passage: str
    budget: int  # tokens the whole summary line may take in the prompt


def lines(summary: str) -> list[str]:
    return [line.strip() for line in summary.splitlines() if line.strip()]


def passage(turns: list[Turn]) -> str:
    """The turns as a story to summarise ("> You open the door." stays: it says who did what)."""
    out = []
    for turn in turns:
        out += [turn.action.strip(), turn.output.strip()]
    return "\n".join(p for p in out if p)


def plan(game: Game, turns_in_prompt: int, budget: int) -> Fold | None:
    """The next fold when enough turns fell out of the prompt and the summary is kept up to
    date; None otherwise (pinned, off, or too few new turns out)."""
    if game.summary_mode != "auto":
        return None
    out = len(game.turns) - turns_in_prompt
    start = min(game.summary_upto, len(game.turns))
    if out - start < FOLD_EVERY:
        return None
    end = min(out, start + FOLD_MAX)
    return Fold(start, end, game.summary, passage(game.turns[start:end]), budget)


def fold(job: Fold, summarizer: Summarizer, count: TokenCounter, cancel=None) -> str:
    """The summary with job's turns folded in, within job.budget tokens (as the prompt shows it).
    Raises SummaryFailed when the summariser writes nothing usable or is cancelled."""
    from storyloom.modes.adventure import summary_line

    new = _usable(summarizer.summarize(job.passage, LINE_WORDS, cancel), cancel)
    kept = lines(job.summary) + [new]
    while count(summary_line("\n".join(kept))) > job.budget and len(kept) > 1:
        i = min(range(len(kept) - 1), key=lambda j: count(kept[j]) + count(kept[j + 1]))
        pair = kept[i] + " " + kept[i + 1]
        try:
            merged = _usable(summarizer.summarize(pair, MERGE_WORDS, cancel), cancel)
        except SummaryFailed:
            if cancel is not None and cancel.is_set():
                raise
            merged = pair  # the cut below keeps what fits
        if count(merged) >= count(pair):  # a merge that did not shorten: keep the pair's start
            merged = _whole_sentences(fit_text(pair, count, max(1, count(pair) // 2), keep_end=False))
        kept[i:i + 2] = [merged]
    text = "\n".join(kept)
    if count(summary_line(text)) > job.budget:  # one line still too long: its start, cut to fit
        room = job.budget - count(summary_line(""))
        text = _whole_sentences(fit_text(text, count, room, keep_end=False))
        while text and count(summary_line(text)) > job.budget:
            text = " ".join(text.split(" ")[:-1])
    return text


def apply(game: Game, job: Fold, text: str) -> bool:
    """Put a finished fold into the game, unless the game moved on in a way that makes it wrong
    (the player edited, pinned or turned off the summary, or undid the folded turns)."""
    if game.summary != job.summary or game.summary_mode != "auto" or len(game.turns) < job.end:
        return False
    game.summary, game.summary_upto = text, job.end
    return True


def set_mode(game: Game, mode: str) -> None:
    if mode not in MODES:
        raise StoryloomError(f"The summary is one of {', '.join(MODES)}, not {mode!r}.")
    game.summary_mode = mode


def edit(game: Game, text: str) -> None:
    """The player's own summary: kept as written (one line per paragraph)."""
    game.summary = "\n".join(lines(text))


def _usable(text: str, cancel=None) -> str:
    if cancel is not None and cancel.is_set():
        raise SummaryFailed("The summary was stopped; the old one stays.")
    text = _whole_sentences(text)
    if len(text.split()) < 3:
        raise SummaryFailed("The model wrote no usable summary; the old one stays.")
    return text


def _whole_sentences(text: str) -> str:
    text = " ".join(text.split())
    ends = list(SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else text


# -- summarisers ----------------------------------------------------------------------
# Tried on SmolLM2-135M: "Summarize this..." invents sailors and swords; a system prompt or a
# few-shot example gets a chatbot reply; asking for "the key facts (who, what, where)" after the
# text keeps the names best. Whatever it writes, sentences naming anyone or anything the text
# does not are dropped (a small model's summary must not make up the past).
INSTRUCTION = ("Text:\n{text}\n\nWrite one or two sentences (at most {words} words) with the key facts of "
               "the text (who, what, where). Use the names from the text.")
_PREAMBLE = re.compile(r"^(here is|here's|sure|in (this|the) (passage|part|story|text)|this (passage|part|story|text)"
                       r"|the (passage|story|text) (describes|tells|is about)|summary)\b[^:,.]*[:,.]?\s*",
                       re.IGNORECASE)
_NAME = re.compile(r"\b[A-Z][a-z]{2,}")
_COMMON_CAPS = {"you", "your", "the", "this", "that", "then", "there", "they", "she", "his", "her", "its", "when",
                "while", "after", "before", "with", "and", "but", "key", "text", "who", "what", "where"}


def faithful(summary: str, source: str) -> str:
    """The sentences of `summary` that name only people, places and things `source` names."""
    known = {w[:5].lower() for w in re.findall(r"[A-Za-z]{3,}", source)}
    kept = []
    for sentence in re.split(r"(?<=[.!?])\s+", summary.strip()):
        names = [n for n in _NAME.findall(sentence) if n.lower() not in _COMMON_CAPS
                 and n.lower() not in critic.STOPWORDS]  # a sentence's first word counts too ("Rachel, a ...")
        if sentence and all(n[:5].lower() in known for n in names):
            kept.append(sentence)
    return " ".join(kept)


class ExtractiveSummarizer:
    """A deterministic stand-in with no model: keeps the sentences that carry the most of what
    the rest of the text does not (maximal marginal relevance), in their order, up to the word
    limit. Each sentence's words count by how rare they are in the text (names, numbers and the
    capitalised words a sentence begins with when the text names them elsewhere count double),
    and a word once kept counts no more. So a one-off captain and his compass outlive the tenth
    "Keep it," Pell says": what recurs is in the recent turns anyway, and what is said once is
    what a summary must carry. For small models (`summarizer_for`), tests, `bench memory
    --summarizer extractive`, and a model's unusable answer."""

    _CAPITAL = re.compile(r"[A-Z][a-z]+")

    def summarize(self, text: str, words: int, cancel=None) -> str:
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s.strip()]
        sentences = [s for s in sentences if not s.startswith(">")] or sentences
        named = {w.lower() for s in sentences for w in self._CAPITAL.findall(s[1:])} | \
            {w.lower() for w in re.findall(r"\d+", text)}
        items = [self._items(s, named) for s in sentences]
        spread: dict[str, int] = {}
        for found in items:
            for item in found:
                spread[item] = spread.get(item, 0) + 1
        weight = {item: (2.0 if item in named else 1.0) / spread[item] for item in spread}
        chosen, used, said = [], 0, set()
        left = set(range(len(sentences)))
        def gain(i: int) -> tuple[float, int]:  # new weight per square root of length; earlier wins ties
            return sum(weight[x] for x in items[i] - said) / len(sentences[i].split()) ** 0.5, -i

        while left:
            best = max(left, key=gain)
            left.discard(best)
            n = len(sentences[best].split())
            if chosen and (used + n > words or gain(best)[0] <= 0):
                continue
            chosen.append(best)
            used += n
            said |= items[best]
        return " ".join(sentences[i] for i in sorted(chosen))

    @staticmethod
    def _items(sentence: str, named: set[str]) -> set[str]:
        out = set()
        for w in re.findall(r"[A-Za-z][A-Za-z'-]*|\d+", sentence):
            low = w.lower()
            if low in named or (len(w) >= 4 and low not in critic.STOPWORDS and low not in _COMMON_CAPS):
                out.add(low if low in named else low[:5])
        return out


EXTRACTIVE = ExtractiveSummarizer()  # stateless: one serves every game


class ModelSummarizer:
    """Summaries written by any Generator (local or remote), through its chat format.

    Greedy decoding, so a retry would write the same again: when the model's answer is unusable
    (empty, or naming what the text does not), the fold takes the extractive stand-in's line
    instead, and `fallbacks` counts it. Errors and cancels still raise: the old summary stays."""

    def __init__(self, generator, settings: SamplerSettings | None = None,
                 fallback: Summarizer | None = EXTRACTIVE):
        self.generator = generator
        self.settings = settings or SamplerSettings(temperature=0.0, repetition_penalty=1.1, max_new_tokens=96)
        self.fallback = fallback
        self.calls = self.fallbacks = 0

    def summarize(self, text: str, words: int, cancel=None) -> str:
        self.calls += 1
        prompt = self.generator.chat_prompt([{"role": "user",
                                              "content": INSTRUCTION.format(text=text.strip(), words=words)}])
        settings = self.settings.with_(max_new_tokens=min(self.settings.max_new_tokens, words * 2 + 16),
                                       stop=tuple(dict.fromkeys(self.settings.stop + ("\n\n",)
                                                                + tuple(self.generator.stop_strings))))
        out = cut_special(self.generator.generate(prompt, settings, cancel)).strip()
        if cancel is not None and cancel.is_set():
            return ""
        out = faithful(_whole_sentences(_PREAMBLE.sub("", out, count=1)), text)
        out = " ".join(out.split()[: words + words // 2])
        if len(out.split()) < 3 and self.fallback is not None:
            self.fallbacks += 1
            return self.fallback.summarize(text, words, cancel)
        return out


# -- keeping it up to date -------------------------------------------------------------
def due(play, generator, settings: SamplerSettings) -> Fold | None:
    """The fold the game needs now, judged by the prompt of its next turn (`play` an Adventure)."""
    from storyloom.modes.adventure import summary_budget

    built = play.prompt_for("", generator, settings)
    return plan(play.game, built.turns_included, summary_budget(built.budget))


MODEL_SUMMARY_MIN_PARAMETERS = 1_000_000_000


def summarizer_for(generator) -> Summarizer:
    """Who writes a game's summary: the model when it is big enough to do it faithfully (1B+
    parameters, or a server, whose size is unknown), else the extractive stand-in. The embedded
    135M model's summaries invented people and kept none of the facts of turn 5 after 200 turns
    (`bench memory --summarizer model`), where the stand-in kept 3 of 5."""
    info = getattr(generator, "info", None)
    parameters = getattr(info, "parameters", None)
    if parameters is not None and parameters < MODEL_SUMMARY_MIN_PARAMETERS:
        return EXTRACTIVE
    return ModelSummarizer(generator)


def keep(play, generator, settings: SamplerSettings, summarizer: Summarizer, cancel=None) -> Fold | None:
    """Headless: fold what is due, in line (the bench, `play`); returns the fold made, if any."""
    job = due(play, generator, settings)
    if job is None:
        return None
    text = fold(job, summarizer, TokenCounter(generator.count_tokens), cancel)
    return job if apply(play.game, job, text) else None

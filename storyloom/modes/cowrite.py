"""Co-write mode as plain Python: the writer and the model take turns on one story.

On the model's turn it samples several candidates in one batched call and a ranker puts the
best first (sample-and-rank, Nichols et al. 2020). The writer picks one (editing it first if
they like), asks for more, or writes the turn themselves; any turn can be edited or removed
later and the model's next turn sees the change. Every change is saved as it happens.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import wraps
from typing import Callable, Protocol, Sequence

from storyloom import StoryloomError
from storyloom.engine.generate import RowLogprobs
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import critic
from storyloom.modes.text import SENTENCE_END, TokenCounter, cut_special, fit_text, latest_that_fit
from storyloom.store.cowrite import LENGTHS, Candidate, CoStory, CoTurn, CowriteStore

DEFAULT_CANDIDATES = 4
MAX_CANDIDATES = 8
# New tokens per candidate for each turn length ("free" uses the sampler's max_new_tokens).
LENGTH_TOKENS = {"sentence": 40, "paragraph": 120}
# No end of text before this many tokens. The prompt ends on the last turn's full stop, where a
# small model often ends the text at once (3 of 32 later turns in `bench quality` had all 4
# candidates empty), and a paragraph turn that ends after a sentence or two fails its length.
MIN_TURN_TOKENS = {"sentence": 8, "paragraph": 40}
MAX_PROMPT_TOKENS = 2048  # as in adventure: prefill cost and a small model's focus
TURN_BREAK = "\n\n"  # turns are paragraphs of the story
REPETITION_NGRAM = 3
# Mean token log-probs of fluent text from a small model sit near -2..-3, while a passage
# copied from earlier in the story scores near -0.5: a full repeat must cost more than that gap.
REPETITION_WEIGHT = 4.0
# PMI: the log-prob a text gains from the story over a neutral prompt. Generic lines ("He
# nodded.") are likely anywhere, so mean log-prob alone prefers them (the likelihood trap);
# subtracting most of their unconditional log-prob keeps fluency but rewards fitting this story.
PMI_WEIGHT = 0.7
# The neutral prompt scores only a candidate's opening words, as MMI-antiLM ranking does (Li et
# al. 2016 penalise only a response's first tokens): generic text shows from its first words
# ("He nodded. She smiled."), and a short pass costs a fraction of a whole one.
NEUTRAL_WORDS = 12
CRITIC_WEIGHT = 1.0  # score lost per unit of the critic's penalty (a fatal fault costs 1.0)
FAILED_COST = 10.0  # more than any spread of model scores: a text that fails ranks below every one that passes
# What the critic holds each turn length to: (min words, max words, min sentences).
LENGTH_BRIEF = {"sentence": (5, 45, 1), "paragraph": (35, 200, 3), "free": (5, 400, 1)}
# Never offered, whatever else is wrong: the prompt or a chatbot talking, not the story.
REJECT = frozenset({"leak", "template", "assistant"})


# -- repetition ---------------------------------------------------------------------------
_WORDS = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def repeated_ngram_rate(text: str, earlier: str = "", n: int = 4) -> float:
    """Share of `text`'s word n-grams already seen, earlier in the story or earlier in itself."""
    own = words(text)
    grams = [tuple(own[i:i + n]) for i in range(len(own) - n + 1)]
    if not grams:
        return 0.0
    before = words(earlier)
    seen = {tuple(before[i:i + n]) for i in range(len(before) - n + 1)}
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams)


# -- rankers ------------------------------------------------------------------------------
class Ranker(Protocol):
    """Anything that can order candidates, best first (the scorer is pluggable). `known` holds
    each text's mean log-prob after the prompt where it is already known (None where not).
    `contrast` says which texts need the full measure (the others rank below them anyway: a
    ranker may spare them its costly parts); None: all."""

    def rank(self, prompt: str, story_text: str, texts: Sequence[str],
             known: Sequence[float | None] | None = None,
             contrast: Sequence[bool] | None = None) -> list[Candidate]: ...


class RepetitionRanker:
    """Ranks by repetition alone: for backends that cannot score text."""

    label = "ranked by repetition only (this model cannot score text)"

    def __init__(self, n: int = REPETITION_NGRAM):
        self.n = n

    def rank(self, prompt: str, story_text: str, texts: Sequence[str],
             known: Sequence[float | None] | None = None,
             contrast: Sequence[bool] | None = None) -> list[Candidate]:
        out = []
        for text in texts:
            rep = repeated_ngram_rate(text, story_text, self.n)
            out.append(Candidate(text, -rep, None, rep))
        return sorted(out, key=lambda c: c.score, reverse=True)


class ModelRanker:
    """The default: length-normalised log-prob under the model contrasted with a neutral prompt
    (PMI, so generic text does not win), minus a repetition penalty."""

    label = "ranked by the model's log-probs against a neutral prompt (PMI), and repetition"

    def __init__(self, generator, repetition_weight: float = REPETITION_WEIGHT, n: int = REPETITION_NGRAM,
                 pmi_weight: float = PMI_WEIGHT):
        self.generator = generator
        self.weight = repetition_weight
        self.n = n
        self.pmi_weight = pmi_weight

    def rank(self, prompt: str, story_text: str, texts: Sequence[str],
             known: Sequence[float | None] | None = None,
             contrast: Sequence[bool] | None = None) -> list[Candidate]:
        # Score each text as it follows the prompt (after a space), the same way for every one;
        # texts whose log-probs came with their writing are not run through the model again.
        known = list(known) if known is not None else [None] * len(texts)
        missing = [i for i, k in enumerate(known) if k is None]
        if missing:
            joiner = " " if prompt and not prompt[-1].isspace() else ""
            for i, score in zip(missing, self.generator.score_many(prompt, [joiner + texts[i] for i in missing])):
                known[i] = score
        logprobs = [float(k) for k in known]
        base = self._priors(texts, contrast)
        out = []
        for text, logprob, prior in zip(texts, logprobs, base):
            rep = repeated_ngram_rate(text, story_text, self.n)
            out.append(Candidate(text, logprob - self.pmi_weight * prior - self.weight * rep, logprob, rep))
        return sorted(out, key=lambda c: c.score, reverse=True)

    def _priors(self, texts: Sequence[str], contrast: Sequence[bool] | None) -> list[float]:
        """Each text's opening words' log-prob after the neutral prompt. It costs a pass over the
        model (a tenth of a k=4 turn), so only the texts in `contrast` take it, the others the
        mean of theirs; none when only one is in it (it comes first whatever its prior)."""
        if not self.pmi_weight or not texts:
            return [0.0] * len(texts)
        wanted = [i for i in range(len(texts)) if contrast is None or contrast[i]]
        if len(wanted) == 1:
            return [0.0] * len(texts)
        wanted = wanted or list(range(len(texts)))  # none passes: the contrast orders them all
        scores = self.generator.score_many(critic.NEUTRAL_PROMPT, [opening_words(texts[i]) for i in wanted])
        fill = sum(scores) / len(scores)
        base = [fill] * len(texts)
        for i, score in zip(wanted, scores):
            base[i] = score
        return base


def opening_words(text: str, count: int = NEUTRAL_WORDS) -> str:
    """The first `count` words of `text`, as written (what the neutral prompt scores)."""
    found = list(re.finditer(r"\S+", text))
    return text if len(found) <= count else text[: found[count - 1].end()]


def rejected(verdict: critic.Verdict) -> bool:
    """A prompt leak or a chatbot reply: never offered."""
    return any(f.code in REJECT for f in verdict.findings)


def judged(ranked: Sequence[Candidate], brief: critic.Brief,
           verdicts: dict[str, critic.Verdict] | None = None) -> list[Candidate]:
    """The ranker's order under the critic: prompt leaks and chatbot replies dropped, texts that
    pass before those that do not, and each score lowered by the critic's penalty. `verdicts`:
    the critic's verdicts already given, by text."""
    out = []
    for c in ranked:
        verdict = (verdicts or {}).get(c.text) or critic.judge(c.text, brief)
        if rejected(verdict):
            continue
        cost = CRITIC_WEIGHT * verdict.penalty + (0.0 if verdict.passed else FAILED_COST)
        out.append(Candidate(c.text, c.score - cost, c.logprob, c.repetition))
    return sorted(out, key=lambda c: c.score, reverse=True)


def default_ranker(generator) -> Ranker:
    """Rank by the model where the backend can score text, else by repetition alone."""
    if not generator.capabilities.scoring:
        return RepetitionRanker()
    return ModelRanker(generator)


# -- text clean-up ------------------------------------------------------------------------
def finish_turn(raw: str, length: str) -> str:
    """A candidate as the story can take it: whole sentences only, one paragraph unless "free".

    Empty when the model wrote no complete sentence (such candidates are never offered).
    """
    text = cut_special(raw.replace("\r", "")).strip()
    if length == "sentence":
        text = text.split("\n\n", 1)[0].strip()
    elif length == "paragraph":  # a break after a sentence or two is layout: join up to three sentences
        parts = [p.strip() for p in text.split("\n\n") if p.strip()]
        text = parts[0] if parts else ""
        for part in parts[1:]:
            if len(SENTENCE_END.findall(text)) >= LENGTH_BRIEF["paragraph"][2]:
                break
            text += " " + part
    ends = list(SENTENCE_END.finditer(text))
    if not ends:
        return ""
    end = ends[0] if length == "sentence" else ends[-1]
    text = text[: end.end()]
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# A paragraph turn is whole once it holds this many words in at least three sentences: the
# candidate ends at that sentence's end. Every candidate of a batch waits for the slowest, so
# running each to the token cap made the cap the turn's cost.
PARAGRAPH_WORDS = 60
_PROBE = "x and on. And on."  # more text: "x" first, so a full stop at the very end is not yet a sentence end


def turn_complete(raw: str, length: str) -> bool:
    """Whether a candidate being written already holds its whole turn: more text would not
    change what finish_turn keeps (a sentence turn's first sentence; a paragraph that ended), or
    a paragraph turn has PARAGRAPH_WORDS words in whole sentences."""
    if length not in LENGTH_TOKENS:  # "free": the writer asked for as much as the model writes
        return False
    kept = finish_turn(raw + "x", length)
    if finish_turn(raw + _PROBE, length) == kept:
        return True
    return length == "paragraph" and (len(kept.split()) >= PARAGRAPH_WORDS
                                      and len(SENTENCE_END.findall(kept)) >= LENGTH_BRIEF["paragraph"][2])


# What can move finish_turn's cut: sentence ends and their closers, line breaks, a special
# token's marks, and a space right after a sentence end (the end is one from then on).
_MARKS = frozenset(".!?…\"'”’)]<|>\n")
_ENDS = frozenset(".!?…\"'”’)]")


def settled(raw: str) -> str:
    """`raw` (without carriage returns, which finish_turn drops first) up to its last character
    that could move finish_turn's cut. What follows is plain text (no mark, no space after a
    sentence end), which leaves finish_turn(raw + "x") and its probe as they were:
    turn_complete(raw) is turn_complete(settled(raw))."""
    raw = raw.replace("\r", "")
    for j in range(len(raw) - 1, -1, -1):
        ch = raw[j]
        if ch in _MARKS or (ch.isspace() and j and raw[j - 1] in _ENDS):
            return raw[: j + 1]
    return ""


def turn_watch(length: str) -> Callable[[str], bool]:
    """turn_complete for the rows of one batch, asked again only when a row's text settled
    further (a sentence end, a line break): most tokens are words, which change nothing."""
    seen: dict[str, bool] = {}

    def complete(raw: str) -> bool:
        key = settled(raw)
        if key not in seen:
            seen[key] = turn_complete(key, length)
        return seen[key]

    return complete


# Once this many candidates of a batch are complete, the rest end at their last whole sentence
# as soon as each holds EARLY_WORDS words in whole sentences (a paragraph with room to spare).
# On `bench quality` (48 turns) a batch then takes 3.3 fewer steps a turn (86.0 -> 82.7), 2.9 of
# them with 1-2 rows left; pass share 0.979 -> 1.0, mean words 60.8 -> 59.1. At the critic's 35 words
# it was 0.979 and 58.1 (more steps saved, shorter picks); at 50 words almost nothing was saved.
EARLY_COMPLETE = 2
EARLY_WORDS = 45


def last_row_whole(length: str, n: int) -> Callable[[list[str], list[bool]], bool] | None:
    """`enough` for a batch of n paragraph candidates: once all but one are complete, the last
    ends at its last whole sentence as soon as that is a full paragraph (the critic's length for
    one); once EARLY_COMPLETE are, the others end as soon as each holds EARLY_WORDS words in
    whole sentences. So the writer is not kept waiting on one or two long rows. None where it
    cannot apply (one candidate has no batch to wait on; a sentence turn is complete at its
    first sentence)."""
    if n < 2 or length != "paragraph":
        return None
    fewest_words, _, fewest_sentences = LENGTH_BRIEF[length]

    def enough(texts: list[str], finished: list[bool]) -> bool:
        done = sum(finished)
        if done >= n - 1:
            words_needed = fewest_words
        elif done >= EARLY_COMPLETE:
            words_needed = max(fewest_words, EARLY_WORDS)
        else:
            return False
        for text, over in zip(texts, finished):
            if not over:
                kept = finish_turn(text + "x", length)  # "x": a full stop at the very end is not yet an end
                if len(kept.split()) < words_needed or len(SENTENCE_END.findall(kept)) < fewest_sentences:
                    return False
        return True

    return enough


# Once a finished paragraph passes the critic (and shares a word with the scene) the turn has one
# to offer: each row still going then ends at its last whole sentence as soon as it holds a whole
# paragraph (the critic's length), rather than waiting for two complete rows and EARLY_WORDS words,
# and the batch ends as soon as a second candidate (finished, or a whole paragraph so far) passes.
# On `bench quality` (48 turns, three runs alternated with main, load 2.9-5.6): k=4 steps a turn
# 82.7 -> 71.7, seconds k4/k1 1.63/1.62/1.65 -> 1.56/1.50/1.49 (median turn 1.72/1.81/1.68 ->
# 1.53/1.53/1.42), pass share 0.917 -> 0.938, mean words 55.1 -> 52.6, candidates offered 3.85 ->
# 3.88 a turn, passing 2.56 -> 2.15 (turns with two or more passing: 41 -> 39 of 48).
STOP_ON_PASS = True


def whole_paragraph(text: str) -> bool:
    """Whether finish_turn keeps a paragraph of the critic's length from `text` as written so far
    (a full stop at its very end not yet counted as a sentence end)."""
    fewest_words, _, fewest_sentences = LENGTH_BRIEF["paragraph"]
    kept = finish_turn(text + "x", "paragraph")
    return len(kept.split()) >= fewest_words and len(SENTENCE_END.findall(kept)) >= fewest_sentences


class TurnStop:
    """`complete` and `enough` for one batch of n candidates: a row ends once its turn is complete
    (turn_watch); the batch ends under last_row_whole; and once a finished paragraph passes the
    critic (STOP_ON_PASS), each row still going ends as soon as it is a whole paragraph, the batch
    as soon as all are or a second one passes. `passer`: the finished text that passed (None: none
    yet, or off)."""

    def __init__(self, length: str, n: int, brief: critic.Brief | None):
        self.length = length
        self.watch = turn_watch(length)
        self.rule = last_row_whole(length, n)
        self.brief = brief
        self.on = STOP_ON_PASS and self.rule is not None and brief is not None
        self.passer: str | None = None
        self.verdicts: dict[str, critic.Verdict] = {}  # by finished text: judged once
        self._whole: dict[str, bool] = {}  # by settled text (what can move finish_turn's cut)

    def judge(self, text: str) -> critic.Verdict:
        if text not in self.verdicts:
            self.verdicts[text] = critic.judge(text, self.brief)
        return self.verdicts[text]

    def whole(self, raw: str) -> bool:
        key = settled(raw)
        if key not in self._whole:
            self._whole[key] = whole_paragraph(key)
        return self._whole[key]

    def complete(self, raw: str) -> bool:
        return self.watch(raw) or (self.passer is not None and self.whole(raw))

    def enough(self, texts: list[str], finished: list[bool]) -> bool:
        if self.on and self.passer is None:
            for text, over in zip(texts, finished):
                kept = finish_turn(text, self.length) if over else ""
                if kept and self.judge(kept).passes_in_scene:
                    self.passer = kept
                    break
        if self.passer is not None:
            if all(over or self.whole(text) for text, over in zip(texts, finished)):
                return True
            # a second that passes, finished or a whole paragraph so far: the ranking has two to
            # choose from, and the rows still going come back as far as they got
            kept = [finish_turn(text, self.length) if over or self.whole(text) else ""
                    for text, over in zip(texts, finished)]
            if sum(bool(k) and self.judge(k).passed for k in kept) >= 2:
                return True
        return self.rule is not None and self.rule(texts, finished)


def written_logprob(raw: str, text: str, row: RowLogprobs) -> float | None:
    """The mean log-prob of `text` (finish_turn's cut of `raw`) from the tokens that wrote it.
    finish_turn only trims, cuts and rejoins whitespace, so the text ends where `raw` has shown
    as many non-space characters."""
    start = len(raw) - len(raw.lstrip())
    wanted, seen, end = sum(not ch.isspace() for ch in text), 0, len(raw)
    for pos, ch in enumerate(raw):
        seen += not ch.isspace()
        if seen == wanted:
            end = pos + 1
            break
    return row.mean(start, end)


# -- the prompt ---------------------------------------------------------------------------
@dataclass
class BuiltPrompt:
    text: str
    tokens: int
    turns_included: int


def build_prompt(story: CoStory, count: TokenCounter, budget: int) -> BuiltPrompt:
    """Title and premise always; then as many recent turns as fit.

    The prompt ends right after the last turn, with no paragraph break: small instruct models
    continue the story from there, but after a blank line they tend to start lists, dates or
    an assistant's reply.
    """
    head = story.title.strip()
    if story.premise.strip():
        head = (head + TURN_BREAK if head else "") + fit_text(story.premise.strip(), count, budget // 3, keep_end=False)
    used = count(head + TURN_BREAK) if head else 0
    kept = latest_that_fit([t.text.strip() for t in story.turns], lambda p: count(p + TURN_BREAK), budget - used)

    def assemble() -> str:
        return TURN_BREAK.join(([head] if head else []) + kept) + ("" if kept else TURN_BREAK)

    text = assemble()
    tokens = count(text)
    while tokens > budget and kept:  # joins can tokenize a little differently: re-check
        kept.pop(0)
        text = assemble()
        tokens = count(text)
    return BuiltPrompt(text, tokens, len(kept))


# The first turn of a story begun from its premise alone, asked of an instruct model as a request:
# after a bare title and premise the default model wrote lists, dates and questions (2 of 16
# candidates passed the critic on 4 premises), asked for the opening it wrote one (11 of 16).
OPENING_ASK = {"sentence": "the opening sentence", "paragraph": "the opening paragraph", "free": "the opening"}


def opening_prompt(generator, story: CoStory, count: TokenCounter, budget: int) -> BuiltPrompt:
    """The prompt of a story's first turn where the model begins it (no turn yet): a request
    with the title and premise (cut to fit, as build_prompt cuts it), in the model's chat
    format. Later turns continue the text."""
    title = f' called "{story.title.strip()}"' if story.title.strip() else ""
    premise = fit_text(story.premise.strip(), count, budget // 3, keep_end=False) if story.premise.strip() else ""
    ask = f"Write {OPENING_ASK.get(story.length, 'the opening')} of a story{title}. {premise}".strip()
    text = generator.chat_prompt([{"role": "user", "content": ask}])
    return BuiltPrompt(text, count(text), 0)


# -- the story in play --------------------------------------------------------------------
def saved_or_unchanged(method):
    """A CoWrite method that changes the story and then writes it: when the write fails (a
    locked or full database) the story, its offers and the undo history go back to exactly what
    they were, so memory and the database never disagree."""

    @wraps(method)
    def run(self: "CoWrite", *args, **kwargs):
        story = self.story
        turns, pending = story.turns, story.pending
        before = (list(turns), list(pending), list(self._history), list(self.earlier_offers),
                  story.title, story.premise, story.length, story.candidates_n, story.updated)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            story.turns, story.pending = turns, pending  # the lists the screen may hold, as they were
            (turns[:], pending[:], self._history[:], self.earlier_offers[:], story.title, story.premise,
             story.length, story.candidates_n, story.updated) = before
            raise

    return run


class CoWrite:
    """One story being written. The UI calls these; the store saves every change at once.

    `propose` is safe to run in a worker thread (it touches neither the story nor the store);
    `offer` then records its result on the main thread.
    """

    UNDO_DEPTH = 50
    OFFERS_KEPT = 10

    def __init__(self, story: CoStory, store: CowriteStore | None = None):
        self.story = story
        self.store = store
        # for undo: earlier turn lists, each with the offers it had (a pick undone offers them again)
        self._history: list[tuple[list[CoTurn], list[Candidate], list[list[Candidate]]]] = []
        self.earlier_offers: list[list[Candidate]] = []  # offers a reroll replaced (this turn), oldest first

    # who writes next ------------------------------------------------------------------
    @property
    def next_author(self) -> str:
        """The model answers the writer; the writer answers the model (or starts the story)."""
        if not self.story.turns:
            return "model" if self.story.premise.strip() else "human"
        return "model" if self.story.turns[-1].author == "human" else "human"

    # generation -----------------------------------------------------------------------
    def settings_for(self, settings: SamplerSettings) -> SamplerSettings:
        tokens = LENGTH_TOKENS.get(self.story.length, settings.max_new_tokens)
        # No "\n\n" stop: a candidate may open with a paragraph break; finish_turn cuts after it.
        return settings.with_(max_new_tokens=tokens, stop=settings.stop,
                              min_new_tokens=min(MIN_TURN_TOKENS.get(self.story.length, 0), tokens))

    def budget(self, context_length: int, settings: SamplerSettings) -> int:
        new = self.settings_for(settings).max_new_tokens
        return max(64, min(context_length, MAX_PROMPT_TOKENS + new) - new - 8)

    def prompt_for(self, generator, settings: SamplerSettings, story: CoStory | None = None) -> BuiltPrompt:
        """The next turn's prompt; of `story` (a snapshot of this one) where given."""
        if getattr(self, "_counter_for", None) is not generator:  # one token cache per model
            self._counter_for, self._counter = generator, TokenCounter(generator.count_tokens)
        story = story or self.story
        budget = self.budget(generator.context_length, settings)
        if not story.turns and getattr(generator.info, "chat_template", False):
            return opening_prompt(generator, story, self._counter, budget)
        return build_prompt(story, self._counter, budget)

    def story_text(self) -> str:
        return TURN_BREAK.join(t.text.strip() for t in self.story.turns)

    def propose(self, generator, settings: SamplerSettings, *, more: bool = False, cancel=None,
                on_step: Callable[[int], None] | None = None, ranker: Ranker | None = None,
                n: int | None = None) -> list[Candidate]:
        """Sample n candidates in one batched call, clean them, and rank them best first.

        With more=True the candidates already on offer are ranked together with the new ones.
        Returns [] when cancelled. Raises StoryloomError when nothing usable came out.
        """
        n = n or self.story.candidates_n
        built = self.prompt_for(generator, settings)
        record: list[RowLogprobs] = []
        length = self.story.length
        brief = self.brief()
        stop = TurnStop(length, n, brief)
        raw = generator.candidates(built.text, n, self.settings_for(settings), cancel, on_step, record=record,
                                   complete=stop.complete, enough=stop.enough)
        if cancel is not None and cancel.is_set():
            return []
        offered = list(self.story.pending) if more else []
        earlier = [c.text for c in offered]
        texts: list[str] = []
        known: list[float | None] = [c.logprob for c in offered]  # same prompt: their scores still hold
        for i, r in enumerate(raw):
            text = finish_turn(r, self.story.length)
            if text and text not in texts and text not in earlier:
                texts.append(text)
                known.append(written_logprob(r, text, record[i]) if len(record) == len(raw) else None)
        if not texts:
            raise StoryloomError("The model wrote no complete sentence this time. Ask again (reroll), "
                                 "or write this turn yourself.")
        # Judge first: leaks and chatbot replies are never offered, so never scored, and only the
        # texts that pass need the neutral pass (those that fail rank below them whatever it says).
        verdicts = {t: stop.verdicts.get(t) or critic.judge(t, brief) for t in earlier + texts}
        kept = [i for i, t in enumerate(earlier + texts) if not rejected(verdicts[t])]
        if not kept:
            raise StoryloomError("The model only echoed the prompt or answered like a chatbot this time. "
                                 "Ask again (reroll), or write this turn yourself.")
        pool = [(earlier + texts)[i] for i in kept]
        if ranker is None:  # one text has no rival: the model need not score it
            ranker = RepetitionRanker() if len(pool) == 1 else default_ranker(generator)
        ranked = ranker.rank(built.text, self.story_text(), pool, [known[i] for i in kept],
                             contrast=[verdicts[t].passed for t in pool])
        return judged(ranked, brief, verdicts)

    # token probabilities of a candidate, and a new one from an alternative -----------------
    def candidate_prompt(self, generator, settings: SamplerSettings) -> str:
        """The prompt a candidate follows, joined as the ranker scores it (after a space)."""
        prompt = self.prompt_for(generator, settings).text
        return prompt + (" " if prompt and not prompt[-1].isspace() else "")

    def candidate_tokens(self, index: int, generator, settings: SamplerSettings) -> list:
        return generator.token_choices(self.candidate_prompt(generator, settings), self.story.pending[index].text)

    def continue_candidate(self, index: int, prefix: str, generator, settings: SamplerSettings,
                           cancel=None) -> Candidate | None:
        """Candidate `index` up to a token, an alternative there (`prefix` holds both), then a
        fresh continuation: a new candidate (None when cancelled), for a new offer with it on top."""
        raw = generator.generate(self.candidate_prompt(generator, settings) + prefix, self.settings_for(settings),
                                 cancel)
        if cancel is not None and cancel.is_set():
            return None
        text = finish_turn(prefix + raw, self.story.length)
        if not text:
            raise StoryloomError("Nothing usable came after that alternative; try another.")
        was = self.story.pending[index]
        return Candidate(text, was.score, None, repeated_ngram_rate(text, self.story_text()))

    def brief(self) -> critic.Brief:
        """What the critic holds a turn to: the asked length, the recent story and the premise.
        The premise is the story's to use ("a message in a bottle"), not a note to keep out of it:
        hidden, a short one failed every candidate that took two of its words. Copied whole, it
        is a repeat, as a copied turn is."""
        low, high, sentences = LENGTH_BRIEF.get(self.story.length, LENGTH_BRIEF["free"])
        recent = [t.text for t in self.story.turns[-2:]]
        premise = self.story.premise.strip()
        return critic.Brief(kind="passage", min_words=low, max_words=high, min_sentences=sentences,
                            scene="\n".join([self.story.title, premise, *recent]),
                            earlier=tuple(t for t in (premise, *(t.text for t in self.story.turns[-10:])) if t))

    @saved_or_unchanged
    def offer(self, candidates: list[Candidate], replaces: bool = True) -> None:
        """Put ranked candidates on offer and save them. When they replace an offer (a reroll,
        not "more", which ranks the old ones in), the old offer stays reachable: earlier_offer()."""
        if replaces and self.story.pending:
            self.earlier_offers.append(self.story.pending)
            del self.earlier_offers[:-self.OFFERS_KEPT]
        self.story.pending = list(candidates)
        self._save_meta()

    @saved_or_unchanged
    def earlier_offer(self) -> bool:
        """Bring back the offer the last reroll replaced (the current one joins the far end of the
        line, so pressing again walks through every offer of this turn). False if there is none."""
        if not self.earlier_offers:
            return False
        current, self.story.pending = self.story.pending, self.earlier_offers.pop()
        if current:
            self.earlier_offers.insert(0, current)
        self._save_meta()
        return True

    def verdicts(self, offer: Sequence[Candidate] | None = None) -> list[critic.Verdict]:
        """The critic's verdict on each candidate of `offer` (default: the one on offer now) for
        what is asked now (the length, the recent turns): what the writer sees beside each
        candidate, and Ctrl+D explains."""
        brief = self.brief()
        return [critic.judge(c.text, brief) for c in (self.story.pending if offer is None else offer)]

    def earlier_offer_passes(self) -> bool:
        """The offer the last reroll replaced (what Ctrl+B brings back) holds a candidate the
        critic passes."""
        return bool(self.earlier_offers) and any(v.passed for v in self.verdicts(self.earlier_offers[-1]))

    def explain_offer(self) -> str:
        """Each candidate on offer with the critic's verdict, best first (the debug view)."""
        if not self.story.pending:
            return "No candidates on offer."
        rows = [f"{i}. {c.text}\n   {v.explain()}"
                for i, (c, v) in enumerate(zip(self.story.pending, self.verdicts()), start=1)]
        return "\n\n".join(rows)

    @saved_or_unchanged
    def dismiss(self) -> None:
        if self.story.pending:
            self.story.pending = []
            self._save_meta()

    # turns ----------------------------------------------------------------------------
    def pick(self, index: int, text: str | None = None) -> CoTurn:
        """Accept candidate `index` (best is 0), as edited by the writer if `text` is given."""
        if not 0 <= index < len(self.story.pending):
            raise StoryloomError(f"There is no candidate {index + 1}.")
        offered = self.story.pending[index].text
        final = offered if text is None else text.strip()
        if not final:
            raise StoryloomError("An empty turn adds nothing: write something or pick another candidate.")
        return self._add(CoTurn("model", final, edited=final != offered))

    def keep_draft(self, text: str) -> None:
        """Save the writer's unsent turn (only when it changed); a refused write leaves the last
        saved draft as the story's."""
        if text == self.story.draft:
            return
        before, self.story.draft = self.story.draft, text
        if self.store:
            try:
                self.store.save_draft(self.story)
            except BaseException:
                self.story.draft = before
                raise

    def write(self, text: str) -> CoTurn:
        """The writer's own turn (it replaces any candidates on offer)."""
        text = text.strip()
        if not text:
            raise StoryloomError("Write something first.")
        return self._add(CoTurn("human", text))

    @saved_or_unchanged
    def edit(self, position: int, text: str) -> None:
        text = text.strip()
        if not text:
            raise StoryloomError("A turn cannot be empty; remove it instead.")
        turn = self.story.turns[position]
        if text == turn.text:
            return
        self._remember()
        self.story.turns[position] = CoTurn(turn.author, text, edited=turn.edited or turn.author == "model")
        if self.store:
            self.store.update_turn(self.story, position)

    @saved_or_unchanged
    def remove(self, position: int) -> CoTurn:
        self._remember()
        turn = self.story.turns.pop(position)
        if self.store:
            self.store.replace_turns(self.story)
        return turn

    @saved_or_unchanged
    def undo(self) -> bool:
        """Take back the last add, edit or removal (this session); a pick or a turn of one's own
        taken back puts the candidates it answered on offer again (they were lost with it)."""
        if not self._history:
            return False
        self.story.turns, self.story.pending, self.earlier_offers[:] = self._history.pop()
        if self.store:
            self.store.replace_turns(self.story)
        return True

    @saved_or_unchanged
    def _add(self, turn: CoTurn) -> CoTurn:
        self._remember()
        self.story.turns.append(turn)
        self.story.pending = []
        self.earlier_offers.clear()  # they answered the turn just taken
        if self.store:
            self.store.add_turn(self.story)
        return turn

    def _remember(self) -> None:
        self._history.append(([CoTurn(t.author, t.text, t.edited) for t in self.story.turns],
                              list(self.story.pending), [list(o) for o in self.earlier_offers]))
        del self._history[:-self.UNDO_DEPTH]

    # settings -------------------------------------------------------------------------
    @saved_or_unchanged
    def set_length(self, length: str) -> None:
        if length not in LENGTHS:
            raise StoryloomError(f"Turn length must be one of {', '.join(LENGTHS)}.")
        self.story.length = length
        self._save_meta()

    @saved_or_unchanged
    def set_candidates(self, n: int) -> None:
        if not 1 <= n <= MAX_CANDIDATES:
            raise StoryloomError(f"Candidates per turn must be between 1 and {MAX_CANDIDATES}.")
        self.story.candidates_n = n
        self._save_meta()

    def _save_meta(self) -> None:
        if self.store:
            self.store.save_meta(self.story)

    # export ---------------------------------------------------------------------------
    def to_markdown(self, model_name: str = "the model") -> str:
        lines = [f"# {self.story.title}", ""]
        if self.story.premise.strip():
            lines += [f"> {self.story.premise.strip()}", ""]
        lines += [f"*Passages in italics were written by {model_name}; † marks ones the writer edited.*", ""]
        for turn in self.story.turns:
            if turn.author == "model":
                lines += [_italic(turn.text) + (" †" if turn.edited else ""), ""]
            else:
                lines += [turn.text, ""]
        return "\n".join(lines).rstrip() + "\n"

    def to_text(self) -> str:
        head = [self.story.title, ""]
        return "\n".join(head) + "\n" + self.story_text().strip() + "\n"


def _italic(text: str) -> str:
    """Italicise each paragraph (Markdown emphasis does not cross blank lines)."""
    escaped = text.replace("*", r"\*")  # a literal asterisk must not end the emphasis
    return "\n\n".join(f"*{p.strip()}*" for p in escaped.split("\n\n") if p.strip())


def new_story(title: str, premise: str = "", opening: str = "", length: str = "paragraph",
              candidates_n: int = DEFAULT_CANDIDATES) -> CoStory:
    title = title.strip()
    if not title:
        raise StoryloomError("A story needs a title.")
    if length not in LENGTHS:
        raise StoryloomError(f"Turn length must be one of {', '.join(LENGTHS)}.")
    if not 1 <= candidates_n <= MAX_CANDIDATES:
        raise StoryloomError(f"Candidates per turn must be between 1 and {MAX_CANDIDATES}.")
    turns = [CoTurn("human", opening.strip())] if opening.strip() else []
    return CoStory(title=title, premise=premise.strip(), turns=turns, length=length, candidates_n=candidates_n)

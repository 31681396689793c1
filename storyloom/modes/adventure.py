"""Adventure mode as plain Python: scenarios, player actions, the context builder, output
clean-up, and the turn history (undo, redo, retry, alter) saved as it happens.

The prompt reads like a story with the player's actions marked "> " (as in AI Dungeon 2), so
any causal LM can continue it; the model's output is cut before it writes the next action.
"""
from __future__ import annotations

import difflib
import logging
import re
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import critic, worldinfo
from storyloom.modes.text import SENTENCE_END, TokenCounter, cut_special, fit_text, latest_that_fit
from storyloom.paths import assets_dir
from storyloom.store.stories import Game, GameStore, Turn, WorldEntry

log = logging.getLogger(__name__)

ACTION_STOPS = ("\n>", "\n\n\n")
AUTHORS_NOTE_DEPTH = 3  # the note goes this many turns before the end, as KoboldAI does
WORLD_INFO_STYLES = ("head", "near_end", "note", "note+primer")
WORLD_INFO_RANK = True  # sample-and-rank credits candidates that use triggered world info (critic.LORE_CREDIT)
# Where triggered entries go (see world_info_text). Measured with `bench quality --world-styles all`
# on SmolLM2-135M (6 of the 10 cases, 40 tokens a turn: a loaded machine): facts reached 2 of 26
# candidates as a note just before the action, 1 of 26 after the note primer, 0 of 26 in the head
# and 0 of 26 with no entry; so the note, until a fuller run says otherwise.
WORLD_INFO_STYLE = "note"
REPEAT_SIMILARITY = 0.9
# Prompt budget cap: prefill cost grows with the prompt and small models lose the thread in long
# contexts, so a game uses at most this many tokens even when the model's window is larger.
MAX_PROMPT_TOKENS = 2048
LOOP_RETRIES = 3
DEFAULT_CANDIDATES = 4  # drawn in one batch each turn; 1 turns sample-and-rank off
MAX_CANDIDATES = 8
REDRAWS = 1  # further batches when no candidate passes the critic, before showing the best anyway
EARLY_STOP = True  # a batch ends when one finished candidate passes (early_stop)
ENOUGH_WORDS = 25  # ... or one still being written already holds this many words that pass
TURN_WORDS = (10, 120)  # what a turn is asked to be, for the critic
# A short story of well-formed turns before the game (ours, assets/adventure_primer.txt): small
# models copy the shape of what they read, so they see narration that answers each action.
PRIMER_SEPARATOR = "\n\n\n"  # an ACTION_STOPS stop: a model that copies the break ends its turn
PRIMER_SHARE = 4  # the primer is kept only while it fits in a quarter of the budget
# The running summary of turns that fell out of the context (modes/summary.py writes it) may use
# at most this share of the budget, so it never crowds out the story it summarises.
SUMMARY_SHARE = 8
SUMMARY_LABEL = "Story so far: "
# What GameStore.save_meta writes (the games row, less its id and creation time).
META_FIELDS = ("title", "scenario", "context", "memory", "authors_note", "world_info", "summary",
               "summary_upto", "summary_mode", "updated")


# -- scenarios --------------------------------------------------------------------------
@dataclass(frozen=True)
class Character:
    key: str
    name: str
    context: str
    prompt: str


@dataclass(frozen=True)
class Setting:
    key: str
    name: str
    description: str
    characters: tuple[Character, ...]


def load_scenarios() -> list[Setting]:
    data = tomllib.loads((assets_dir() / "scenarios.toml").read_text(encoding="utf-8"))
    return [
        Setting(s["key"], s["name"], s["description"],
                tuple(Character(c["key"], c["name"], c["context"], c["prompt"]) for c in s["character"]))
        for s in data["setting"]
    ]


def new_game(setting: Setting, character: Character, player_name: str = "") -> Game:
    name = player_name.strip()
    # "You are {name}, a knight..." reads "You are a knight..." when the player gives no name.
    context = character.context.replace("{name}", name) if name else character.context.replace("{name}, ", "")
    return Game(
        title=f"{setting.name}: {character.name}" + (f" ({name})" if name else ""),
        scenario=f"{setting.key}/{character.key}",
        context=context,
        turns=[Turn("start", character.prompt.replace("{name}", name or "you"), "")],
    )


TITLE_CHARS = 40  # a custom game's title: the opening's start, cut at a word


def short_title(text: str, limit: int = TITLE_CHARS) -> str:
    """'You wake in a lighthouse. The lamp is…' (the cut fell mid-word: 'The lamp is ou')."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0] if " " in text[:limit + 1] else text[:limit]
    return cut.rstrip(",;:-") + "…"


def custom_game(prompt: str, context: str = "", title: str = "", player_name: str = "") -> Game:
    """A game from the player's own opening; their name (if given) goes into the title and, as
    the scenarios' characters have it, into the context the model always reads."""
    name = player_name.strip()
    prompt = prompt.replace("{name}", name or "you").strip()
    if not prompt:
        raise StoryloomError("A custom adventure needs an opening: write how the story begins.")
    context = context.replace("{name}", name or "you").strip()
    if name and name not in context:
        context = f"Your name is {name}. {context}".strip()
    title = title.strip() or short_title(prompt)
    return Game(title=title + (f" ({name})" if name else ""), scenario="custom", context=context,
                turns=[Turn("start", prompt, "")])


# -- player actions ---------------------------------------------------------------------
_FIRST_TO_SECOND = {
    "i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are",
    "i'm": "you're", "i've": "you've", "i'll": "you'll", "i'd": "you'd", "we": "you", "us": "you",
    "our": "your", "ours": "yours",
}
_WORD = re.compile(r"[A-Za-z']+|[^A-Za-z']+")


def second_person(text: str) -> str:
    """'I draw my sword' -> 'you draw your sword' (word by word, keeping everything else)."""
    out = []
    for token in _WORD.findall(text):
        low = token.lower()
        out.append(_FIRST_TO_SECOND.get(low, token))
    return "".join(out)


def _sentence(text: str) -> str:
    text = text.strip()
    if text and text[-1] not in ".!?\"'":
        text += "."
    return text


def format_action(kind: str, text: str) -> str:
    """The player's input as it goes into the story."""
    text = text.strip()
    if kind == "story":
        return text
    if kind == "say":
        said = text.strip('"').strip()
        if said and said[-1] not in ".!?,":
            said += "."
        return f'> You say "{said}"'
    # do: "> open the door" / "I open the door" / "you open the door" -> "> You open the door."
    text = second_person(text.removeprefix(">").strip())
    words = text.split(" ", 1)
    if words[0].lower() != "you":
        text = "you " + text
    return "> " + _sentence(text[0].upper() + text[1:])


def prompt_action(action: str) -> str:
    """The player's input as the prompt reads it: a line of its own marked "> ", then the model's
    line. A story action ("A dragon lands behind you.") is marked too: left as a line of plain
    narration, it read as a finished passage and the model wrote the player's next action
    ("> You ..."), which is cut: 23 of 32 candidates came back empty after three do/say turns
    (SmolLM2-135M), 1 of 32 marked."""
    action = action.strip()
    return "" if not action else f"\n{action}\n" if action.startswith(">") else f"\n> {action}\n"


def turn_text(turn: Turn) -> str:
    """One turn as it reads in the prompt (the opening: its text and output on one line). A
    turn with no action (Enter alone: the story goes on) starts a new line: run on, it read
    "...a golden cup.A very old man..." to the model."""
    if turn.kind in ("do", "say", "story"):
        return (prompt_action(turn.action) or "\n") + turn.output
    return f"{turn.action} {turn.output}".rstrip(" ")


# -- output clean-up --------------------------------------------------------------------
_JUNK_LINE = re.compile(r"^\s*(\d{1,2}[.)]\s|[-*•+]\s|#{1,6}\s|[-+]?\s*\d{1,2}:\d{2}\b|(?i:option|choice)\s*\d|"
                        r"[A-Z][\w.']*(?: [A-Z][\w.']*){0,2}:\s)")
_ASKS_PLAYER = re.compile(r"\s*\b(what|how) (do|will|would|should|can) (you|i) (do|say|try|choose)"
                          r"( next| now| first)?\?\s*$", re.IGNORECASE)
# A last paragraph that is one bare wh-question, outside any quote or dash dialogue, where the
# model stopped: the model quizzing the player ("...\n\nWhat does the metal box look like?")
_QUESTION_PARAGRAPH = re.compile(r"\n\s*\n\s*(?i:what|which|where|how|who|why|when)\b[^\n\"“”.!?]*\?\s*$")


def clean_output(raw: str, action: str = "") -> str:
    """Make a model continuation fit the story.

    Stops before the model writes the player's next action ("> You ..."; a stray "> " before
    plain narration is dropped), drops an echo of the action, stops at the first line that is a
    menu, heading, timestamp or script line, drops a closing "What do you do?" (the game asks
    that itself) and a last paragraph that is one bare wh-question, keeps whole sentences only, and
    trims stray chat tokens and blank runs.
    """
    text = cut_special(raw.replace("\r", ""))
    lines = text.split("\n")
    if lines and lines[0].lstrip().startswith(">") and not re.match(r"\s*>\s*you\b", lines[0], re.IGNORECASE):
        lines[0] = lines[0].lstrip().lstrip(">").lstrip()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(">") or (i and _JUNK_LINE.match(line)):
            lines = lines[:i]
            break
    text = "\n".join(lines)
    cut = text.find(" > ")
    if cut != -1:
        text = text[:cut]
    text = text.strip()
    bare_action = action.removeprefix(">").strip()
    if bare_action and text.lower().startswith(bare_action.lower()):
        text = text[len(bare_action):].lstrip()
    quiz = _QUESTION_PARAGRAPH.search(text)  # before the trim: only where the model itself stopped
    if quiz and text[:quiz.start()].strip():
        text = text[:quiz.start()]
    ends = list(SENTENCE_END.finditer(text))
    if ends:
        text = text[: ends[-1].end()]
    asked = _ASKS_PLAYER.search(text)
    if asked and asked.start() > 0:
        text = text[:asked.start()]
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def is_repeat(output: str, earlier: list[str]) -> bool:
    """True when `output` says almost word for word what an earlier output said."""
    words = output.lower().split()
    if len(words) < 4:
        return False
    for other in earlier:
        matcher = difflib.SequenceMatcher(None, words, other.lower().split(), autojunk=False)
        if matcher.ratio() >= REPEAT_SIMILARITY:
            return True
    return False


# -- context builder --------------------------------------------------------------------
@lru_cache(maxsize=2)
def load_primer(with_note: bool = False) -> str:
    """The primer; `with_note`: the variant whose story shows a "[Note: ...]" being used."""
    name = "adventure_primer_note.txt" if with_note else "adventure_primer.txt"
    return (assets_dir() / name).read_text(encoding="utf-8").strip()


PART_NAMES = ("primer", "context", "memory", "summary", "world_info", "authors_note", "history", "action")


@dataclass(frozen=True)
class PromptPart:
    """One named piece of a prompt, exactly as it appears there (its separators included)."""

    name: str  # one of PART_NAMES
    text: str
    tokens: int


@dataclass
class BuiltPrompt:
    text: str
    tokens: int
    turns_included: int
    world_info: list[WorldEntry]
    primer: str = ""  # the primer when it was put before the game (never shown to the player)
    lore: worldinfo.Selection | None = None  # why each world-info entry fired, what the budget dropped
    parts: list[PromptPart] = field(default_factory=list)  # "".join(p.text for p in parts) == text
    budget: int = 0
    bias: tuple[tuple[str, float], ...] = ()  # kept world info's names to raise while writing (phrase bias)

    def part_tokens(self) -> dict[str, int]:
        """Tokens per part name (a part may occur more than once: history around the note)."""
        out: dict[str, int] = {}
        for part in self.parts:
            out[part.name] = out.get(part.name, 0) + part.tokens
        return out


def summary_budget(budget: int) -> int:
    """The most tokens the running summary may take in a prompt of `budget` tokens."""
    return max(16, budget // SUMMARY_SHARE)


def summary_line(summary: str) -> str:
    """The summary as it reads in the prompt: one labelled paragraph."""
    return SUMMARY_LABEL + " ".join(line.strip() for line in summary.splitlines() if line.strip())


def world_info_text(facts: list[str], style: str = WORLD_INFO_STYLE) -> str:
    """How triggered facts read in the prompt ("head": plain lines at the top; "near_end": plain,
    just before the action; "note": a bracketed note just before the action; "note+primer": the
    same, after a primer whose story shows a note being used)."""
    if style not in WORLD_INFO_STYLES:
        raise StoryloomError(f"World info goes {', '.join(WORLD_INFO_STYLES)}; not {style!r}.")
    if not facts:
        return ""
    if style.startswith("note"):
        return "[Note: " + " ".join(facts) + "]"
    return ("\n" if style == "head" else " ").join(facts)


def build_prompt(game: Game, action_text: str, count: TokenCounter, budget: int, primer: str = "",
                 world_style: str | None = None, lore_bias: float = worldinfo.DEFAULT_BIAS) -> BuiltPrompt:
    """The prompt for the next continuation, never over `budget` tokens, as named parts.

    Always kept: the context sentence, then memory, then the running summary (unless it is off),
    then triggered world info, then the new action; then as many recent turns as fit, with the
    author's note a few turns from the end. World info goes in the head or, by `world_style`,
    just before the action. A primer (a short example story) goes first when it fits in a
    quarter of the budget. `lore_bias`: the phrase bias of kept entries' names (where an entry
    sets none; BuiltPrompt.bias).
    """
    style = world_style or WORLD_INFO_STYLE
    world_info_text([], style)  # an unknown style is refused even when nothing is triggered
    full_budget = budget
    lead = primer + PRIMER_SEPARATOR if primer else ""
    if lead and count(lead) * PRIMER_SHARE > budget:
        lead = ""
    budget -= count(lead) + 4 if lead else 0  # + a margin: the join may tokenize differently
    head: list[tuple[str, str]] = []
    reserve = count(action_text) if action_text else 0
    room = budget - min(reserve, budget // 2)

    def head_used() -> int:
        return count("\n".join(t for _, t in head)) if head else 0

    if game.context:
        head.append(("context", fit_text(game.context, count, room // 2, keep_end=False)))
    if game.memory:
        head.append(("memory", fit_text(game.memory, count, room // 2 - head_used(), keep_end=True)))
    if game.summary.strip() and game.summary_mode != "off":
        cap = min(summary_budget(full_budget), room // 2 - head_used())
        head.append(("summary", fit_text(summary_line(game.summary), count, cap, keep_end=True)))
    # world info (the game's and its lorebooks'): keys, recursion, scan depth and one budget
    lore = worldinfo.for_game(game, action_text, count, room * 3 // 4 - head_used() - 1, turn_text)
    kept_world = lore.entries
    facts = world_info_text([e.text for e in kept_world], style)
    if facts and style == "head":
        head.append(("world_info", facts))
    head = [(name, text) for name, text in head if text]
    head_text = "\n".join(t for _, t in head)
    note = f"\n[Author's note: {game.authors_note.strip()}]" if game.authors_note.strip() else ""
    action = prompt_action(action_text)
    near = "\n" + facts if facts and style != "head" else ""  # small models use what they read last
    sep = "\n\n" if head_text else ""
    fixed = count(head_text + sep) + count(note) + count(near) + count(action)
    if fixed > budget:  # a huge action: keep its end (what the player typed last)
        action = fit_text(action, count, budget - count(head_text + sep) - count(note) - count(near), keep_end=True)
        fixed = count(head_text + sep) + count(note) + count(near) + count(action)
    history = latest_that_fit([turn_text(t) for t in game.turns], count, budget - fixed)

    def body() -> list[tuple[str, str]]:
        pieces = [("history", h) for h in history]
        if note:
            pieces.insert(max(0, len(history) - AUTHORS_NOTE_DEPTH), ("authors_note", note))
        pieces += [("world_info", near), ("action", action)]
        pieces = [(n, t) for n, t in pieces if t]
        if pieces:  # the story starts right after the head's blank line
            pieces[0] = (pieces[0][0], pieces[0][1].lstrip("\n"))
        return [(n, t) for n, t in pieces if t]

    def assemble() -> list[tuple[str, str]]:
        parts = [(name, ("\n" if i else "") + text) for i, (name, text) in enumerate(head)]
        if parts:
            parts[-1] = (parts[-1][0], parts[-1][1] + "\n\n")
        return parts + body()

    parts = assemble()
    text = "".join(t for _, t in parts)
    tokens = count(text)
    while tokens > budget and history:  # joins can tokenize a little differently: re-check
        history.pop(0)
        parts = assemble()
        text = "".join(t for _, t in parts)
        tokens = count(text)
    if lead:
        parts.insert(0, ("primer", lead))
        text, tokens = lead + text, count(lead + text)
    return BuiltPrompt(text, tokens, len(history), kept_world, primer if lead else "", lore=lore,
                       parts=_merge_parts(parts, count), budget=full_budget,
                       bias=worldinfo.phrase_bias(kept_world, lore_bias))


def _merge_parts(parts: list[tuple[str, str]], count: TokenCounter) -> list[PromptPart]:
    """Adjacent pieces of one name (the turns of the history) become one part."""
    merged: list[list[str]] = []
    for name, text in parts:
        if merged and merged[-1][0] == name:
            merged[-1][1] += text
        else:
            merged.append([name, text])
    return [PromptPart(name, text, count(text)) for name, text in merged]


# -- the game ---------------------------------------------------------------------------
@dataclass
class Chunk:
    text: str


@dataclass
class Restart:
    """The loop guard threw the last attempt away; a new one follows."""

    reason: str


@dataclass
class Progress:
    """Candidates are being drawn in one batch: `step` of at most `steps` tokens each."""

    step: int
    steps: int
    candidates: int
    batch: int = 1


DROPPED = ("empty", "cut short", "repeated")  # why a drawn text never reached the critic


@dataclass
class Picked:
    """Which text won and why: every candidate with its verdict, best first."""

    text: str
    verdict: critic.Verdict
    considered: list[tuple[str, critic.Verdict]]
    batches: int = 1
    ranked_by: str = "critic"
    note: str = ""  # said quietly to the player when no candidate passed
    drawn: int = 1  # texts the model wrote: len(considered) + sum(dropped.values())
    # drawn texts the critic never judged, by DROPPED reason: "empty" after clean-up (often the
    # model writing the player's next action, which is cut), "cut short" by the early stop under
    # ENOUGH_WORDS, "repeated" (word for word another candidate of this turn)
    dropped: dict[str, int] = field(default_factory=dict)

    def counts(self) -> str:
        """What happened to the drawn texts, in one phrase the notice and explain() share."""
        why = [f"{self.dropped[r]} {r}" for r in DROPPED if self.dropped.get(r)]
        judged = f"{len(self.considered)} judged"
        return f"{self.drawn} drawn in {self.batches} batch(es): " + ", ".join([*why, judged])

    def explain(self) -> str:
        verdict = ("" if self.verdict.passed else "; none passed the critic: the best is shown") if self.considered \
            else "; nothing usable"
        lines = [f"{self.counts()}; ranked by {self.ranked_by}{verdict}"]
        for i, (text, verdict) in enumerate(self.considered, 1):
            mark = "*" if text == self.text else " "
            lines.append(f"{mark}{i}. {verdict.explain()}\n    {text[:160]!r}")
        return "\n".join(lines)


def default_candidates(generator) -> int:
    """Sample-and-rank where the backend draws a batch for about the price of one text;
    one streamed candidate where each would cost a full generation."""
    return DEFAULT_CANDIDATES if generator.capabilities.batch else 1


def early_stop(action: str, brief: critic.Brief) -> Callable[[list[str], list[bool]], bool] | None:
    """When a batch may stop: as soon as a finished candidate passes the critic, or one still
    going already holds a whole turn (ENOUGH_WORDS in whole sentences) that passes and shares a
    word with the scene (a turn about nothing there, "The room seems to be huge." after "examine
    the study door", was taken first and shown); with triggered world info, only a candidate that
    uses it. Without this the batch ran until its longest candidate stopped (often the 80-token
    limit), and a k=4 turn cost 2.8x a k=1 turn; the rows still going are judged as far as they
    got, like a text at the limit."""
    if not EARLY_STOP:
        return None
    verdicts: dict[str, critic.Verdict] = {}  # a text is judged again only when a sentence ends

    def enough(texts: list[str], finished: list[bool]) -> bool:
        for text, done in zip(texts, finished):
            clean = clean_output(text, action)
            if not clean or (not done and len(clean.split()) < ENOUGH_WORDS):
                continue
            if clean not in verdicts:
                verdicts[clean] = critic.judge(clean, brief)
            verdict = verdicts[clean]
            if verdict.passes_in_scene and (not brief.lore or verdict.lore_used):
                enough.cut = [not f for f in finished]  # the rows this stop cut short
                return True
        return False

    return enough


def sort_batch(raws: list[str], action: str, enough) -> tuple[list[str], dict[str, int]]:
    """A batch's clean texts for the critic, and how many were dropped, by DROPPED reason:
    cut short by the early stop under ENOUGH_WORDS (a start, not a turn: what it was going to
    say is unknown), empty after clean-up, or the same as one before it."""
    cut = getattr(enough, "cut", [])  # rows the early stop cut short (none: it never stopped)
    out: list[str] = []
    dropped = dict.fromkeys(DROPPED, 0)
    for i, raw in enumerate(raws):
        text = clean_output(raw, action)
        if i < len(cut) and cut[i] and len(text.split()) < ENOUGH_WORDS:
            dropped["cut short"] += 1
        elif not text:
            dropped["empty"] += 1
        elif text in out:
            dropped["repeated"] += 1
        else:
            out.append(text)
    return out, dropped


class Adventure:
    """One game in play. The UI calls these methods; the store saves every change at once."""

    def __init__(self, game: Game, store: GameStore | None = None, primer: bool = True,
                 world_style: str | None = None, lore_rank: bool = WORLD_INFO_RANK,
                 lore_bias: float = worldinfo.DEFAULT_BIAS):
        self.game = game
        self.lore_bias = lore_bias  # phrase bias of triggered entries' names (an entry's own wins); 0: off
        self.lore_rank = lore_rank  # candidates that use triggered world info rank a little higher
        self.store = store
        self.primer = primer
        self.world_style = world_style  # None: WORLD_INFO_STYLE (the bench tries the others)

    # prompts --------------------------------------------------------------------------
    def budget(self, context_length: int, settings: SamplerSettings) -> int:
        return max(64, min(context_length, MAX_PROMPT_TOKENS + settings.max_new_tokens) - settings.max_new_tokens - 8)

    def prompt_for(self, action_text: str, generator, settings: SamplerSettings,
                   turns: list[Turn] | None = None) -> BuiltPrompt:
        if getattr(self, "_counter_for", None) is not generator:  # one token cache per model
            self._counter_for, self._counter = generator, TokenCounter(generator.count_tokens)
        view = self.game if turns is None else Game(**{**self.game.__dict__, "turns": turns})
        style = self.world_style or WORLD_INFO_STYLE
        primer = load_primer(with_note=style == "note+primer") if self.primer else ""
        return build_prompt(view, action_text, self._counter, self.budget(generator.context_length, settings),
                            primer, style, self.lore_bias)

    def brief_for(self, action: str, turns: list[Turn] | None = None, built: BuiltPrompt | None = None) -> critic.Brief:
        """What the critic holds a turn to: the scene it must stay with, turns it must not repeat,
        and the prompt parts (primer, author's note) the player must never see."""
        turns = self.game.turns if turns is None else turns
        recent = [turn_text(t) for t in turns[-2:]]
        world = [e.text for e in (built.world_info if built else [])]
        scene = "\n".join([self.game.context, *world, *recent, action])
        hidden = tuple(h for h in (self.game.authors_note.strip(), built.primer if built else "") if h)
        lore = ()
        if world and self.lore_rank:  # what only the entries say: using it is using the world info
            said = "\n".join([self.game.context, *recent, action])
            known = critic.content_stems(said) | critic.word_stems(said)
            # and the entries' one-word names, short ones too ("Pip"): naming one uses the entry
            named = critic.word_stems(" ".join(p for p, _ in (built.bias if built else ()) if " " not in p))
            lore = tuple(sorted((critic.content_stems("\n".join(world)) | named) - known))
        return critic.Brief(kind="narration", min_words=TURN_WORDS[0], max_words=TURN_WORDS[1], scene=scene,
                            earlier=tuple(t.output for t in turns[-10:] if t.output), hidden=hidden, lore=lore,
                            bias=built.bias if built else (), action=action)

    @staticmethod
    def turn_settings(settings: SamplerSettings, brief: critic.Brief) -> SamplerSettings:
        """The sampler for one turn: stopped before the next action, the triggered names raised."""
        return settings.with_(stop=tuple(dict.fromkeys(settings.stop + ACTION_STOPS)),
                              phrase_bias=settings.phrase_bias + brief.bias)

    def generate(self, prompt: str, action: str, generator, settings: SamplerSettings,
                 cancel=None, *, candidates: int = 1, brief: critic.Brief | None = None,
                 model_rank: bool = False, on_step: Callable[[int], None] | None = None,
                 ) -> Iterator[Chunk | Restart | Progress | Picked | str]:
        """A continuation. With one candidate it streams (Chunks, Restarts); with more it draws
        them in one batch (Progress), ranks them under the critic (and the model's PMI when
        `model_rank`), draws again within REDRAWS when none passes, and yields Picked. The clean
        output is the generator's return value (use `yield from` or `run`)."""
        brief = brief or self.brief_for(action)
        settings = self.turn_settings(settings, brief)
        if candidates > 1:
            return (yield from self._generate_many(prompt, action, generator, settings, cancel, candidates,
                                                   brief, model_rank, on_step))
        earlier = [t.output for t in self.game.turns[-10:] if t.output]
        output = ""
        for attempt in range(LOOP_RETRIES + 1):
            raw = ""
            tries = settings if attempt == 0 or settings.seed is None else settings.with_(seed=settings.seed + attempt)
            for piece in generator.stream(prompt, tries, cancel):
                raw += piece
                yield Chunk(piece)
            output = clean_output(raw, action)
            if cancel is not None and cancel.is_set():
                break
            if attempt < LOOP_RETRIES and (not output or is_repeat(output, earlier)):
                yield Restart("empty output" if not output else "repeated an earlier passage")
                continue
            break
        verdict = critic.judge(output, brief)
        yield Picked(output, verdict, [(output, verdict)], 1, "none (one candidate)")
        return output

    def _generate_many(self, prompt, action, generator, settings, cancel, k, brief, model_rank, on_step):
        pool: list[tuple[str, critic.Verdict]] = []
        batches, drawn, dropped = 0, 0, dict.fromkeys(DROPPED, 0)
        for batch in range(REDRAWS + 1):
            tries = settings if batch == 0 or settings.seed is None else settings.with_(seed=settings.seed + 1000 * batch)
            steps: list[int] = []

            def step(i: int) -> None:
                steps.append(i)  # noqa: B023 - called only within this iteration
                if on_step is not None:
                    on_step(i)

            enough = early_stop(action, brief)
            raws = generator.candidates(prompt, k, tries, cancel, step, enough=enough)
            batches += 1
            yield Progress(len(steps), tries.max_new_tokens, k, batches)
            if cancel is not None and cancel.is_set():
                return ""
            texts, lost = sort_batch(raws, action, enough)
            drawn += len(raws)
            for reason, n in lost.items():
                dropped[reason] += n
            for text in texts:
                if all(text != t for t, _ in pool):
                    pool.append((text, critic.judge(text, brief)))
                else:  # the same as one of an earlier batch
                    dropped["repeated"] += 1
            if any(v.passed for _, v in pool):
                break
            if batch < REDRAWS:
                yield Restart(f"none of {k} candidates passed the critic")
        if not pool:
            nothing = Picked("", critic.judge("", brief), [], batches, "critic", "", drawn, dropped)
            nothing.note = f"the model wrote nothing usable ({nothing.counts()})"
            yield nothing
            return ""
        verdicts = [v for _, v in pool]
        scores, ranked_by = None, "critic"
        passing = [i for i, v in enumerate(verdicts) if v.passed]
        if model_rank and len(passing) > 1 and critic.can_score(generator):
            pmi = critic.pmi_scores(generator, prompt, [pool[i][0] for i in passing])
            scores = [0.0] * len(pool)
            for i, value in zip(passing, pmi):
                scores[i] = value
            ranked_by = "critic + model (PMI)"
        order = critic.best_first(verdicts, scores, full_words=ENOUGH_WORDS)
        considered = [pool[i] for i in order]
        text, verdict = considered[0]
        picked = Picked(text, verdict, considered, batches, ranked_by, "", drawn, dropped)
        if not verdict.passed:
            picked.note = f"no candidate passed the critic ({picked.counts()}); showing the best"
        yield picked
        return text

    # turns ----------------------------------------------------------------------------
    def begin(self, kind: str, text: str) -> Turn:
        """A new player action (output still empty); `commit` stores it with its output."""
        if kind not in ("do", "say", "story"):
            raise StoryloomError(f"Unknown action kind {kind!r}")
        if not text.strip():
            raise StoryloomError("Type an action first.")
        return Turn(kind, format_action(kind, text), "")

    def commit(self, turn: Turn) -> None:
        with self._saved_or_unchanged():
            self.game.turns.append(turn)
            self.game.undone.clear()
            if self.store:
                self.store.add_turn(self.game)

    def keep_draft(self, text: str, kind: str = "") -> None:
        """Save what the action box holds, unsent, and as what it was typed: a quit, a kill or a
        crash before Enter keeps it, and opening the game again puts it back. Written only when
        it changed; a refused write leaves the last saved draft as the game's."""
        kind = kind if text.strip() else ""
        if (text, kind) == (self.game.draft, self.game.draft_kind):
            return
        before = self.game.draft, self.game.draft_kind
        self.game.draft, self.game.draft_kind = text, kind
        if self.store:
            try:
                self.store.save_draft(self.game)
            except BaseException:
                self.game.draft, self.game.draft_kind = before
                raise

    def commit_opening(self, output: str) -> None:
        self._set_output(0, output)

    def undo(self) -> Turn | None:
        with self._saved_or_unchanged():
            last = self.game.turns[-1] if self.game.turns else None
            if last is not None and last.earlier:  # undo a branch: the text before it (kept in the store)
                last.output = last.earlier.pop()
                self._set_output(len(self.game.turns) - 1, last.output)
                return last
            if len(self.game.turns) <= 1:  # the opening stays
                return None
            turn = self.game.turns.pop()
            self.game.undone.append(turn)
            if self.store:
                self.store.set_active(self.game)
            return turn

    def redo(self) -> Turn | None:
        if not self.game.undone:
            return None
        with self._saved_or_unchanged():
            turn = self.game.undone.pop()
            self.game.turns.append(turn)
            if self.store:
                self.store.set_active(self.game)
            return turn

    def replace_last_output(self, output: str) -> None:
        """Retry or alter: the last turn keeps its action and gets new text."""
        self._set_output(len(self.game.turns) - 1, output)

    # token probabilities and branching from an alternative --------------------------------
    def last_turn_prompt(self, generator, settings: SamplerSettings) -> str:
        """The prompt the last turn's text was written after, up to where that text begins."""
        turns = self.game.turns
        turn = turns[-1]
        if len(turns) == 1:
            built = self.prompt_for("", generator, settings, [Turn(turn.kind, turn.action, "")])
        else:
            built = self.prompt_for(turn.action, generator, settings, turns[:-1])
        return built.text + ("" if turn.kind in ("do", "say", "story") else " ")

    def token_choices(self, generator, settings: SamplerSettings) -> list:
        """The last output token by token: each token's probability and its top alternatives."""
        output = self.game.turns[-1].output
        return generator.token_choices(self.last_turn_prompt(generator, settings), output) if output else []

    def continue_from(self, prefix: str, generator, settings: SamplerSettings, cancel=None
                      ) -> Iterator[Chunk | str]:
        """A fresh continuation of the last turn after `prefix` (its text up to a token, then the
        chosen alternative); streams Chunks of what follows the prefix, returns the clean output."""
        turn = self.game.turns[-1]
        settings = settings.with_(stop=tuple(dict.fromkeys(settings.stop + ACTION_STOPS)))
        raw = ""
        for piece in generator.stream(self.last_turn_prompt(generator, settings) + prefix, settings, cancel):
            raw += piece
            yield Chunk(piece)
        return clean_output(prefix + raw, turn.action)

    def branch(self, output: str) -> None:
        """The last turn takes `output` (a branch from an alternative); undo brings back the text before."""
        with self._saved_or_unchanged():
            position = len(self.game.turns) - 1
            self.game.turns[position].earlier.append(self.game.turns[position].output)
            self._set_output(position, output)

    def _set_output(self, position: int, output: str) -> None:
        with self._saved_or_unchanged():
            self.game.turns[position].output = output
            if self.store:
                self.store.update_turn(self.game, position)

    def save_meta(self) -> None:
        """Save memory, note, world info and summary as the game now holds them (the editors
        change the game first). When the write fails they go back to what the database holds,
        so what the player sees is what is saved."""
        if not self.store:
            return
        try:
            self.store.save_meta(self.game)
        except BaseException:
            try:
                saved = self.store.load(self.game.id)
            except Exception as exc:  # noqa: BLE001 - unreadable too: the write's error is the one to tell
                log.warning("after a refused save, the saved game could not be read back either: %s", exc)
            else:
                for name in META_FIELDS:
                    setattr(self.game, name, getattr(saved, name))
            raise

    @contextmanager
    def _saved_or_unchanged(self) -> Iterator[None]:
        """Change the game, then write: when the write fails (a locked or full database) the
        game goes back to exactly what it was, so memory and the database never disagree.
        Turns are restored in place (the screen may hold them)."""
        game = self.game
        turns, undone = list(game.turns), list(game.undone)
        texts = [(t, t.kind, t.action, t.output, list(t.earlier)) for t in {id(t): t for t in turns + undone}.values()]
        updated = game.updated
        try:
            yield
        except BaseException:
            game.turns[:], game.undone[:] = turns, undone
            for turn, kind, action, output, earlier in texts:
                turn.kind, turn.action, turn.output, turn.earlier[:] = kind, action, output, earlier
            game.updated = updated
            raise

    def to_markdown(self) -> str:
        lines = [f"# {self.game.title}", ""]
        if self.game.context:
            lines += [f"*{self.game.context}*", ""]
        for turn in self.game.turns:
            if turn.kind in ("do", "say"):
                lines += [f"**{turn.action}**", ""] + ([turn.output, ""] if turn.output else [])
            else:  # the opening and story turns: the model goes on in the same paragraph, as on screen
                # (apart, the opening broke mid-sentence: "Ahead of you," / "a dragon appears.")
                lines += [" ".join(part for part in (turn.action, turn.output) if part), ""]
        return "\n".join(lines).rstrip() + "\n"


def run(stream: Iterator, on_event: Callable[[Chunk | Restart | Progress | Picked], None] | None = None
        ) -> tuple[list, str]:
    """Drain an Adventure.generate stream, handing each event to `on_event`: (events, clean output)."""
    events = []
    while True:
        try:
            event = next(stream)
        except StopIteration as stop:
            return events, stop.value or ""
        events.append(event)
        if on_event is not None:
            on_event(event)


# -- headless play (the `play` command and the quality bench) --------------------------------
ACTION_PREFIXES = {"say:": "say", "story:": "story", "do:": "do"}


def parse_actions(text: str) -> list[tuple[str, str]]:
    """One action a line: 'say: hello', 'story: It rains.', or a plain 'do' action; blank lines
    and '#' comments are skipped."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind = "do"
        for prefix, name in ACTION_PREFIXES.items():
            if line.lower().startswith(prefix):
                kind, line = name, line[len(prefix):].strip()
                break
        if not line:
            raise StoryloomError(f"Line {n} has a '{kind}:' prefix but no action after it.")
        out.append((kind, line))
    return out


def find_scenario(spec: str) -> tuple[Setting, Character]:
    """'fantasy/knight' -> its setting and character."""
    settings = load_scenarios()
    setting_key, _, character_key = spec.partition("/")
    for setting in settings:
        if setting.key == setting_key:
            for character in setting.characters:
                if character.key == character_key:
                    return setting, character
    known = ", ".join(f"{s.key}/{c.key}" for s in settings for c in s.characters)
    raise StoryloomError(f"No scenario {spec!r}; choose one of: {known}.")


@dataclass
class PlayedTurn:
    kind: str
    action: str
    output: str
    pick: Picked
    seconds: float

    def to_dict(self) -> dict:
        return {"kind": self.kind, "action": self.action, "output": self.output, "seconds": round(self.seconds, 3),
                "candidates": self.pick.drawn, "considered": len(self.pick.considered),
                "dropped": {r: n for r, n in self.pick.dropped.items() if n}, "batches": self.pick.batches,
                "ranked_by": self.pick.ranked_by, "note": self.pick.note, "verdict": self.pick.verdict.to_dict()}


def play_actions(game: Game, actions: list[tuple[str, str]], generator, settings: SamplerSettings,
                 candidates: int = DEFAULT_CANDIDATES, model_rank: bool = False, primer: bool = True,
                 on_turn: Callable[[PlayedTurn], None] | None = None, world_style: str | None = None,
                 after_turn: Callable[[Adventure], None] | None = None,
                 lore_rank: bool = WORLD_INFO_RANK, lore_bias: float = worldinfo.DEFAULT_BIAS) -> list[PlayedTurn]:
    """Play a game headless: the opening (when it has no output yet), then each action in turn;
    `after_turn(play)` runs after each committed turn (the summary keeper, say)."""
    import time

    play = Adventure(game, None, primer=primer, world_style=world_style, lore_rank=lore_rank, lore_bias=lore_bias)
    played = []
    steps = [("start", "")] if not game.turns[0].output else []
    for kind, text in steps + actions:
        start = time.perf_counter()
        if kind == "start":
            opening = game.turns[0]
            history, action, turn = [Turn(opening.kind, opening.action, "")], "", opening
        else:
            turn = play.begin(kind, text)
            history, action = game.turns, turn.action
        if settings.seed is not None:  # every turn its own seed, the same for every k
            settings = settings.with_(seed=settings.seed + 1)
        built = play.prompt_for(action, generator, settings, history)
        events, output = run(play.generate(built.text, action, generator, settings, candidates=candidates,
                                           brief=play.brief_for(action, history, built), model_rank=model_rank))
        pick = next((e for e in reversed(events) if isinstance(e, Picked)), None) or \
            Picked(output, critic.judge(output, play.brief_for(action, history, built)), [])
        if kind == "start":
            play.commit_opening(output)
        elif output:
            turn.output = output
            play.commit(turn)
            if after_turn is not None:
                after_turn(play)
        done = PlayedTurn(kind, turn.action, output, pick, time.perf_counter() - start)
        played.append(done)
        if on_turn is not None:
            on_turn(done)
    return played

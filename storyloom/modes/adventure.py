"""Adventure mode as plain Python: scenarios, player actions, the context builder, output
clean-up, and the turn history (undo, redo, retry, alter) saved as it happens.

The prompt reads like a story with the player's actions marked "> " (as in AI Dungeon 2), so
any causal LM can continue it; the model's output is cut before it writes the next action.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from typing import Callable, Iterator

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.text import SENTENCE_END, TokenCounter, cut_special, fit_text, latest_that_fit
from storyloom.paths import assets_dir
from storyloom.store.stories import Game, GameStore, Turn, WorldEntry

ACTION_STOPS = ("\n>", "\n\n\n")
AUTHORS_NOTE_DEPTH = 3  # the note goes this many turns before the end, as KoboldAI does
WORLD_INFO_SCAN = 4  # recent turns (and the new action) scanned for world-info keywords
REPEAT_SIMILARITY = 0.9
# Prompt budget cap: prefill cost grows with the prompt and small models lose the thread in long
# contexts, so a game uses at most this many tokens even when the model's window is larger.
MAX_PROMPT_TOKENS = 2048
LOOP_RETRIES = 3


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


def custom_game(prompt: str, context: str = "", title: str = "") -> Game:
    prompt = prompt.strip()
    if not prompt:
        raise StoryloomError("A custom adventure needs an opening: write how the story begins.")
    return Game(title=title.strip() or prompt[:40], scenario="custom", context=context.strip(),
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


def turn_text(turn: Turn) -> str:
    """One turn as it reads in the prompt and in the transcript."""
    if turn.kind in ("do", "say"):
        return f"\n{turn.action}\n{turn.output}"
    if turn.kind == "story":
        return f"\n{turn.action} {turn.output}".rstrip(" ")
    return f"{turn.action} {turn.output}".rstrip(" ")


# -- output clean-up --------------------------------------------------------------------
def clean_output(raw: str, action: str = "") -> str:
    """Make a model continuation fit the story.

    Stops before the model writes the player's next action ("> ..."), drops an echo of the
    action, keeps whole sentences only, and trims stray chat tokens and blank runs.
    """
    text = cut_special(raw.replace("\r", ""))
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith(">"):
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
    ends = list(SENTENCE_END.finditer(text))
    if ends:
        text = text[: ends[-1].end()]
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
@dataclass
class BuiltPrompt:
    text: str
    tokens: int
    turns_included: int
    world_info: list[WorldEntry]


def triggered_world_info(game: Game, action: str, scan: int = WORLD_INFO_SCAN) -> list[WorldEntry]:
    recent = " ".join([turn_text(t) for t in game.turns[-scan:]] + [action]).lower()
    found = []
    for entry in game.world_info:
        if any(re.search(rf"\b{re.escape(k.lower().strip())}\b", recent) for k in entry.keys if k.strip()):
            found.append(entry)
    return found


def build_prompt(game: Game, action_text: str, count: TokenCounter, budget: int) -> BuiltPrompt:
    """The prompt for the next continuation, never over `budget` tokens.

    Always kept: the context sentence, then memory, then triggered world info, then the new
    action; then as many recent turns as fit, with the author's note a few turns from the end.
    """
    head_parts = []
    reserve = count(action_text) if action_text else 0
    room = budget - min(reserve, budget // 2)
    if game.context:
        head_parts.append(fit_text(game.context, count, room // 2, keep_end=False))
    if game.memory:
        head_parts.append(fit_text(game.memory, count, room // 2 - count("\n".join(head_parts)), keep_end=True))
    world = triggered_world_info(game, action_text)
    kept_world = []
    for entry in world:
        candidate = "\n".join(head_parts + [e.text for e in kept_world] + [entry.text])
        if count(candidate) <= room * 3 // 4:
            kept_world.append(entry)
    head = "\n".join(p for p in head_parts + [e.text for e in kept_world] if p)
    note = f"\n[Author's note: {game.authors_note.strip()}]" if game.authors_note.strip() else ""
    action = f"\n{action_text}\n" if action_text.startswith(">") else (f"\n{action_text}" if action_text else "")
    fixed = count(head + "\n\n") + count(note) + count(action)
    if fixed > budget:  # a huge action: keep its end (what the player typed last)
        action = fit_text(action, count, budget - count(head + "\n\n") - count(note), keep_end=True)
        fixed = count(head + "\n\n") + count(note) + count(action)
    history = latest_that_fit([turn_text(t) for t in game.turns], count, budget - fixed)
    if note:
        at = max(0, len(history) - AUTHORS_NOTE_DEPTH)
        history.insert(at, note)

    def assemble() -> str:
        return (head + "\n\n" if head else "") + ("".join(history) + action).lstrip("\n")

    text = assemble()
    tokens = count(text)
    while tokens > budget and history:  # joins can tokenize a little differently: re-check
        history.pop(1 if note and history[0] == note and len(history) > 1 else 0)
        text = assemble()
        tokens = count(text)
    return BuiltPrompt(text, tokens, len([h for h in history if h != note]), kept_world)


# -- the game ---------------------------------------------------------------------------
@dataclass
class Chunk:
    text: str


@dataclass
class Restart:
    """The loop guard threw the last attempt away; a new one follows."""

    reason: str


class Adventure:
    """One game in play. The UI calls these methods; the store saves every change at once."""

    def __init__(self, game: Game, store: GameStore | None = None):
        self.game = game
        self.store = store

    # prompts --------------------------------------------------------------------------
    def budget(self, context_length: int, settings: SamplerSettings) -> int:
        return max(64, min(context_length, MAX_PROMPT_TOKENS + settings.max_new_tokens) - settings.max_new_tokens - 8)

    def prompt_for(self, action_text: str, generator, settings: SamplerSettings,
                   turns: list[Turn] | None = None) -> BuiltPrompt:
        if getattr(self, "_counter_for", None) is not generator:  # one token cache per model
            self._counter_for, self._counter = generator, TokenCounter(generator.count_tokens)
        view = self.game if turns is None else Game(**{**self.game.__dict__, "turns": turns})
        return build_prompt(view, action_text, self._counter, self.budget(generator.context_length, settings))

    def generate(self, prompt: str, action: str, generator, settings: SamplerSettings,
                 cancel=None) -> Iterator[Chunk | Restart | str]:
        """Stream a continuation. Yields Chunks (raw text) and Restarts; returns the clean output
        as the generator's return value (use `yield from` or `run`)."""
        settings = settings.with_(stop=tuple(dict.fromkeys(settings.stop + ACTION_STOPS)))
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
        return output

    # turns ----------------------------------------------------------------------------
    def begin(self, kind: str, text: str) -> Turn:
        """A new player action (output still empty); `commit` stores it with its output."""
        if kind not in ("do", "say", "story"):
            raise StoryloomError(f"Unknown action kind {kind!r}")
        if not text.strip():
            raise StoryloomError("Type an action first.")
        return Turn(kind, format_action(kind, text), "")

    def commit(self, turn: Turn) -> None:
        self.game.turns.append(turn)
        self.game.undone.clear()
        if self.store:
            self.store.add_turn(self.game)

    def commit_opening(self, output: str) -> None:
        self._set_output(0, output)

    def undo(self) -> Turn | None:
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
        turn = self.game.undone.pop()
        self.game.turns.append(turn)
        if self.store:
            self.store.set_active(self.game)
        return turn

    def replace_last_output(self, output: str) -> None:
        """Retry or alter: the last turn keeps its action and gets new text."""
        self._set_output(len(self.game.turns) - 1, output)

    def _set_output(self, position: int, output: str) -> None:
        self.game.turns[position].output = output
        if self.store:
            self.store.update_turn(self.game, position)

    def save_meta(self) -> None:
        if self.store:
            self.store.save_meta(self.game)

    def to_markdown(self) -> str:
        lines = [f"# {self.game.title}", ""]
        if self.game.context:
            lines += [f"*{self.game.context}*", ""]
        for turn in self.game.turns:
            if turn.kind in ("do", "say"):
                lines += [f"**{turn.action}**", ""]
            elif turn.action:
                lines += [turn.action, ""]
            if turn.output:
                lines += [turn.output, ""]
        return "\n".join(lines).rstrip() + "\n"


def run(stream: Iterator, on_event: Callable[[Chunk | Restart], None] | None = None) -> tuple[list, str]:
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

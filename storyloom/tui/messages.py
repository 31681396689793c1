"""Messages a generation worker posts to its screen (the worker never touches widgets)."""
from __future__ import annotations

import logging

from textual.message import Message

from storyloom import StoryloomError

log = logging.getLogger(__name__)


def error_text(exc: BaseException) -> str:
    """A failure as a player reads it: our own errors as written, anything else with its type
    (and, being unexpected, with its traceback in the log file: the screen shows one line)."""
    if isinstance(exc, StoryloomError):
        return str(exc)
    log.error("shown to the player: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


class GenerationStarted(Message):
    def __init__(self, prompt_tokens: int, budget: int) -> None:
        super().__init__()
        self.prompt_tokens = prompt_tokens
        self.budget = budget


class GenerationChunk(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class GenerationRestarted(Message):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class GenerationFinished(Message):
    def __init__(self, output: str, cancelled: bool, tokens_per_second: float) -> None:
        super().__init__()
        self.output = output
        self.cancelled = cancelled
        self.tokens_per_second = tokens_per_second


class GenerationFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class CandidatesProgress(Message):
    """One more decoding step of a batched candidates call."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__()
        self.step = step
        self.total = total


class CandidatesReady(Message):
    def __init__(self, candidates: list, cancelled: bool, more: bool, tokens_per_second: float) -> None:
        super().__init__()
        self.candidates = candidates
        self.cancelled = cancelled
        self.more = more
        self.tokens_per_second = tokens_per_second


class TreeExpanded(Message):
    """The model wrote an outcome and/or options for a tree node (stored by the screen)."""

    def __init__(self, node_id: str, expansion, author: str, move: bool, ahead: bool = False) -> None:
        super().__init__()
        self.node_id = node_id
        self.expansion = expansion
        self.author = author
        self.move = move
        self.ahead = ahead  # background pre-generation, not the player's request


class TreeWorkDone(Message):
    def __init__(self, error: str | None = None, cancelled: bool = False, ahead: bool = False) -> None:
        super().__init__()
        self.error = error
        self.cancelled = cancelled
        self.ahead = ahead


class PoemLineMade(Message):
    """Line `index` was written (line None: taken back to be written again)."""

    def __init__(self, index: int, line) -> None:
        super().__init__()
        self.index = index
        self.line = line


class PoemLineRevised(Message):
    """Once the poem stands, line `index` is being written again (line None), or was, and `line` replaces it."""

    def __init__(self, index: int, line) -> None:
        super().__init__()
        self.index = index
        self.line = line


class PoemDone(Message):
    def __init__(self, poem=None, error: str | None = None, rewritten: int | None = None, line=None) -> None:
        super().__init__()
        self.poem = poem
        self.error = error
        self.rewritten = rewritten  # a single line was rewritten (index), with `line` (None: none found)
        self.line = line


class NextPromptSized(Message):
    """The size of the prompt the next turn will use, counted after a change to the story."""

    def __init__(self, version: int, usage: str) -> None:
        super().__init__()
        self.version = version
        self.usage = usage

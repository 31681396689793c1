"""The skeleton every generating screen shares: busy flag, cancel, the model gate, progress, toasts.

A screen calls `start_work()` on the UI thread, then starts its worker; the worker runs its
generation inside `with self.model_turn() as generator:` (the model once loaded, and this
screen's place at the model's gate: one generation per local model, the player's first); the
screen's result handler calls `end_work()` and, on a failure, `show_error()`.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from textual import work
from textual.screen import Screen
from textual.widgets import ProgressBar

from storyloom import StoryloomError
from storyloom.tui.messages import NextPromptSized


class Stopped(StoryloomError):
    """Esc was pressed while the request waited for the model: nothing was generated."""


class GeneratingScreen(Screen):
    PROGRESS = ""  # the id of this screen's ProgressBar ("" when it has none)
    draft = None  # a DraftKeeper (tui/draft_keeper.py) where the screen has a box kept as a draft
    BUSY_TEXT = "Still writing; press Esc to stop it first."

    def __init__(self) -> None:
        super().__init__()
        self._working = False
        self.cancel = threading.Event()
        self._writing_since: float | None = None
        self._pieces = 0
        self._size_version = 0  # the latest count of the next prompt wins (an older one may end later)

    @property
    def busy(self) -> bool:
        return self._working

    @busy.setter
    def busy(self, value: bool) -> None:
        self._working = value

    # -- UI thread ----------------------------------------------------------------------
    def _idle(self) -> bool:
        """True when nothing is generating; else says so (the key waits for the model)."""
        if self.busy:
            self.notify(self.BUSY_TEXT, severity="warning", markup=False)
        return not self.busy

    def start_work(self, total: float | None = None) -> threading.Event:
        """Mark the screen busy with a fresh cancel flag; show the progress bar (None: pulsing)."""
        self._working = True
        self.cancel = threading.Event()
        if self.PROGRESS:
            bar = self.query_one(f"#{self.PROGRESS}", ProgressBar)
            bar.update(total=total, progress=0)
            bar.display = True
        return self.cancel

    def end_work(self, tokens_per_second: float | None = None) -> None:
        self._working = False
        if self.PROGRESS:
            self.query_one(f"#{self.PROGRESS}", ProgressBar).display = False
        self.writing_done(tokens_per_second)

    def show_error(self, message: str, title: str = "Generation failed") -> None:
        # model and server text (a server's error may contain "[...]") is shown literally
        self.notify(message, title=title, severity="error", timeout=10, markup=False)

    def may_quit(self) -> bool:  # the app asks before Ctrl+Q: a box kept as a draft is saved first
        if self.draft is not None:
            self.draft.keep()
        return True

    def action_stop_or_back(self) -> None:
        if self.busy:
            self.cancel.set()
        else:
            if self.draft is not None:  # what the player typed and did not send goes with the story
                self.draft.keep()
            self.app.pop_screen()

    # -- the status bar's "Context: N/budget": the prompt the next turn will use --------------
    def next_prompt_counter(self) -> Callable[[object], str] | None:
        """On the UI thread: a snapshot of what the next turn's prompt is made of, as a function
        of the model giving "N/budget" (run off the UI thread). None: this screen shows no count."""
        return None

    def size_next_prompt(self) -> None:
        """Count the next turn's prompt off the UI thread: the count of the turn just written, or
        of the story before an undo or an edit, was shown until the next turn began."""
        if self.busy or self.app.generator is None:  # a running turn shows its own; no model: no count
            return
        count = self.next_prompt_counter()
        if count is not None:
            self._size_version += 1
            self._count_next(self._size_version, count)

    def on_screen_resume(self) -> None:  # back from a dialog that may have changed the story
        self.size_next_prompt()

    @work(thread=True, exclusive=True, group="next-prompt", exit_on_error=False)
    def _count_next(self, version: int, count: Callable[[object], str]) -> None:
        try:
            usage = count(self.app.loaded_generator())
        except Exception:  # noqa: BLE001 - the count is a nicety: the old one stays, play goes on
            return
        self.post_message(NextPromptSized(version, usage))

    def on_next_prompt_sized(self, message: NextPromptSized) -> None:
        # not while a turn runs, nor from under another screen (it would claim the status bar)
        if message.version == self._size_version and not self.busy and self.app._front_screen() is self:
            self.app.context_usage = message.usage

    # live "writing" in the status bar: tokens streamed and their rate since the first one
    def writing_started(self) -> None:
        self._writing_since, self._pieces = None, 0
        self.app.activity = "writing… (Esc stops)"

    def writing_progress(self, pieces: int = 1) -> None:
        now = time.monotonic()
        if self._writing_since is None:  # the clock starts at the first token, after the prompt is read
            self._writing_since = now
        self._pieces += pieces
        seconds = now - self._writing_since
        rate = f", {(self._pieces - 1) / seconds:.1f} tok/s" if seconds > 0.2 else ""
        self.app.activity = f"writing: {self._pieces} tokens{rate} (Esc stops)"

    def writing_done(self, tokens_per_second: float | None = None) -> None:
        self._writing_since = None
        if self.app.activity and self.app.usage_screen is self:
            self.app.activity = ""
        if tokens_per_second is not None:
            self.app.speed = f"{tokens_per_second:.1f}"

    # -- worker thread ------------------------------------------------------------------
    @contextmanager
    def model_turn(self, cancel: threading.Event | None = None, background: bool = False) -> Iterator:
        """The loaded model, held for this generation; raises Stopped if cancelled while waiting."""
        app = self.app
        cancel = self.cancel if cancel is None else cancel
        generator = app.loaded_generator()
        with app.gate.hold(background=background, cancel=cancel) as ok:
            if not ok:
                raise Stopped("Stopped before the model started.")
            yield generator

"""Keeps an adventure's running summary up to date in the background (modes/summary.py).

After each committed turn the screen calls `after_commit()`: a thread worker waits for the model
as background work (the player's own turn goes first), folds what fell out of the prompt, and
puts the result into the game on the UI thread, unless the game moved on meanwhile. A new
player action stops it (`stop()`), so summarising never holds up play; a stopped or failed fold
leaves the old summary, and the next commit tries again.
"""
from __future__ import annotations

import logging
import threading

from textual.worker import get_current_worker

from storyloom import StoryloomError
from storyloom.modes import summary as sm
from storyloom.modes.adventure import Adventure
from storyloom.modes.text import TokenCounter
from storyloom.store.stories import Game

log = logging.getLogger(__name__)


class _Either:
    """Set when the keeper is stopped or Textual cancelled the worker (its screen closed)."""

    def __init__(self, event: threading.Event, worker) -> None:
        self.event, self.worker = event, worker

    def is_set(self) -> bool:
        return self.event.is_set() or self.worker.is_cancelled


class SummaryKeeper:
    def __init__(self, screen) -> None:
        self.screen = screen  # a GeneratingScreen with `play` (an Adventure)
        self.cancel = threading.Event()
        self.folds = 0  # folds put into the game this session (tests and the status read it)
        self.warned = False

    def stop(self) -> None:
        self.cancel.set()

    def after_commit(self) -> None:
        play = self.screen.play
        if play.game.summary_mode != "auto":
            return
        # The worker reads a snapshot: the game's turns may change on the UI thread meanwhile.
        view = Adventure(Game(**{**play.game.__dict__, "turns": list(play.game.turns)}), primer=play.primer,
                         world_style=play.world_style, lore_rank=play.lore_rank)
        self.cancel = threading.Event()
        cancel = self.cancel
        self.screen.run_worker(lambda: self._fold(view, cancel), thread=True, group="summary", exclusive=True,
                               exit_on_error=False)

    def _fold(self, view: Adventure, stop: threading.Event) -> None:
        app = self.screen.app
        cancel = _Either(stop, get_current_worker())
        try:
            with self.screen.model_turn(cancel, background=True) as generator:
                job = sm.due(view, generator, app.config.sampler)
                if job is None:
                    return
                text = sm.fold(job, sm.summarizer_for(generator), TokenCounter(generator.count_tokens), cancel)
        except StoryloomError as exc:  # stopped, nothing usable, no model: the old summary stays
            log.info("summary not updated: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - a background nicety must never break play
            log.exception("summary failed")
            app.call_from_thread(self._failed, f"{type(exc).__name__}: {exc}")
            return
        if not cancel.is_set():
            app.call_from_thread(self._done, job, text)

    def _done(self, job: sm.Fold, text: str) -> None:
        play = self.screen.play
        if not sm.apply(play.game, job, text):
            return
        self.folds += 1
        try:
            play.save_meta()
        except StoryloomError as exc:
            self.screen.notify(f"The new summary was not saved (the old one stays): {exc}", severity="warning", markup=False)
            return
        self.screen.size_next_prompt()  # the summary is part of the next prompt

    def _failed(self, message: str) -> None:
        if not self.warned:  # once a session: the game goes on without a new summary
            self.warned = True
            self.screen.notify(f"The summary could not be updated ({message}); the old one stays.",
                               severity="warning", timeout=6, markup=False)

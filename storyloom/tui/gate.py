"""One gate per model: generations queue for it, the player's own requests before read-ahead.

A local model runs one generation at a time (two would share its stats, its thread settings
and the same cores); a server that declares `capabilities.parallel` > 1 may run that many.
Workers take a slot around each generation; background work (tree read-ahead) takes one only
while no foreground request waits, and takes it per item, so it yields between items.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

WAIT_STEP_S = 0.05  # how often a waiter looks at its cancel flag


class GenerationGate:
    def __init__(self, slots: Callable[[], int] = lambda: 1) -> None:
        self._slots = slots  # read at each acquire: the model (and its parallel) can change
        self._cond = threading.Condition()
        self._running = 0
        self._foreground_waiting = 0
        self.peak = 0  # most generations that ever held the gate at once (tests read it)

    def _free(self) -> bool:
        return self._running < max(1, self._slots())

    def acquire(self, background: bool = False, cancel: threading.Event | None = None) -> bool:
        """Wait for a slot; False when `cancel` was set first (the slot is not taken)."""
        with self._cond:
            if not background:
                self._foreground_waiting += 1
            try:
                while not (self._free() and (not background or self._foreground_waiting == 0)):
                    if cancel is not None and cancel.is_set():
                        return False
                    self._cond.wait(WAIT_STEP_S)
                if cancel is not None and cancel.is_set():
                    return False
                self._running += 1
                self.peak = max(self.peak, self._running)
                return True
            finally:
                if not background:
                    self._foreground_waiting -= 1
                    self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    @contextmanager
    def hold(self, background: bool = False, cancel: threading.Event | None = None) -> Iterator[bool]:
        """`with gate.hold(cancel=c) as ok:` runs the body holding a slot when ok is True."""
        ok = self.acquire(background, cancel)
        try:
            yield ok
        finally:
            if ok:
                self.release()

    @property
    def foreground_waiting(self) -> bool:
        with self._cond:
            return self._foreground_waiting > 0

"""Writes from the UI thread: a locked, full or read-only database is a toast, never the end of
the app (SQLite already waited out the busy timeout)."""
from __future__ import annotations

from functools import wraps
from typing import Callable

from storyloom.store.db import StoreError


def not_saved(screen, exc: StoreError) -> None:
    screen.notify(str(exc), title="Not saved", severity="error", timeout=10, markup=False)


def saving(method):
    """A screen method that writes to the database; on a StoreError the screen stays as it was,
    so nothing shown is unsaved."""

    @wraps(method)
    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StoreError as exc:
            not_saved(self, exc)
        return None

    return run


def try_saving(screen, write: Callable[[], object]) -> bool:
    """`write()`, or a toast when the database refused it; True when it was written."""
    try:
        write()
    except StoreError as exc:
        not_saved(screen, exc)
        return False
    return True


def confirm_delete(screen, question: str, delete: Callable[[], object], deleted: str,
                   then: Callable[[], None]) -> None:
    """Ask `question` first (one key must never throw away a whole game, story or poem); on yes
    `delete()`, then say `deleted` and call `then` (a refused write is a toast, as try_saving)."""
    from storyloom.tui.screens.editors import ConfirmDialog

    def answered(yes: bool | None) -> None:
        if yes and try_saving(screen, delete):
            screen.notify(deleted, markup=False)
            then()

    screen.app.push_screen(ConfirmDialog(question), answered)

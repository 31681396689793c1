"""A box the player types into, kept as a draft in the database: a moment after the last key,
and at once when the screen is left or the app quits. A kill or a crash between typing and
Enter loses at most the last second of keys."""
from __future__ import annotations

from typing import Callable

from storyloom.store.db import StoreError
from storyloom.tui.saving import not_saved

DRAFT_DELAY = 1.0  # seconds after the last keystroke (a write per key would be wasteful)


class DraftKeeper:
    def __init__(self, screen, read: Callable[[], tuple[str, str]], write: Callable[[str, str], None]):
        """read: (text, kind) as the draft should now be; write: store it (only called to save)."""
        self.screen = screen
        self.read = read
        self.write = write
        self.refused = False  # the last write failed: told once, not on every keystroke
        self._timer = None

    def restore(self, box, text: str) -> None:
        """A saved draft back in its box, the cursor after it, and say so."""
        if text:
            box.value, box.cursor_position = text, len(text)
            self.screen.notify("What you had typed and not sent is back in the box.", timeout=5)

    def changed(self) -> None:
        """The box changed: save once the typing pauses."""
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.screen.set_timer(DRAFT_DELAY, self.keep)

    def keep(self) -> None:
        """Save now (the write is skipped by the mode when nothing changed)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        try:
            self.write(*self.read())
        except StoreError as exc:
            if not self.refused:
                not_saved(self.screen, exc)
            self.refused = True
        else:
            self.refused = False

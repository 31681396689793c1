"""Refill an OptionList without losing the player's place in it; the number keys that pick from one."""
from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option


def refill(menu: OptionList, options: list[Option]) -> None:
    highlighted = menu.highlighted
    menu.clear_options()
    menu.add_options(options)
    menu.highlighted = highlighted if highlighted is not None and highlighted < menu.option_count else 0
    menu.focus()


class TypeToWrite(OptionList):
    """A letter typed on this list that is not one of its keys starts the player's own text in
    the screen's WRITE_BOX (an Input). Players just type: the letters were swallowed, and the
    first letter that is a key (co-write's 'e', a tree's 'w') opened an editor with the rest of
    the sentence typed into it."""

    WRITE_BOX = ""
    _handing_over = False  # a letter went to the box; the box has not got the focus yet

    def on_key(self, event: events.Key) -> None:
        if not event.is_printable or not event.character:
            return
        # Keys a terminal sends together reach this list before the box has the focus: they
        # follow the first into the box, this list's keys too (each 'e' of "The keeper" edited).
        if event.key in self._bindings.key_to_bindings and not self._handing_over:
            return
        self._handing_over = True
        box = self.screen.query_one(self.WRITE_BOX, Input)
        box.focus()
        box.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()

    def on_focus(self) -> None:
        self._handing_over = False  # back on the list (Esc in the box): its keys are its own again

    def on_blur(self) -> None:
        self._handing_over = False


def number_keys(count: int) -> str:
    """The keys that pick from `count` numbered rows, as a hint says them: '1-4/Enter'; with ten
    rows 0 is the tenth; past ten the arrows reach the rest (the hint said '1-9' with 3 rows, and
    with 16 no key reached the tenth)."""
    if count <= 0:
        return ""
    if count == 1:
        return "1/Enter"
    if count <= 9:
        return f"1-{count}/Enter"
    return "1-9, 0/Enter" if count == 10 else "1-9, 0, ↑↓ Enter"


def number_bindings(action: str, verb: str) -> list[Binding]:
    """Keys 1-9 and 0 (the tenth) calling `action(n)`: hidden, as the hint line names them."""
    return [Binding(str(n % 10), f"{action}({n})", f"{verb} {n}", show=False) for n in range(1, 11)]

"""Refill an OptionList without losing the player's place in it."""
from __future__ import annotations

from textual import events
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

    def on_key(self, event: events.Key) -> None:
        if not event.is_printable or not event.character or event.key in self._bindings.key_to_bindings:
            return
        box = self.screen.query_one(self.WRITE_BOX, Input)
        box.focus()
        box.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()

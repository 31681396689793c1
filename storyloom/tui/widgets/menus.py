"""Refill an OptionList without losing the player's place in it."""
from __future__ import annotations

from textual.widgets import OptionList
from textual.widgets.option_list import Option


def refill(menu: OptionList, options: list[Option]) -> None:
    highlighted = menu.highlighted
    menu.clear_options()
    menu.add_options(options)
    menu.highlighted = highlighted if highlighted is not None and highlighted < menu.option_count else 0
    menu.focus()

"""The story so far: one block per turn, the last one streaming. Text is shown literally."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from storyloom.store.stories import Turn


def turn_renderable(turn: Turn, live: str = "") -> Text:
    text = Text()
    output = turn.output or live
    if turn.kind in ("do", "say"):
        text.append(turn.action, style="bold cyan")
        text.append("\n")
    elif turn.action:
        text.append(turn.action, style="italic" if turn.kind == "story" else "")
        text.append(" " if output else "")
    text.append(output)
    return text


class Transcript(VerticalScroll):
    DEFAULT_CSS = """
    Transcript { height: 1fr; padding: 0 1; }
    Transcript > Static { margin-bottom: 1; }
    Transcript > .live { color: $text; }
    """

    # A resize re-wraps the text (80 columns: many more lines) but keeps the scroll offset, so the
    # newest turn fell below the edge. Follow the end when the reader was at it. (Textual's
    # anchor() would do it but bottom-aligns a short transcript, with a negative offset.)
    following = True

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.following = new >= self.max_scroll_y

    def on_resize(self) -> None:
        if self.following:
            self.scroll_end(animate=False)

    def show(self, turns: list[Turn]) -> None:
        """Make the blocks match `turns`, touching only what changed (games grow long)."""
        self.query(".live").remove()
        blocks = list(self.query(".turn").results(Static))
        for block, turn in zip(blocks, turns):
            key = (turn.kind, turn.action, turn.output)
            if getattr(block, "turn_key", None) != key:
                block.turn_key = key
                block.update(turn_renderable(turn))
        for block in blocks[len(turns):]:
            block.remove()
        new = []
        for turn in turns[len(blocks):]:
            block = Static(turn_renderable(turn), classes="turn")
            block.turn_key = (turn.kind, turn.action, turn.output)
            new.append(block)
        if new:
            self.mount_all(new)
        self.scroll_end(animate=False)

    def start_live(self, turn: Turn) -> None:
        """A turn whose output is being generated: replace it if it is already shown."""
        self._live_turn = turn
        self._live_text = ""
        self.query(".live").remove()
        self.mount(Static(turn_renderable(turn, "…"), classes="live"))
        self.scroll_end(animate=False)

    def append_live(self, piece: str) -> None:
        self._live_text += piece
        self.query_one(".live", Static).update(turn_renderable(self._live_turn, self._live_text))
        self.scroll_end(animate=False)

    def reset_live(self, note: str) -> None:
        self._live_text = ""
        self.query_one(".live", Static).update(turn_renderable(self._live_turn, note))

    @property
    def live_text(self) -> str:
        return getattr(self, "_live_text", "")

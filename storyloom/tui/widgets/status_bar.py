"""One line at the bottom: model state, context tokens used of the budget, last tokens/s."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def on_mount(self) -> None:
        for name in ("model_status", "context_usage", "speed"):
            self.watch(self.app, name, self._refresh_text, init=False)
        self._refresh_text()

    def _refresh_text(self, _value: object = None) -> None:
        app = self.app
        parts = [f"Model: {app.model_status}"]
        if app.context_usage:
            parts.append(f"Context: {app.context_usage} tokens")
        if app.speed:
            parts.append(f"{app.speed} tok/s")
        self.update(Text("  │  ".join(parts)))

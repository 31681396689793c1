"""One line at the bottom: model state, what this screen is doing, context used, last tokens/s."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def on_mount(self) -> None:
        for name in ("model_status", "context_usage", "speed", "activity"):
            self.watch(self.app, name, self._refresh_text, init=False)
        self._refresh_text()

    def _refresh_text(self, _value: object = None) -> None:
        app = self.app
        parts = [f"Model: {app.model_status}"]
        # Context, speed and activity belong to the screen that set them: another mode's are not shown.
        if getattr(app, "usage_screen", None) is self.screen:
            if app.activity:
                parts.append(app.activity)
            if app.context_usage:
                parts.append(f"Context: {app.context_usage} tokens")
            if app.speed and not app.activity:
                parts.append(f"{app.speed} tok/s")
        self.update(Text("  │  ".join(parts)))

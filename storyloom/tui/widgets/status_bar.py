"""One line at the bottom: model state, what this screen is doing, context used, last tokens/s.

At 80 columns all of it did not fit ("Context:" and the tok/s were cut while writing): the line
drops words, then the model's name, until it fits; what the screen is doing (and "Esc stops")
is never dropped."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def status_line(model: str, activity: str = "", context: str = "", speed: str = "", width: int = 0) -> str:
    """The fullest line that fits `width` (0: any)."""
    ready = model.endswith(" ready")
    variants = []
    for sep, model_part, context_part in (
            ("  │  ", f"Model: {model}", f"Context: {context} tokens"),
            (" │ ", model.removesuffix(" ready") if ready else model, f"Context: {context}"),
            (" │ ", "" if ready and (activity or context) else model, f"Context: {context}")):
        parts = [model_part, activity, context_part if context else "", f"{speed} tok/s" if speed and not activity else ""]
        variants.append(sep.join(p for p in parts if p))
    return next((v for v in variants if not width or len(v) <= width), variants[-1])


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def on_mount(self) -> None:
        for name in ("model_status", "context_usage", "speed", "activity"):
            self.watch(self.app, name, self._refresh_text, init=False)
        self._refresh_text()

    def on_resize(self) -> None:
        self._refresh_text()

    def _refresh_text(self, _value: object = None) -> None:
        app = self.app
        # Context, speed and activity belong to the screen that set them: another mode's are not shown.
        mine = getattr(app, "usage_screen", None) is self.screen
        self.update(Text(status_line(app.model_status, app.activity if mine else "", app.context_usage if mine else "",
                                     app.speed if mine else "", self.content_region.width)))

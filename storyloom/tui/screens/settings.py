"""Model and sampler settings: validated, saved to config.toml, applied without restart."""
from __future__ import annotations

from dataclasses import fields

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings
from storyloom.tui.widgets.status_bar import StatusBar

LABELS = {
    "temperature": "Temperature (0 = always the likeliest word)",
    "top_p": "Top-p (nucleus)", "top_k": "Top-k (0 = off)", "typical_p": "Typical-p (1 = off)",
    "repetition_penalty": "Repetition penalty (1 = off)",
    "repetition_range": "Repetition range (tokens looked back, 0 = all)",
    "max_new_tokens": "Output length (tokens)", "seed": "Seed (empty = random)",
}


class SettingsScreen(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Back"), ("ctrl+s", "save", "Save")]

    def compose(self) -> ComposeResult:
        config = self.app.config
        yield Header()
        with VerticalScroll(id="settings"):
            yield Label("Model: default, a model folder, a .gguf file, a Hugging Face id, or a server as "
                        "openai:http://127.0.0.1:8080/v1 (its API key from STORYLOOM_API_KEY)")
            yield Input(config.model, id="model")
            yield Static(self._in_use(), id="model-in-use")
            for f in fields(SamplerSettings):
                if f.name == "stop":
                    continue
                value = getattr(config.sampler, f.name)
                yield Label(LABELS[f.name])
                yield Input("" if value is None else str(value), id=f.name)
            yield Label("", id="settings-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Back", id="back")
        yield StatusBar()
        yield Footer()

    def _in_use(self) -> Text:
        """Which model answered (for a server: which server, and what it can do)."""
        generator = self.app.generator
        if generator is None:
            return Text(f"In use: none yet ({self.app.model_status})", style="dim")
        info = generator.info
        text = Text(f"In use: {info.name} ({info.backend})", style="dim")
        for key in ("server", "abilities", "no scoring", "token counts", "context"):
            if info.extra.get(key):
                text.append(f"\n  {key}: {info.extra[key]}", style="dim")
        return text

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.app.pop_screen()

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        error = self.query_one("#settings-error", Label)
        values = {}
        try:
            for f in fields(SamplerSettings):
                if f.name == "stop":
                    continue
                raw = self.query_one(f"#{f.name}", Input).value.strip()
                values[f.name] = _number(f.name, raw)
            sampler = SamplerSettings(**values, stop=self.app.config.sampler.stop)
            model = self.query_one("#model", Input).value.strip() or "default"
            if model != self.app.config.model:
                from storyloom.engine.models import parse_spec

                parse_spec(model)
        except StoryloomError as exc:
            error.update(Text(str(exc), style="bold red"))
            return
        error.update("")
        self.app.apply_config(self.app.config.with_(model=model, sampler=sampler))
        self.notify("Settings saved.")
        self.app.pop_screen()


def _number(name: str, raw: str):
    from storyloom.engine.sampling import SettingsError

    if raw == "" and name == "seed":
        return None
    try:
        return int(raw) if name in ("top_k", "repetition_range", "max_new_tokens", "seed") else float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number (got {raw!r})") from None

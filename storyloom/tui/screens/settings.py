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
        for key in ("server", "abilities", "samplers", "no scoring", "token counts", "context"):
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
        """Check every field; all problems are shown at once, by the names on screen."""
        error = self.query_one("#settings-error", Label)
        values, problems = {}, []
        for f in fields(SamplerSettings):
            if f.name == "stop":
                continue
            box = self.query_one(f"#{f.name}", Input)
            try:
                values[f.name] = _number(f.name, box.value.strip())
                SamplerSettings(**{f.name: values[f.name]})  # this field alone, the others as default
            except StoryloomError as exc:
                problems.append(_by_label(f.name, str(exc)))
                box.set_class(True, "-invalid")
            else:
                box.set_class(False, "-invalid")
        model = self.query_one("#model", Input).value.strip() or "default"
        if model != self.app.config.model:
            from storyloom.engine.models import parse_spec

            try:
                parse_spec(model)
            except StoryloomError as exc:
                problems.append(f"Model: {exc}")
        if not problems:
            try:
                sampler = SamplerSettings(**values, stop=self.app.config.sampler.stop)
            except StoryloomError as exc:  # settings that only fail together
                problems.append(str(exc))
        if problems:
            error.update(Text("\n".join(problems), style="bold red"))
            return
        error.update("")
        self.app.apply_config(self.app.config.with_(model=model, sampler=sampler))
        self.notify("Settings saved.")
        self.app.pop_screen()


SHORT = {"temperature": "Temperature", "top_p": "Top-p", "top_k": "Top-k", "typical_p": "Typical-p",
         "repetition_penalty": "Repetition penalty", "repetition_range": "Repetition range",
         "max_new_tokens": "Output length", "seed": "Seed"}
WHOLE = ("top_k", "repetition_range", "max_new_tokens", "seed")


def _by_label(name: str, message: str) -> str:
    """'max_new_tokens must be ...' -> 'Output length must be ...' (the name the player sees)."""
    return SHORT[name] + message.removeprefix(name) if message.startswith(name) else f"{SHORT[name]}: {message}"


def _number(name: str, raw: str):
    from storyloom.engine.sampling import SettingsError

    if raw == "" and name == "seed":
        return None
    try:
        return int(raw) if name in WHOLE else float(raw)
    except ValueError:
        kind = "a whole number" if name in WHOLE else "a number"
        raise SettingsError(f"{name} must be {kind} (got {raw!r})") from None

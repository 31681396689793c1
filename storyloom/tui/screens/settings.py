"""Model and sampler settings: validated, saved to config.toml, applied without restart.
Named presets (built in and the player's own) fill the sampler fields; a remote server's gaps
(samplers it will not apply) are said under the fields."""
from __future__ import annotations

import json
from dataclasses import fields

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static

from storyloom import StoryloomError
from storyloom.engine import presets
from storyloom.engine.sampling import SamplerSettings, SettingsError
from storyloom.tui.widgets.status_bar import StatusBar

LABELS = {
    "temperature": "Temperature (0 = always the likeliest word)",
    "top_p": "Top-p (nucleus)", "top_k": "Top-k (0 = off)", "typical_p": "Typical-p (1 = off)",
    "repetition_penalty": "Repetition penalty (1 = off)",
    "repetition_range": "Repetition range (tokens looked back, 0 = all)",
    "max_new_tokens": "Output length (tokens)", "seed": "Seed (empty = random)",
    "min_p": "Min-p (0 = off; drops tokens below this share of the likeliest)",
    "dry_multiplier": "DRY multiplier (0 = off; penalises repeating earlier sequences)",
    "dry_base": "DRY base (how fast the penalty grows with the repeat's length)",
    "dry_allowed_length": "DRY allowed length (repeats this long go unpunished)",
    "dry_range": "DRY range (tokens looked back, 0 = all)",
    "dry_sequence_breakers": 'DRY sequence breakers (a JSON list, e.g. ["\\n", ":", "\\"", "*"])',
    "xtc_threshold": "XTC threshold (tokens at least this likely are top choices)",
    "xtc_probability": "XTC probability (0 = off; how often the top choices are removed)",
    "banned": "Banned words and phrases (comma-separated, or a JSON list; any case, whole words)",
}
TEXT_FIELDS = ("dry_sequence_breakers", "banned")
EDITED = [f.name for f in fields(SamplerSettings)
          if f.name not in ("stop", "phrase_bias", "min_new_tokens")]  # all set per turn


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
            yield Label("Preset (fills the sampler fields; Save keeps them)")
            with Horizontal(classes="buttons"):
                yield Select(self._preset_options(), prompt="Choose a preset", id="preset", allow_blank=True)
            for name in EDITED:
                yield Label(Text(LABELS[name]))
                yield Input(_shown(name, getattr(config.sampler, name)), id=name)
            yield Static(self._ignored(config.sampler), id="sampler-ignored")
            yield Checkbox("Word filter: keep profanity out of what the model writes", config.word_filter,
                           id="word-filter")
            with Horizontal(classes="buttons"):
                yield Input(placeholder="a name for these fields", id="preset-name")
                yield Button("Save as preset", id="save-preset")
                yield Button("Delete preset", id="delete-preset")
            yield Label("", id="settings-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Back", id="back")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#model", Input).focus()  # else the scroll box had it and typing did nothing

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

    def _preset_options(self) -> list[tuple[str, str]]:
        return [(p.name + ("" if p.builtin else " (yours)"), p.name) for p in presets.all_presets(self.app.config.presets)]

    def _ignored(self, sampler: SamplerSettings) -> Text:
        generator = self.app.generator
        gaps = generator.ignored_samplers(sampler) if generator is not None else []
        if not gaps:
            return Text("")
        return Text(f"{generator.name} will not apply: {', '.join(gaps)}.", style="yellow")

    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        if not isinstance(event.value, str):  # cleared (the options were just refreshed)
            return
        preset = presets.find(str(event.value), self.app.config.presets)
        filled = presets.apply(self.app.config.sampler, preset.values)
        for name in presets.FIELDS:
            self.query_one(f"#{name}", Input).value = _shown(name, getattr(filled, name))
        self.query_one("#preset-name", Input).value = "" if preset.builtin else preset.name
        self.query_one("#settings-error", Label).update(
            Text(f"{preset.name}: {preset.description} (Save to use it)" if preset.description
                 else f"{preset.name} filled in (Save to use it)", style="dim"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        elif event.button.id == "save-preset":
            self.save_preset()
        elif event.button.id == "delete-preset":
            self.delete_preset()
        else:
            self.app.pop_screen()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "preset-name":
            self.save_preset()
        else:
            self.action_save()

    def _read(self) -> tuple[dict, list[str]]:
        """Every sampler field as typed: the values, and each problem by the name on screen."""
        values, problems = {}, []
        for name in EDITED:
            box = self.query_one(f"#{name}", Input)
            try:
                values[name] = _parse(name, box.value.strip())
                SamplerSettings(**{name: values[name]})  # this field alone, the others as default
            except StoryloomError as exc:
                problems.append(_by_label(name, str(exc)))
                box.set_class(True, "-invalid")
            else:
                box.set_class(False, "-invalid")
        if not problems:
            try:
                SamplerSettings(**values, stop=self.app.config.sampler.stop)
            except StoryloomError as exc:  # settings that only fail together
                problems.append(str(exc))
        return values, problems

    def save_preset(self) -> None:
        error = self.query_one("#settings-error", Label)
        values, problems = self._read()
        try:
            name = presets.check_name(self.query_one("#preset-name", Input).value, self.app.config.presets)
        except SettingsError as exc:
            problems.append(str(exc))
        if problems:  # at 80x24 the list under the fields is off screen: scrolled to, and a toast
            error.update(Text("\n".join(problems), style="bold red"))
            error.scroll_visible(animate=False)
            more = f" (and {len(problems) - 1} more, listed above Save)" if len(problems) > 1 else ""
            self.notify(f"Not saved. {problems[0]}{more}", severity="error", timeout=8, markup=False)
            return
        saved = dict(self.app.config.presets)
        saved[name] = presets.capture(SamplerSettings(**values))
        self.app.apply_config(self.app.config.with_(presets=saved))
        self.query_one("#preset", Select).set_options(self._preset_options())
        error.update(Text(f"Preset {name!r} saved.", style="green"))

    def delete_preset(self) -> None:
        error = self.query_one("#settings-error", Label)
        name = " ".join(self.query_one("#preset-name", Input).value.split())
        match = next((n for n in self.app.config.presets if n.lower() == name.lower()), None)
        if match is None:
            shown = "Type the name of one of your presets to delete it." if not name else \
                f"{name!r} is not one of your presets (built-in ones stay)."
            error.update(Text(shown, style="bold red"))
            return
        saved = {n: v for n, v in self.app.config.presets.items() if n != match}
        self.app.apply_config(self.app.config.with_(presets=saved))
        self.query_one("#preset", Select).set_options(self._preset_options())
        error.update(Text(f"Preset {match!r} deleted.", style="green"))

    def action_save(self) -> None:
        """Check every field; all problems are shown at once, by the names on screen."""
        error = self.query_one("#settings-error", Label)
        values, problems = self._read()
        model = self.query_one("#model", Input).value.strip() or "default"
        if model != self.app.config.model:
            from storyloom.engine.models import parse_spec

            try:
                parse_spec(model)
            except StoryloomError as exc:
                problems.append(f"Model: {exc}")
        if problems:  # at 80x24 the list under the fields is off screen: scrolled to, and a toast
            error.update(Text("\n".join(problems), style="bold red"))
            error.scroll_visible(animate=False)
            more = f" (and {len(problems) - 1} more, listed above Save)" if len(problems) > 1 else ""
            self.notify(f"Not saved. {problems[0]}{more}", severity="error", timeout=8, markup=False)
            return
        sampler = SamplerSettings(**values, stop=self.app.config.sampler.stop)
        error.update("")
        gaps = self._ignored(sampler).plain
        self.app.apply_config(self.app.config.with_(model=model, sampler=sampler,
                                                    word_filter=self.query_one("#word-filter", Checkbox).value))
        self.notify("Settings saved." + (f" {gaps}" if gaps and model == self.app.config.model else ""),
                    markup=False)
        self.app.pop_screen()


SHORT = {"temperature": "Temperature", "top_p": "Top-p", "top_k": "Top-k", "typical_p": "Typical-p",
         "repetition_penalty": "Repetition penalty", "repetition_range": "Repetition range",
         "max_new_tokens": "Output length", "seed": "Seed", "min_p": "Min-p", "dry_multiplier": "DRY multiplier",
         "dry_base": "DRY base", "dry_allowed_length": "DRY allowed length", "dry_range": "DRY range",
         "dry_sequence_breakers": "DRY sequence breakers", "xtc_threshold": "XTC threshold",
         "xtc_probability": "XTC probability", "banned": "Banned phrases"}
WHOLE = ("top_k", "repetition_range", "max_new_tokens", "seed", "dry_allowed_length", "dry_range")


def _shown(name: str, value) -> str:
    """A setting as it is typed: lists as JSON (breakers hold newlines and quotes), banned
    phrases comma-separated while none has a comma."""
    if value is None:
        return ""
    if name == "banned" and not any("," in v or '"' in v for v in value):
        return ", ".join(value)
    if name in TEXT_FIELDS:
        return json.dumps(list(value), ensure_ascii=False) if value else ""
    return str(value)


def _parse(name: str, raw: str):
    if name not in TEXT_FIELDS:
        return _number(name, raw)
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{name} is not a valid JSON list ({exc.msg} at character {exc.pos + 1})") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{name} must be a JSON list of strings, like [\"\\n\", \":\"]")
        return tuple(value)
    if name == "dry_sequence_breakers" and raw:
        raise SettingsError(f'{name} must be a JSON list, like ["\\n", ":", "\\"", "*"] (got {raw!r})')
    return tuple(p.strip() for p in raw.split(",") if p.strip())


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

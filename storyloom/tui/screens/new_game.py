"""Pick a setting and character (or write your own opening) to start an adventure."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from storyloom import StoryloomError
from storyloom.modes import adventure as adv
from storyloom.tui.saving import try_saving
from storyloom.tui.widgets.status_bar import StatusBar

CUSTOM = "custom"


class NewGameScreen(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        self.settings = adv.load_scenarios()
        yield Header()
        with Horizontal(id="new-game"):
            with Vertical(id="scenario-pane"):
                yield Label("Scenario")
                options = [Option(Text(f"{s.name}: {c.name}"), id=f"{s.key}/{c.key}")
                           for s in self.settings for c in s.characters]
                yield OptionList(*options, Option("Custom: write your own opening", id=CUSTOM), id="scenarios")
            with Vertical(id="scenario-detail"):
                yield Label("Your name (optional)")
                yield Input(placeholder="e.g. Ada", id="player-name")
                yield Static("", id="scenario-preview")  # a Static wraps to the pane; a Label does not
                yield Label("Opening (custom adventures)", classes="custom")
                yield TextArea(id="custom-prompt", classes="custom")
                yield Label("Context: who you are, always kept in mind (optional)", classes="custom")
                yield Input(id="custom-context", classes="custom")
                yield Button("Start", id="start", variant="primary")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#scenarios", OptionList).focus()
        self._show_custom(False)

    def _choice(self) -> str | None:
        menu = self.query_one("#scenarios", OptionList)
        return None if menu.highlighted is None else menu.get_option_at_index(menu.highlighted).id

    def _show_custom(self, show: bool) -> None:
        for widget in self.query(".custom"):
            widget.display = show

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        choice = event.option.id
        self._show_custom(choice == CUSTOM)
        preview = self.query_one("#scenario-preview", Static)
        if choice == CUSTOM:
            preview.update("")
            return
        setting, character = self._find(choice)
        preview.update(Text(f"{setting.description}\n\n{character.prompt}"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == CUSTOM:
            self.query_one("#custom-prompt", TextArea).focus()
        else:
            self.query_one("#player-name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.start()

    def _find(self, choice: str):
        s_key, c_key = choice.split("/")
        setting = next(s for s in self.settings if s.key == s_key)
        return setting, next(c for c in setting.characters if c.key == c_key)

    def start(self) -> None:
        choice = self._choice()
        try:
            if choice == CUSTOM:
                game = adv.custom_game(self.query_one("#custom-prompt", TextArea).text,
                                       self.query_one("#custom-context", Input).value,
                                       player_name=self.query_one("#player-name", Input).value)
            elif choice:
                game = adv.new_game(*self._find(choice), self.query_one("#player-name", Input).value)
            else:
                return
        except StoryloomError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        if not try_saving(self, lambda: self.app.games.create(game)):  # the form keeps what was typed
            return
        self.app.pop_screen()
        self.app.open_game(game.id)

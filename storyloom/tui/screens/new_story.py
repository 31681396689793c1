"""Start a co-written story: title, premise or style note, an opening, turn length, candidates."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, TextArea

from storyloom import StoryloomError
from storyloom.modes import cowrite
from storyloom.store.cowrite import LENGTHS
from storyloom.tui.saving import try_saving
from storyloom.tui.widgets.status_bar import StatusBar


class NewStoryScreen(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Back"), ("ctrl+s", "start", "Start")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="new-story"):
            yield Label("Title")
            yield Input(placeholder="e.g. The Lighthouse Keeper", id="story-title")
            yield Label("Premise or style note (optional; always kept at the top of the prompt)")
            yield TextArea(id="story-premise")
            yield Label("Opening (optional; leave empty and give a premise to let the model begin)")
            yield TextArea(id="story-opening")
            with Horizontal(id="story-options"):
                yield Label("Turn length")
                yield Select([(x, x) for x in LENGTHS], value="paragraph", allow_blank=False, id="story-length")
                yield Label("Candidates")
                yield Select([(str(n), n) for n in range(1, cowrite.MAX_CANDIDATES + 1)],
                             value=cowrite.DEFAULT_CANDIDATES, allow_blank=False, id="story-candidates")
            yield Button("Start writing", id="start", variant="primary")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#story-title", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#story-premise", TextArea).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_start()

    def action_start(self) -> None:
        try:
            story = cowrite.new_story(
                self.query_one("#story-title", Input).value,
                premise=self.query_one("#story-premise", TextArea).text,
                opening=self.query_one("#story-opening", TextArea).text,
                length=self.query_one("#story-length", Select).value,
                candidates_n=self.query_one("#story-candidates", Select).value,
            )
        except StoryloomError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        if not try_saving(self, lambda: self.app.cowrites.create(story)):  # the form keeps what was typed
            return
        self.app.pop_screen()
        self.app.open_cowrite(story.id)

"""The context viewer: the exact prompt of the next turn, coloured by part, each part's token
count and the budget; and the running summary's controls (edit, pin, off).

The prompt is built in a worker thread (a remote model may count tokens over the network), by
the same call the next turn makes, with what the player has typed so far as the action.
Everything shown that a model or a player wrote is rich Text: never read as markup.
"""
from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from storyloom import StoryloomError
from storyloom.modes import summary as sm
from storyloom.modes.adventure import Adventure, BuiltPrompt, summary_budget
from storyloom.tui.screens.editors import AlterScreen

PART_STYLE = {"primer": "dim", "context": "bold cyan", "memory": "green", "summary": "magenta",
              "world_info": "yellow", "authors_note": "red", "history": "", "action": "bold"}
PART_LABEL = {"primer": "primer (example story)", "context": "context", "memory": "memory", "summary": "summary",
              "world_info": "world info", "authors_note": "author's note", "history": "history", "action": "action"}


def legend(built: BuiltPrompt, mode: str) -> Text:
    """One line per part present (in prompt order, tokens summed), then the totals."""
    out = Text()
    tokens = built.part_tokens()
    for name in dict.fromkeys(p.name for p in built.parts):
        out.append("■ ", style=PART_STYLE[name] or "default")
        out.append(f"{PART_LABEL[name]}: {tokens[name]:,} tokens")
        if name == "summary":
            out.append(f" (at most {summary_budget(built.budget):,})")
        if name == "history":
            out.append(f" ({built.turns_included} turns)")
        out.append("\n")
    out.append(f"Prompt: {built.tokens:,} of {built.budget:,} tokens (the budget). ", style="bold")
    out.append(f"Summary: {sm.MODE_LABEL[mode]}. e edits it, p pins it, o turns it off or on.")
    return out


def coloured(built: BuiltPrompt) -> Text:
    text = Text()
    for part in built.parts:
        text.append(part.text, style=PART_STYLE[part.name])
    return text


class ContextViewScreen(Screen[None]):
    DEFAULT_CSS = """
    ContextViewScreen #context-legend { height: auto; padding: 0 1; border-bottom: solid $panel; }
    ContextViewScreen #context-scroll { height: 1fr; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape,q,f2", "app.pop_screen", "Back"),
        Binding("e", "edit_summary", "Edit summary"),
        Binding("p", "pin", "Pin"),
        Binding("o", "toggle_off", "Off/on"),
    ]

    def __init__(self, play: Adventure, action: str = "") -> None:
        super().__init__()
        self.play = play
        self.action = action  # the next action as it goes into the story ("" continues it)
        self.built: BuiltPrompt | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text("Building the prompt…"), id="context-legend")
        with VerticalScroll(id="context-scroll"):
            yield Static(Text(""), id="context-prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "The prompt of the next turn"
        self.refresh_prompt()

    def refresh_prompt(self) -> None:
        self._build(self.action)

    @work(thread=True, exclusive=True, group="context", exit_on_error=False)
    def _build(self, action: str) -> None:
        app = self.app
        try:
            generator = app.loaded_generator()
            built = self.play.prompt_for(action, generator, app.config.sampler)
        except Exception as exc:  # noqa: BLE001 - said on the screen; nothing is changed
            message = str(exc) if isinstance(exc, StoryloomError) else f"{type(exc).__name__}: {exc}"
            app.call_from_thread(self._failed, message)
            return
        app.call_from_thread(self._show, built)

    def _show(self, built: BuiltPrompt) -> None:
        self.built = built
        self.query_one("#context-legend", Static).update(legend(built, self.play.game.summary_mode))
        self.query_one("#context-prompt", Static).update(coloured(built))

    def _failed(self, message: str) -> None:
        self.query_one("#context-legend", Static).update(Text(f"The prompt could not be built: {message}"))

    # -- the summary's controls -----------------------------------------------------------
    def _changed(self, note: str) -> None:
        try:
            self.play.save_meta()
        except StoryloomError as exc:
            self.notify(str(exc), title="Not saved", severity="error", markup=False)
            return
        self.notify(note, markup=False)
        self.refresh_prompt()

    def action_edit_summary(self) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                sm.edit(self.play.game, text)
                self._changed("Summary saved.")

        self.app.push_screen(AlterScreen(self.play.game.summary, title="The summary (one line per paragraph)"), done)

    def action_pin(self) -> None:
        mode = "auto" if self.play.game.summary_mode == "pinned" else "pinned"
        sm.set_mode(self.play.game, mode)
        self._changed(f"Summary {sm.MODE_LABEL[mode]}.")

    def action_toggle_off(self) -> None:
        mode = "auto" if self.play.game.summary_mode == "off" else "off"
        sm.set_mode(self.play.game, mode)
        self._changed(f"Summary {sm.MODE_LABEL[mode]}.")

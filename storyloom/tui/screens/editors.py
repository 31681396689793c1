"""Modal editors: alter the last output; memory, author's note and world info."""
from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, TextArea

from storyloom.store.stories import Game, WorldEntry


class EditorDialog(ModalScreen):
    """Save / Cancel buttons and keys; subclasses say what saving returns."""

    BINDINGS = [("escape", "cancel", "Cancel"), ("ctrl+s", "save", "Save")]
    CANCELLED: object = None
    SAVE_LABEL = "Save"  # what the primary button does, in a word

    def buttons(self) -> Horizontal:
        return Horizontal(Button(self.SAVE_LABEL, id="save", variant="primary"), Button("Cancel", id="cancel"),
                          classes="buttons")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        # Textual runs this handler of every class in the MRO: each acts on its own buttons only
        # (calling it from a subclass as well closed the dialog twice, and the game behind it)
        if event.button.id == "save":
            self.action_save()
        elif event.button.id == "cancel":
            self.action_cancel()

    def action_save(self) -> None:
        raise NotImplementedError

    def action_cancel(self) -> None:
        self.dismiss(self.CANCELLED)


class AlterScreen(EditorDialog):
    """Edit one passage; dismisses with the new text, or None when cancelled."""

    def __init__(self, text: str, title: str = "Alter the last output") -> None:
        super().__init__()
        self.text = text
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"{self.title_text} (Ctrl+S saves, Esc cancels)")
            yield TextArea(self.text, id="alter-text")
            yield self.buttons()

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)


def parse_world_info(text: str, previous: list[WorldEntry] = ()) -> list[WorldEntry]:
    """One entry per line: 'key1, key2: what the model should know'. A line whose keys match an
    entry in `previous` keeps that entry's flags (set in the world-info editor)."""
    earlier = {tuple(e.keys): e for e in previous}
    entries = []
    for line in text.splitlines():
        if ":" not in line:
            continue
        keys, _, lore = line.partition(":")
        keys_list = [k.strip() for k in keys.split(",") if k.strip()]
        if keys_list and lore.strip():
            old = earlier.pop(tuple(keys_list), None)
            entries.append(replace(old, text=lore.strip()) if old else WorldEntry(keys_list, lore.strip()))
    return entries


def format_world_info(entries: list[WorldEntry]) -> str:
    return "\n".join(f"{', '.join(e.keys)}: {e.text}" for e in entries)


class MemoryScreen(EditorDialog):
    CANCELLED = False

    def __init__(self, game: Game, draft: dict | None = None) -> None:
        """`draft`: what the player typed last time (memory, authors_note, world_info) when the
        database refused it, shown in place of what is saved so nothing typed is lost."""
        super().__init__()
        self.game = game
        self.draft = draft or {}

    def compose(self) -> ComposeResult:
        draft = self.draft
        with Vertical(classes="dialog", id="memory-dialog"):
            yield Label("Memory: always at the top of the prompt")
            yield TextArea(draft.get("memory", self.game.memory), id="memory")
            yield Label("Author's note: style or direction, put a few turns back")
            yield TextArea(draft.get("authors_note", self.game.authors_note), id="authors-note")
            yield Label("World info: one per line, 'keys, more keys: lore' (added when a key is mentioned)")
            yield TextArea(format_world_info(draft.get("world_info", self.game.world_info)), id="world-info")
            yield Horizontal(Button("Save", id="save", variant="primary"), Button("Cancel", id="cancel"),
                             Button("Lorebooks… (Ctrl+L)", id="lore"), classes="buttons")

    BINDINGS = [*EditorDialog.BINDINGS, ("ctrl+l", "lore", "Lorebooks")]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "lore":  # Save and Cancel: EditorDialog's handler, which Textual runs too
            self.action_lore()

    def action_lore(self) -> None:
        """The full editor: keys, flags and order of each entry, and the game's lorebooks."""
        from storyloom.store.lorebooks import LoreStore
        from storyloom.tui.screens.lore import LoreScreen

        area = self.query_one("#world-info", TextArea)
        self.game.world_info = parse_world_info(area.text, self.game.world_info)  # what was typed here counts

        def done(_changed: bool | None) -> None:
            area.text = format_world_info(self.game.world_info)

        self.app.push_screen(LoreScreen(self.game, LoreStore(self.app.games.db), self.app.games), done)

    def action_save(self) -> None:
        self.game.memory = self.query_one("#memory", TextArea).text.strip()
        self.game.authors_note = self.query_one("#authors-note", TextArea).text.strip()
        self.game.world_info = parse_world_info(self.query_one("#world-info", TextArea).text, self.game.world_info)
        self.dismiss(True)


class ConfirmDialog(ModalScreen[bool]):
    """Ask before something that cannot be undone; the safe answer has the focus."""

    BINDINGS = [("escape,n", "answer(False)", "Keep it"), ("y", "answer(True)", "Yes")]

    def __init__(self, question: str, yes: str = "Delete") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question))
            yield Horizontal(Button(f"{self.yes} (y)", id="yes", variant="error"),
                             Button("Keep it (n, Esc)", id="no"), classes="buttons")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

"""The world-info editor: this game's own entries and its lorebooks (attach, detach, import,
create), and one entry's keys, flags and text. Every change is saved as it is made."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, OptionList, Select, Static, TextArea
from textual.widgets.option_list import Option

from storyloom import StoryloomError
from storyloom.modes.worldinfo import format_keys, split_keys
from storyloom.store import lore_formats
from storyloom.store.lorebooks import Lorebook, LoreStore, check_entry
from storyloom.store.stories import Game, GameStore, WorldEntry

GAME = "game"  # the id of the game's own world info in the books list
LOGIC_CHOICES = [("AND ANY: a primary key and any secondary", "and_any"),
                 ("AND ALL: a primary key and every secondary", "and_all"),
                 ("NOT ANY: a primary key and no secondary", "not_any"),
                 ("NOT ALL: a primary key, not every secondary", "not_all")]
FLAGS = [("whole_word", "Whole words"), ("case_sensitive", "Case-sensitive"), ("constant", "Constant (always)"),
         ("enabled", "Enabled"), ("exclude_recursion", "Not triggered by other entries"),
         ("prevent_recursion", "Triggers no other entry")]


def entry_line(entry: WorldEntry) -> Text:
    flags = [name for name, on_ in (("constant", entry.constant), ("off", not entry.enabled),
                                    ("exact case", entry.case_sensitive), ("no recursion", entry.prevent_recursion))
             if on_]
    keys = format_keys(entry.keys) or "(no keys)"
    if entry.bias is not None:
        flags.append(f"bias {entry.bias:g}" if entry.bias else "no bias")
    line = f"{entry.label()}  [{keys[:40]}]  order {entry.order}" + (f"  ({', '.join(flags)})" if flags else "")
    return Text(line)  # the player's and other people's text: never markup


class EntryScreen(ModalScreen[WorldEntry | None]):
    """Edit one entry; dismisses with the new entry, or None when cancelled."""

    BINDINGS = [("escape", "cancel", "Cancel"), ("ctrl+s", "save", "Save")]
    DEFAULT_CSS = """
    EntryScreen { align: center middle; }
    EntryScreen #entry-text { height: 6; }
    EntryScreen Checkbox { width: auto; }
    EntryScreen .row { height: auto; }
    EntryScreen #entry-order, EntryScreen #entry-depth, EntryScreen #entry-bias { width: 16; }
    """

    def __init__(self, entry: WorldEntry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        e = self.entry
        with VerticalScroll(classes="dialog"):
            yield Label("World-info entry (Ctrl+S saves, Esc cancels)")
            yield Input(e.comment, placeholder="Title (for you; never sent to the model)", id="entry-title")
            yield Label("Keys, comma-separated (/pattern/i for a regular expression)")
            yield Input(format_keys(e.keys), id="entry-keys")
            yield Label("Secondary keys (optional) and how they combine")
            yield Input(format_keys(e.secondary), id="entry-secondary")
            yield Select(LOGIC_CHOICES, value=e.logic, allow_blank=False, id="entry-logic")
            for pair in (FLAGS[0:2], FLAGS[2:4], FLAGS[4:5], FLAGS[5:6]):  # the long two: one a row (80 columns)
                with Horizontal(classes="row"):
                    for name, label in pair:
                        yield Checkbox(label, getattr(e, name), id=f"flag-{name}")
            # one field a row: at 80 columns two of them and their labels ran past the dialog's edge
            with Horizontal(classes="row"):
                yield Label("Order (higher: kept first, placed later)")
                yield Input(str(e.order), id="entry-order")
            with Horizontal(classes="row"):
                yield Label("Scan depth (turns; blank: the game's)")
                yield Input("" if e.scan_depth is None else str(e.scan_depth), id="entry-depth")
            yield Label("Bias: how hard the model is pushed to write the entry's names while it fires "
                        "(blank: the default; 0: off)")
            yield Input("" if e.bias is None else f"{e.bias:g}", id="entry-bias")
            yield Label("Text: what the model reads when the entry fires")
            yield TextArea(e.text, id="entry-text")
            yield Static("", id="entry-error")
            yield Horizontal(Button("Save", id="save", variant="primary"), Button("Cancel", id="cancel"),
                             classes="buttons")

    def on_mount(self) -> None:
        self.query_one("#entry-keys", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "save" else self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        value = lambda wid: self.query_one(wid, Input).value.strip()  # noqa: E731
        try:
            order = int(value("#entry-order") or "100")
            depth = int(value("#entry-depth")) if value("#entry-depth") else None
        except ValueError:
            self._error("Order and scan depth must be whole numbers.")
            return
        try:
            bias = float(value("#entry-bias")) if value("#entry-bias") else None
        except ValueError:
            self._error("Bias must be a number (blank for the default, 0 for none).")
            return
        entry = WorldEntry(
            keys=split_keys(value("#entry-keys")), text=self.query_one("#entry-text", TextArea).text.strip(),
            secondary=split_keys(value("#entry-secondary")), logic=self.query_one("#entry-logic", Select).value,
            order=order, scan_depth=depth, comment=value("#entry-title"), bias=bias,
            **{name: self.query_one(f"#flag-{name}", Checkbox).value for name, _ in FLAGS},
        )
        if not entry.text:
            self._error("Write the entry's text: it is what the model reads.")
            return
        if not entry.keys and not entry.constant:
            self._error("Give at least one key, or make the entry constant.")
            return
        try:
            check_entry(entry)
        except StoryloomError as exc:
            self._error(str(exc))
            return
        self.dismiss(entry)

    def _error(self, text: str) -> None:
        self.query_one("#entry-error", Static).update(Text(text, style="bold red"))


class LoreScreen(ModalScreen[bool]):
    """Pick a source (this game or a lorebook) on the left, its entries on the right."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("space", "toggle_attach", "Attach/detach"),
        Binding("ctrl+n", "new_entry", "New entry"),
        Binding("delete,ctrl+x", "delete_entry", "Delete entry"),
    ]
    DEFAULT_CSS = """
    LoreScreen { align: center middle; }
    LoreScreen #lore-panes { height: 1fr; }
    LoreScreen #lore-books { width: 40%; height: 1fr; }
    LoreScreen #lore-entries { width: 60%; height: 1fr; }
    LoreScreen Input { margin-top: 1; }
    LoreScreen #lore-help { color: $text-muted; }
    """

    def __init__(self, game: Game, lore: LoreStore, games: GameStore | None = None) -> None:
        super().__init__()
        self.game, self.lore, self.games = game, lore, games
        self.source = GAME
        self.changed = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Space: attach/detach a book · Enter: edit an entry · Ctrl+N: new · Delete: remove · "
                         "Esc: close (saved as you go)", id="lore-help")
            with Horizontal(id="lore-panes"):
                yield OptionList(id="lore-books")
                yield OptionList(id="lore-entries")
            yield Input(placeholder="Import: path to a SillyTavern, Kobold or NovelAI lorebook, then Enter",
                        id="lore-import", compact=True)
            yield Input(placeholder="Or name a new, empty lorebook, then Enter", id="lore-new", compact=True)
            yield Static("", id="lore-status")

    def on_mount(self) -> None:
        self._show_books()
        self._show_entries()
        self.query_one("#lore-books", OptionList).focus()

    # -- the two lists ------------------------------------------------------------------
    def _attached_ids(self) -> set[str]:
        return {b.id for b in self.game.lorebooks}

    def _show_books(self) -> None:
        books = self.query_one("#lore-books", OptionList)
        highlighted = books.highlighted
        books.clear_options()
        books.add_option(Option(Text(f"This game ({len(self.game.world_info)})"), id=GAME))
        attached = self._attached_ids()
        for summary in self.lore.list():
            mark = "[x]" if summary.id in attached else "[ ]"
            books.add_option(Option(Text(f"{mark} {summary.name} ({summary.entries})"), id=summary.id))
        books.highlighted = min(highlighted or 0, books.option_count - 1)

    def _entries(self) -> list[WorldEntry]:
        return self.game.world_info if self.source == GAME else self._book().entries

    def _book(self) -> Lorebook:
        if getattr(self, "_book_cache", None) is None or self._book_cache.id != self.source:
            self._book_cache = self.lore.get(self.source)
        return self._book_cache

    def _show_entries(self) -> None:
        entries = self.query_one("#lore-entries", OptionList)
        entries.clear_options()
        for i, entry in enumerate(self._entries()):
            entries.add_option(Option(entry_line(entry), id=str(i)))
        if not self._entries():
            entries.add_option(Option(Text("(no entries: Ctrl+N adds one)"), id="none", disabled=True))

    @on(OptionList.OptionHighlighted, "#lore-books")
    def _book_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id != self.source:
            self.source = event.option.id
            self._show_entries()

    @on(OptionList.OptionSelected, "#lore-entries")
    def _entry_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id and event.option.id.isdigit():
            self._edit(int(event.option.id))

    # -- actions ------------------------------------------------------------------------
    def action_toggle_attach(self) -> None:
        if self.source == GAME:
            self._status("This game's own world info is always used.")
            return
        book = self._book()
        try:
            if book.id in self._attached_ids():
                self.lore.detach(self.game.id, book.id)
                self.game.lorebooks = [b for b in self.game.lorebooks if b.id != book.id]
                self._status(f"Detached {book.name}.")
            else:
                self.lore.attach(self.game.id, book.id)
                self.game.lorebooks.append(book)
                self._status(f"Attached {book.name}: its entries can fire from the next turn.")
        except StoryloomError as exc:
            self._status(str(exc), error=True)
        self._show_books()

    def action_new_entry(self) -> None:
        self._edit(None)

    def action_delete_entry(self) -> None:
        index = self.query_one("#lore-entries", OptionList).highlighted
        entries = self._entries()
        if index is None or not 0 <= index < len(entries):
            return
        removed = entries.pop(index)
        if self._save_source():
            self._status(f"Deleted {removed.label()}.")
        else:
            entries.insert(index, removed)
        self._refresh()

    def _edit(self, index: int | None) -> None:
        entries = self._entries()
        start = entries[index] if index is not None else WorldEntry([], "")

        def done(entry: WorldEntry | None) -> None:
            if entry is None:
                return
            before = list(entries)
            if index is None:
                entries.append(entry)
            else:
                entries[index] = entry
            if self._save_source():
                self._status(f"Saved {entry.label()}.")
            else:
                entries[:] = before
            self._refresh()

        self.app.push_screen(EntryScreen(start), done)

    def _save_source(self) -> bool:
        try:
            if self.source == GAME:
                if self.games is not None:
                    self.games.save_meta(self.game)
            else:
                book = self._book()
                self.lore.save(book)
                self.game.lorebooks = [book if b.id == book.id else b for b in self.game.lorebooks]
        except StoryloomError as exc:
            self._status(str(exc), error=True)
            return False
        self.changed = True
        return True

    def _refresh(self) -> None:
        self._show_books()
        self._show_entries()

    @on(Input.Submitted, "#lore-import")
    def _import(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path:
            return
        try:
            report = lore_formats.import_path(Path(path).expanduser())
            book = self.lore.create(report.book, unique_name=True)
        except StoryloomError as exc:
            self._status(str(exc), error=True)
            return
        event.input.value = ""
        self._status(report.line() + ". Space attaches it to this game.")
        self._select_book(book.id)

    @on(Input.Submitted, "#lore-new")
    def _new_book(self, event: Input.Submitted) -> None:
        try:
            book = self.lore.create(Lorebook(event.value))
        except StoryloomError as exc:
            self._status(str(exc), error=True)
            return
        event.input.value = ""
        self._status(f"Created {book.name}. Ctrl+N adds an entry; Space attaches it.")
        self._select_book(book.id)

    def _select_book(self, book_id: str) -> None:
        self._show_books()
        books = self.query_one("#lore-books", OptionList)
        books.highlighted = books.get_option_index(book_id)
        self.source, self._book_cache = book_id, None
        self._show_entries()
        books.focus()

    def _status(self, text: str, error: bool = False) -> None:
        self.query_one("#lore-status", Static).update(Text(text, style="bold red" if error else ""))

    def action_close(self) -> None:
        self.dismiss(self.changed)

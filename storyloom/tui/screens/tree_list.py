"""Story trees: the list (public ones and your own), a new tree, import and export."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, OptionList, Select, TextArea
from textual.widgets.option_list import Option

from storyloom import StoryloomError
from storyloom.store import starters, tree_packs
from storyloom.store.trees import Tree, TreeStore
from storyloom.tui.background import with_own_store
from storyloom.tui.export import write_exports
from storyloom.tui.screens.editors import ConfirmDialog, EditorDialog
from storyloom.tui.widgets.menus import refill
from storyloom.tui.widgets.status_bar import StatusBar

NEW, IMPORT = "new", "import"


def pack_texts(store: TreeStore, tree_id: str) -> dict[str, str]:
    """A tree as a JSON pack and a Twine story (reads the whole tree: run it off the UI thread)."""
    return {".json": tree_packs.dump_pack(tree_packs.export_pack(store, tree_id)),
            ".twee": tree_packs.export_twee(store, tree_id)}


class TreeSized(Message):
    def __init__(self, tree_id: str, stats: dict) -> None:
        super().__init__()
        self.tree_id = tree_id
        self.stats = stats


class ImportDialog(EditorDialog):
    SAVE_LABEL = "Import"  # "Save" beside a path to read from read as writing to it

    def __init__(self, path: str = "") -> None:
        super().__init__()
        self.path = path  # the path whose import failed: typed again, it was lost with the dialog

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Import a tree pack (.json) or a Twine story (.twee): path to the file")
            yield Input(self.path, placeholder="e.g. saved/exports/the-castle-1a2b3c4d.json", id="import-path")
            yield self.buttons()

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        self.dismiss(self.query_one(Input).value.strip() or None)


class NewTreeScreen(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Back"), ("ctrl+s", "start", "Create")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="new-tree"):
            yield Label("Title")
            yield Input(placeholder="e.g. The Haunted Castle", id="tree-title")
            yield Label("Scenario: the setting every passage is written in (optional)")
            yield TextArea(id="tree-scenario")
            yield Label("Opening passage: where every player starts")
            yield TextArea(id="tree-opening")
            yield Label("Who can see it")
            yield Select([("public: listed and shareable", "public"), ("private: only you", "private")],
                         value="public", allow_blank=False, id="tree-visibility")
            yield Button("Create tree", id="create", variant="primary")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tree-title", Input).focus()

    def on_button_pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        title = self.query_one("#tree-title", Input).value.strip()
        opening = self.query_one("#tree-opening", TextArea).text.strip()
        if not title or not opening:
            self.notify("A tree needs a title and an opening passage.", severity="error")
            return
        tree = Tree(title, scenario=self.query_one("#tree-scenario", TextArea).text.strip(),
                    visibility=self.query_one("#tree-visibility", Select).value, owner=self.app.config.player)
        try:
            self.app.trees.create(tree, opening)
        except StoryloomError as exc:  # a busy or full database: the form keeps what was typed
            self.notify(str(exc), title="Not saved", severity="error", timeout=10, markup=False)
            return
        self.app.pop_screen()
        self.app.open_tree(tree.id)


class TreeListScreen(Screen):
    """Counting, packing and deleting read or write whole trees (a million passages take
    seconds): they run in workers on their own database connection, never on the UI thread."""

    BINDINGS = [("escape", "app.pop_screen", "Back"), ("n", "new", "New tree"), ("i", "import", "Import"),
                ("x", "export", "Export"), ("delete", "delete", "Delete")]

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[str, dict] = {}  # tree id -> stats, as counted last
        self.shown: list[Tree] = []
        self.starters: set[str] = set()  # ids of the trees that shipped with StoryLoom
        self.failed_path = ""  # the last import's path when it failed: the next import starts from it

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Story trees: choose-your-own-adventures that grow as people play (Enter opens)")
        yield OptionList(id="trees")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self._fill()

    def on_screen_resume(self) -> None:
        self._fill()

    def _fill(self) -> None:
        self.shown = self.app.trees.trees(self.app.config.player)  # one small query: titles only
        self.starters = starters.starter_ids(self.app.trees)
        self._show_list()
        self._count([t.id for t in self.shown])

    def _show_list(self) -> None:
        options = [Option("New tree", id=NEW), Option("Import a pack or Twine story", id=IMPORT)]
        for tree in self.shown:
            stats = self.sizes.get(tree.id)
            size = f"{stats['nodes']} passages, depth {stats['depth']}" if stats else "counting passages…"
            lock = "  ·  private" if tree.visibility == "private" else ""
            starter = "  ·  starter" if tree.id in self.starters else ""
            options.append(Option(Text(f"{tree.title}  ·  {size}{lock}{starter}"), id=tree.id))
        refill(self.query_one("#trees", OptionList), options)

    @work(thread=True, exclusive=True, group="tree-sizes", exit_on_error=False)
    def _count(self, tree_ids: list[str]) -> None:
        def count(store: TreeStore) -> None:
            for tree_id in tree_ids:
                self.post_message(TreeSized(tree_id, store.stats(tree_id)))

        try:
            with_own_store(self.app, count)
        except StoryloomError:
            pass  # the sizes are a nicety; the list works without them

    def on_tree_sized(self, message: TreeSized) -> None:
        self.sizes[message.tree_id] = message.stats
        if any(t.id == message.tree_id for t in self.shown):
            self._show_list()

    def _selected(self, verb: str) -> str | None:
        """The highlighted tree; on the New and Import rows (or none) says so: the key did nothing."""
        menu = self.query_one("#trees", OptionList)
        choice = None if menu.highlighted is None else menu.get_option_at_index(menu.highlighted).id
        if choice in (None, NEW, IMPORT):
            self.notify(f"Nothing to {verb} here: highlight a tree first." if self.shown else
                        f"Nothing to {verb} yet: n starts a tree, i imports one.", markup=False)
            return None
        return choice

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == NEW:
            self.action_new()
        elif event.option.id == IMPORT:
            self.action_import()
        else:
            self.app.open_tree(event.option.id)

    def action_new(self) -> None:
        self.app.push_screen(NewTreeScreen())

    def action_import(self) -> None:
        def done(path: str | None) -> None:
            if path:
                self.notify("Importing…", title="Import", timeout=3)
                self.failed_path = path
                self._import(Path(path).expanduser(), self.app.config.player)

        self.app.push_screen(ImportDialog(self.failed_path), done)

    @work(thread=True, exclusive=True, group="tree-import", exit_on_error=False)
    def _import(self, path: Path, player: str) -> None:
        """Off the UI thread, on its own connection (SQLite connections stay in their thread)."""
        try:
            report = with_own_store(self.app, lambda store: tree_packs.import_path(store, path, player))
        except StoryloomError as exc:
            self.app.call_from_thread(self._imported, None, f"Nothing was imported. {exc}")
        except Exception as exc:  # noqa: BLE001 - shown to the user, nothing was written
            self.app.call_from_thread(self._imported, None, f"Nothing was imported. {type(exc).__name__}: {exc}")
        else:
            self.app.call_from_thread(self._imported, report, None)

    def _imported(self, report, error: str | None) -> None:
        if error:
            self.notify(error[:500] + " (i: the path is still there to correct)", title="Import", severity="error",
                        timeout=12, markup=False)
            return
        self.failed_path = ""
        self.notify(f"{report.title}: {report.summary()}.", title="Import", markup=False)
        self._fill()

    def action_export(self) -> None:
        if tree_id := self._selected("export"):
            self.notify("Exporting…", title="Export", timeout=3)
            self._export(self.app.trees.tree(tree_id))

    @work(thread=True, group="tree-export", exit_on_error=False)
    def _export(self, tree: Tree) -> None:
        try:
            texts = with_own_store(self.app, lambda store: pack_texts(store, tree.id))
        except StoryloomError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        self.app.call_from_thread(write_exports, self.app, tree.title, tree.id, texts, "tree")

    def action_delete(self) -> None:
        tree_id = self._selected("delete")
        if not tree_id:
            return
        tree = self.app.trees.tree(tree_id)
        if tree.owner and tree.owner != self.app.config.player:
            self.notify("Only its owner can delete a tree.", severity="warning")
            return
        stats = self.sizes.get(tree_id)
        size = f"all {stats['nodes']:,} of its passages" if stats else "all its passages"

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"Deleting {tree.title}…", timeout=3, markup=False)
                self._delete(tree_id)

        self.app.push_screen(ConfirmDialog(f"Delete the tree “{tree.title}” ({tree_id[:8]}), with {size}? "
                                           "This cannot be undone; an exported pack can bring it back."), answered)

    @work(thread=True, group="tree-delete", exit_on_error=False)
    def _delete(self, tree_id: str) -> None:
        try:
            with_own_store(self.app, lambda store: store.delete_tree(tree_id))
        except StoryloomError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Not deleted", severity="error", timeout=10,
                                      markup=False)
            return
        self.app.call_from_thread(self._deleted, tree_id)

    def _deleted(self, tree_id: str) -> None:
        self.sizes.pop(tree_id, None)
        self.notify("Tree deleted.")
        self._fill()

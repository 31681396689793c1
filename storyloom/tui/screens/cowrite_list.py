"""Co-written stories, newest first: open, start a new one, export or delete."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, OptionList
from textual.widgets.option_list import Option

from storyloom.tui.saving import confirm_delete
from storyloom.tui.screens.load_game import turns
from storyloom.tui.widgets.menus import refill
from storyloom.tui.widgets.status_bar import StatusBar

NEW = "new"


class CowriteListScreen(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Back"), ("n", "new", "New story"),
                ("x", "export", "Export"), ("delete", "delete", "Delete")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Co-write: you and the model take turns (Enter opens)")
        yield OptionList(id="stories")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self._fill()

    def on_screen_resume(self) -> None:
        self._fill()

    def _fill(self) -> None:
        refill(self.query_one("#stories", OptionList), [Option("New story", id=NEW)] + [
            Option(Text(f"{s.title}  ·  {turns(s.turns)}  ·  {s.updated[:16].replace('T', ' ')}"), id=s.id)
            for s in self.app.cowrites.list()])

    def _selected(self, verb: str) -> str | None:
        """The highlighted story; on the New row (or none) says so: the key did nothing."""
        menu = self.query_one("#stories", OptionList)
        story_id = None if menu.highlighted is None else menu.get_option_at_index(menu.highlighted).id
        if story_id in (None, NEW):
            self.notify(f"Nothing to {verb} here: highlight a story first." if menu.option_count > 1 else
                        f"Nothing to {verb} yet: n starts a story.", markup=False)
            return None
        return story_id

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == NEW:
            self.action_new()
        else:
            self.app.open_cowrite(event.option.id)

    def action_new(self) -> None:
        from storyloom.tui.screens.new_story import NewStoryScreen

        self.app.push_screen(NewStoryScreen())

    def action_export(self) -> None:
        from storyloom.tui.screens.cowrite import export_story

        if story_id := self._selected("export"):
            export_story(self.app, self.app.cowrites.load(story_id))

    def action_delete(self) -> None:
        menu = self.query_one("#stories", OptionList)
        if not (story_id := self._selected("delete")):
            return
        label = str(menu.get_option_at_index(menu.highlighted).prompt)
        confirm_delete(self, f"Delete the story “{label}”? This cannot be undone (x exports it first).",
                       lambda: self.app.cowrites.delete(story_id), "Story deleted.", self._fill)

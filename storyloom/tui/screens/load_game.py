"""Saved adventures, newest first: open, export or delete."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, OptionList
from textual.widgets.option_list import Option

from storyloom.tui.export import export_game
from storyloom.tui.saving import confirm_delete
from storyloom.tui.widgets.menus import refill
from storyloom.tui.widgets.status_bar import StatusBar


def turns(n: int) -> str:
    return f"{n} turn" + ("" if n == 1 else "s")


class LoadGameScreen(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Back"), ("x", "export", "Export Markdown"),
                ("delete", "delete", "Delete")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Saved games (Enter opens)")
        yield OptionList(id="games")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self._fill()

    def _fill(self) -> None:
        # refill highlights the first game, so Enter opens it without an arrow key first
        games = [Option(Text(f"{g.title}  ·  {turns(g.turns)}  ·  {g.updated[:16].replace('T', ' ')}"), id=g.id)
                 for g in self.app.games.list()]
        refill(self.query_one("#games", OptionList), games or [
            Option("(no saved games yet: n on the home screen starts an adventure)", disabled=True)])

    def _selected(self, verb: str) -> str | None:
        menu = self.query_one("#games", OptionList)
        if menu.highlighted is None or menu.get_option_at_index(menu.highlighted).disabled:  # no saved games
            self.notify(f"Nothing to {verb} yet: n on the home screen starts an adventure.", markup=False)
            return None
        return menu.get_option_at_index(menu.highlighted).id

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.app.pop_screen()
        self.app.open_game(event.option.id)

    def action_export(self) -> None:
        if game_id := self._selected("export"):
            export_game(self.app, self.app.games.load(game_id))

    def action_delete(self) -> None:
        menu = self.query_one("#games", OptionList)
        if not (game_id := self._selected("delete")):
            return
        label = str(menu.get_option_at_index(menu.highlighted).prompt)
        confirm_delete(self, f"Delete the game “{label}”? This cannot be undone (x exports it as Markdown first).",
                       lambda: self.app.games.delete(game_id), "Game deleted.", self._fill)

"""The first screen: continue, new, load, the other modes, settings, quit; model progress."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from storyloom.tui.screens.load_game import turns
from storyloom.tui.widgets.menus import refill
from storyloom.tui.widgets.status_bar import StatusBar


class HomeScreen(Screen):
    BINDINGS = [("n", "app.new_adventure", "New"), ("l", "app.load_game", "Load"),
                ("c", "app.cowrite", "Co-write"), ("t", "app.trees", "Trees"),
                ("p", "app.poetry", "Poetry"),
                ("s", "app.settings", "Settings"), ("q", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="home"):
            yield Static(Text("StoryLoom", style="bold"), id="home-title")
            yield Static("Write stories with a language model that runs on your own computer.\n"
                         "F1 shows the keys, Ctrl+P every action.", id="home-tagline")
            yield OptionList(id="home-menu")
            yield ProgressBar(id="model-progress", show_eta=False)
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "model_progress", self._progress, init=True)
        self.refresh_menu()

    def on_screen_resume(self) -> None:
        self.refresh_menu()

    def refresh_menu(self) -> None:
        games = self.app.games.list()
        options = []
        if games:
            last = games[0]
            options.append(Option(Text(f"Continue: {last.title}  ({turns(last.turns)})"), id=f"continue:{last.id}"))
        refill(self.query_one("#home-menu", OptionList), options + [
            Option("New adventure", id="new"),
            Option("Load game", id="load", disabled=not games),
            Option("Co-write a story", id="cowrite"),
            Option("Story trees", id="trees"),
            Option("Poetry", id="poetry"),
            Option("Settings", id="settings"),
            Option("Quit", id="quit"),
        ])

    def _progress(self, fraction: float | None) -> None:
        bar = self.query_one("#model-progress", ProgressBar)
        bar.display = not self.app.model_ready.is_set()
        bar.update(total=1.0 if fraction is not None else None, progress=fraction or 0)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        choice = event.option.id or ""
        if choice.startswith("continue:"):
            self.app.open_game(choice.split(":", 1)[1])
        elif choice == "new":
            self.app.action_new_adventure()
        elif choice == "load":
            self.app.action_load_game()
        elif choice == "cowrite":
            self.app.action_cowrite()
        elif choice == "trees":
            self.app.action_trees()
        elif choice == "poetry":
            self.app.action_poetry()
        elif choice == "settings":
            self.app.action_settings()
        elif choice == "quit":
            self.app.exit()

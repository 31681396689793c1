"""StoryloomApp: screens, bindings, the model loader. Wiring only: no domain logic here."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from storyloom import StoryloomError
from storyloom.config import Config, ConfigError, load_config, save_config
from storyloom.modes import wordfilter
from storyloom.engine.generate import Generator
from storyloom.store import starters
from storyloom.store.cowrite import CowriteStore
from storyloom.store.db import StoreError, open_db, open_memory_db
from storyloom.store.poems import PoemStore
from storyloom.store.stories import GameStore
from storyloom.store.trees import TreeStore
from storyloom.tui.gate import GenerationGate

GeneratorFactory = Callable[[str, Callable[[str, float | None], None]], Generator]


def _load_model(spec: str, progress) -> Generator:
    from storyloom.engine import models

    return models.load(spec, progress)


class StoryloomApp(App):
    TITLE = "StoryLoom"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("f1", "help", "Help", show=False),  # the tagline and the palette (^p) say so; 80 columns fill up
        Binding("ctrl+q", "quit", "Quit", show=False),  # the home screen's footer shows q; Help lists it
    ]

    DB_BUSY_TIMEOUT_S = 3.0  # a write waits this long for another process, then says so (UI thread)

    model_status = reactive("starting")
    model_progress: reactive[float | None] = reactive(None)
    # What the screen in front is doing: shown only on the screen that set them (see usage_screen)
    context_usage = reactive("", always_update=True)
    speed = reactive("", always_update=True)
    activity = reactive("", always_update=True)  # e.g. "writing: 42 tokens, 18.3 tok/s"

    def __init__(self, generator_factory: GeneratorFactory = _load_model, db_path: Path | None = None,
                 model: str | None = None) -> None:
        super().__init__()
        self.generator_factory = generator_factory
        self.generator: Generator | None = None
        self.model_ready = threading.Event()
        self._load_lock = threading.Lock()
        self._load_number = 0  # each load takes a number; only the latest may install its model
        self.model_error: str | None = None
        try:
            self.config = load_config()
            self.config_error = None
        except ConfigError as exc:
            self.config, self.config_error = Config(), str(exc)
        if model:
            self.config = self.config.with_(model=model)
        wordfilter.set_enabled(self.config.word_filter)
        try:
            db, self.db_error = open_db(db_path, busy_timeout=self.DB_BUSY_TIMEOUT_S), None
        except StoreError as exc:  # the home screen opens and says so; the file is left as it is
            db, self.db_error = open_memory_db(), f"{exc} Until then nothing is saved."
        self.games = GameStore(db)
        self.cowrites = CowriteStore(db)
        self.trees = TreeStore(db)
        starters.import_starters(self.trees)  # once per database; a file that fails is logged and skipped
        self.poems = PoemStore(db)
        self.pregenerate = True  # story trees write the top options' outcomes ahead of the player
        # One generation per model at a time (a server: as many as it serves), the player first.
        self.gate = GenerationGate(lambda: getattr(getattr(self.generator, "capabilities", None), "parallel", 1))
        self.usage_screen: Screen | None = None  # the screen whose context, speed and activity are shown

    def _front_screen(self) -> Screen | None:
        return next((s for s in reversed(self.screen_stack) if not s.is_modal), None)

    USAGE = ("context_usage", "speed", "activity")

    def _claim_usage(self, name: str) -> None:
        front = self._front_screen()
        if front is not self.usage_screen:  # the others are another screen's: poetry showed co-write's context
            self.usage_screen = front
            for other in self.USAGE:
                if other != name:
                    self.set_reactive(getattr(type(self), other), "")

    def watch_context_usage(self) -> None:
        self._claim_usage("context_usage")

    def watch_speed(self) -> None:
        self._claim_usage("speed")

    def watch_activity(self) -> None:
        self._claim_usage("activity")

    def on_mount(self) -> None:
        from storyloom.tui.screens.home import HomeScreen

        self.push_screen(HomeScreen())
        if self.config_error:
            self.notify(self.config_error + " Using default settings.", severity="error", timeout=10, markup=False)
        if self.db_error:
            self.notify(self.db_error, title="Database", severity="error", timeout=30, markup=False)
        self.load_model()

    # -- the model, loaded in the background ------------------------------------------------
    @work(thread=True, exclusive=True, group="model", exit_on_error=False)
    def load_model(self) -> None:
        spec = self.config.model
        self.model_ready.clear()
        self.model_error = None
        self.call_from_thread(setattr, self, "model_status", f"loading {spec}…")

        def progress(stage: str, fraction: float | None) -> None:
            if mine == self._load_number:  # a superseded load says nothing more
                self.call_from_thread(self._set_progress, stage, fraction)

        with self._load_lock:
            self._load_number += 1
            mine = self._load_number
        try:
            generator = self.generator_factory(spec, progress)
        except StoryloomError as exc:
            if mine == self._load_number:
                self.call_from_thread(self._model_failed, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps running
            if mine == self._load_number:
                self.call_from_thread(self._model_failed, f"{type(exc).__name__}: {exc}")
            return
        with self._load_lock:
            if mine != self._load_number:
                return  # a later choice of model is loading: this slower, older load must not win
            self.generator = generator
        self.model_ready.set()
        server = generator.info.extra.get("server")
        self.call_from_thread(self._loaded, mine, f"{generator.name} ready" + (f" on {server}" if server else ""))

    def _loaded(self, number: int, stage: str) -> None:
        if number == self._load_number:  # not if yet another load began meanwhile
            self._set_progress(stage, 1.0)

    def loaded_generator(self) -> Generator:
        """From a worker thread: the model once it has loaded, or a StoryloomError saying why not."""
        if not self.model_ready.wait(600) or self.generator is None:
            raise StoryloomError(self.model_error or "The model is not loaded.")
        return self.generator

    def _set_progress(self, stage: str, fraction: float | None) -> None:
        self.model_status = stage
        self.model_progress = fraction

    def _model_failed(self, message: str) -> None:
        self.model_error = message
        self.model_status = "not loaded (see Settings)"
        self.model_progress = None
        self.model_ready.set()  # waiters wake up and see the error
        self.notify(message, title="Model", severity="error", timeout=15, markup=False)

    def apply_config(self, config: Config) -> None:
        """Save settings; reload the model only when its spec changed."""
        reload = config.model != self.config.model or self.generator is None
        save_config(config)
        self.config = config
        wordfilter.set_enabled(config.word_filter)
        if reload:
            self.generator = None
            self.load_model()

    # -- actions ---------------------------------------------------------------------------
    async def action_quit(self) -> None:
        """A screen holding work nothing has saved (a poem) says so once; quitting again quits."""
        if all(getattr(screen, "may_quit", lambda: True)() for screen in self.screen_stack):
            await super().action_quit()

    def action_help(self) -> None:
        from storyloom.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_settings(self) -> None:
        from storyloom.tui.screens.settings import SettingsScreen

        self.push_screen(SettingsScreen())

    def action_new_adventure(self) -> None:
        from storyloom.tui.screens.new_game import NewGameScreen

        self.push_screen(NewGameScreen())

    def action_load_game(self) -> None:
        from storyloom.tui.screens.load_game import LoadGameScreen

        self.push_screen(LoadGameScreen())

    def open_game(self, game_id: str) -> None:
        from storyloom.tui.screens.adventure import AdventureScreen

        self.push_screen(AdventureScreen(self.games.load(game_id)))

    def action_cowrite(self) -> None:
        from storyloom.tui.screens.cowrite_list import CowriteListScreen

        self.push_screen(CowriteListScreen())

    def open_cowrite(self, story_id: str) -> None:
        from storyloom.tui.screens.cowrite import CowriteScreen

        self.push_screen(CowriteScreen(self.cowrites.load(story_id)))

    def action_poetry(self) -> None:
        from storyloom.tui.screens.poetry import PoetryScreen

        self.push_screen(PoetryScreen())

    def action_trees(self) -> None:
        from storyloom.tui.screens.tree_list import TreeListScreen

        self.push_screen(TreeListScreen())

    def open_tree(self, tree_id: str) -> None:
        from storyloom.tui.screens.tree_play import TreePlayScreen

        self.push_screen(TreePlayScreen(tree_id))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New adventure", "Start a game from a scenario or your own prompt", self.action_new_adventure)
        yield SystemCommand("Load game", "Open a saved adventure", self.action_load_game)
        yield SystemCommand("Co-write", "Write a story turn by turn with the model", self.action_cowrite)
        yield SystemCommand("Story trees", "Shared choose-your-own-adventures, ranked by votes", self.action_trees)
        yield SystemCommand("Poetry", "Poems that scan and rhyme, proved line by line", self.action_poetry)
        yield SystemCommand("Settings", "Model and sampler settings", self.action_settings)
        yield SystemCommand("Help", "Keys and how to play", self.action_help)
        for title, help_text, action in getattr(screen, "COMMANDS_HERE", ()):
            yield SystemCommand(title, help_text, lambda a=action: screen.run_action(a))


def run_app(model: str | None = None) -> int:
    """The app's exit status: 1 after a crash (Textual prints the traceback), so a script or a
    shell sees that it did not end normally."""
    app = StoryloomApp(model=model)
    app.run()
    return app.return_code or 0

"""What players hit (issue 15), played through the app with a scripted model."""
from __future__ import annotations

import ast
import threading
from pathlib import Path

from textual.widgets import Input

from storyloom import StoryloomError
from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.tui.app import StoryloomApp
from storyloom.tui.widgets.status_bar import StatusBar

from tests.tui.pilot_helpers import act, settle, start_knight, transcript_text
from tests.tui.test_races_app import wait_until


class HoldingGenerator(ScriptedGenerator):
    """Streams `hold_after` pieces of the next output, then waits for `go` (a slow model)."""

    def __init__(self, *args, hold_after: int = 10**9, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold_after = hold_after
        self.held = threading.Event()
        self.go = threading.Event()

    def _stream(self, prompt, settings, cancel):
        for i, piece in enumerate(super()._stream(prompt, settings, cancel)):
            if i == self.hold_after:
                self.held.set()
                self.go.wait(10)
                if cancel is not None and cancel.is_set():
                    return
            yield piece


def status(app) -> str:
    return str(app.screen.query_one(StatusBar).render())


def toasts(app) -> list:
    return list(app._notifications)


async def test_escape_keeps_what_was_written_and_ctrl_z_takes_it_back():
    gen = HoldingGenerator(["Opening.", "The door creaks open. A cold wind blows. Then more words come here and on"])
    app = StoryloomApp(generator_factory=lambda spec, progress: gen)
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        gen.hold_after = 9
        await pilot.press(*"open the door", "enter")
        await wait_until(pilot, lambda: gen.held.is_set())
        await pilot.pause()
        assert "writing: " in status(app) and "tokens" in status(app)  # the player sees it write
        await pilot.press("escape")
        gen.go.set()
        await settle(app, pilot)
        game = app.screen.play.game
        assert len(game.turns) == 2
        assert game.turns[-1].output == "The door creaks open. A cold wind blows."
        assert app.screen.query_one("#action", Input).value == ""
        assert any("kept" in n.message for n in toasts(app))
        assert "writing" not in status(app)
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert len(game.turns) == 1 and "cold wind" not in transcript_text(app)


async def test_an_empty_enter_continues_the_story(make_app, fake):
    fake.push("Opening.", "The wind rises over the hills.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        game = app.screen.play.game
        assert len(game.turns) == 2
        assert (game.turns[-1].kind, game.turns[-1].action, game.turns[-1].output) == (
            "story", "", "The wind rises over the hills.")
        assert "The wind rises over the hills." in transcript_text(app)
        assert len(app.games.load(game.id).turns) == 2  # saved like any turn


async def test_a_huge_action_is_warned_about_once_and_memory_and_context_stay_in_the_prompt(make_app, fake):
    fake.push("Opening.", "You finish talking.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        game = app.screen.play.game
        game.memory = "MEMORY-MARK: you carry a silver key."
        box = app.screen.query_one("#action", Input)
        box.value = "talk " * 4000  # 20,000 characters
        calls = len(fake.prompts)
        await pilot.press("enter")
        await settle(app, pilot)
        assert len(fake.prompts) == calls and len(game.turns) == 1  # not sent yet
        assert any("Very long action" in n.title for n in toasts(app))
        assert box.value.startswith("talk")  # nothing typed is lost
        await pilot.press("enter")  # sent anyway
        await settle(app, pilot)
        assert len(game.turns) == 2
        prompt = fake.prompts[-1]
        assert "MEMORY-MARK" in prompt and game.context[:30] in prompt


async def test_a_server_error_with_brackets_shows_literally():
    class Failing(ScriptedGenerator):
        def _stream(self, prompt, settings, cancel):
            raise StoryloomError("The server said: [bold]x[/]")
            yield ""  # unreachable: makes this a generator function

    gen = Failing(["Opening."])
    app = StoryloomApp(generator_factory=lambda spec, progress: gen)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("enter", "enter")
        await settle(app, pilot)
        shown = [n for n in toasts(app) if "[bold]x[/]" in n.message]
        assert shown and not shown[0].markup


def test_every_notify_with_text_from_outside_passes_markup_false():
    """A toast whose message is not a fixed string (it holds player, model or server text)
    must not be read as markup."""
    root = Path(__file__).resolve().parents[2] / "storyloom" / "tui"
    bad = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "notify" and node.args:
                fixed = isinstance(node.args[0], ast.Constant)
                markup = next((k.value for k in node.keywords if k.arg == "markup"), None)
                if not fixed and not (isinstance(markup, ast.Constant) and markup.value is False):
                    bad.append(f"{path.name}:{node.lineno}")
    assert not bad, bad


async def test_the_status_bar_shows_only_this_screens_context_and_speed(make_app, fake):
    fake.push("Opening.", "Fine.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "look")
        assert "Context:" in status(app) and "tok/s" in status(app)
        await pilot.press("escape")  # home
        await pilot.pause()
        await pilot.press("p")  # poetry: nothing generated here yet
        await pilot.pause()
        assert "Context:" not in status(app) and "tok/s" not in status(app)


async def test_settings_errors_use_the_names_on_screen_and_come_all_at_once(make_app):
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await pilot.pause()
        app.screen.query_one("#temperature", Input).value = "9"
        app.screen.query_one("#max_new_tokens", Input).value = "0"
        app.screen.query_one("#top_k", Input).value = "2.5"
        await pilot.press("ctrl+s")
        await pilot.pause()
        shown = str(app.screen.query_one("#settings-error").render())
        assert "Temperature must be between 0 and 5" in shown
        assert "Output length must be between 1 and 8192" in shown
        assert "Top-k must be a whole number (got '2.5')" in shown
        assert "max_new_tokens" not in shown
        assert app.screen.query_one("#max_new_tokens", Input).has_class("-invalid")


async def test_after_an_own_action_the_option_keys_act_again(make_app, fake):
    from tests.tui.test_tree_app import ROOT_ACTIONS, new_tree, options

    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        await pilot.press("a")
        assert isinstance(app.focused, Input)
        await pilot.press("escape")  # changed my mind: back to the options, still in the tree
        assert not isinstance(app.focused, Input) and app.screen.query("#tree-options")
        fake.push("The wall holds.", *[f"You try {i}." for i in range(5)])
        await pilot.press("a", *"shout", "enter")
        await settle(app, pilot)
        assert not isinstance(app.focused, Input)
        await pilot.press("plus")  # votes, not a "+" typed into the box
        await pilot.pause()
        assert app.screen.query_one("#tree-action", Input).value == ""
        assert "(you: +)" in options(app)[0]


async def test_load_game_opens_with_enter_at_once(make_app, fake):
    from storyloom.tui.screens.adventure import AdventureScreen

    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, AdventureScreen)

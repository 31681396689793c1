"""Each screen at a fixed terminal size (pytest-textual-snapshot; update with --snapshot-update)."""
from __future__ import annotations

import pytest

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.tui.app import StoryloomApp
from storyloom.tui.screens.cowrite_list import CowriteListScreen
from storyloom.tui.screens.help import HelpScreen
from storyloom.tui.screens.new_game import NewGameScreen
from storyloom.tui.screens.new_story import NewStoryScreen
from storyloom.tui.screens.poetry import PoetryScreen
from storyloom.tui.screens.settings import SettingsScreen
from storyloom.tui.screens.tree_browse import TreeBrowseScreen
from tests.tui.pilot_helpers import act, settle, shown, start_knight

SIZE = (100, 32)


def _app() -> StoryloomApp:
    gen = ScriptedGenerator(["Mist rolls between the trees. An owl watches you.",
                             'The door opens. A voice says "[bold]Welcome[/bold]."'])
    return StoryloomApp(generator_factory=lambda spec, progress: gen)


async def _home(pilot):
    await settle(pilot.app, pilot)


async def _new_game(pilot):
    await settle(pilot.app, pilot)
    await pilot.press("n")
    await shown(pilot.app, pilot, NewGameScreen)


async def _adventure(pilot):
    await start_knight(pilot.app, pilot)
    await act(pilot.app, pilot, "open the door")


async def _new_story(pilot):
    await settle(pilot.app, pilot)
    await pilot.press("c")
    await shown(pilot.app, pilot, CowriteListScreen)
    await pilot.press("enter")
    await shown(pilot.app, pilot, NewStoryScreen)


async def _cowrite(pilot):
    from tests.tui.test_cowrite_app import start_story

    await start_story(pilot.app, pilot, opening="The boat came at dusk.")


async def _tree_play(pilot):
    from tests.tui.test_tree_app import ROOT_ACTIONS, new_tree

    await settle(pilot.app, pilot)
    pilot.app.generator = ScriptedGenerator(ROOT_ACTIONS)
    await new_tree(pilot.app, pilot)


async def _tree_browse(pilot):
    await _tree_play(pilot)
    await pilot.press("ctrl+t")
    await shown(pilot.app, pilot, TreeBrowseScreen)


async def _poetry(pilot):
    await settle(pilot.app, pilot)
    await pilot.press("p")
    await shown(pilot.app, pilot, PoetryScreen)


async def _settings(pilot):
    await settle(pilot.app, pilot)
    await pilot.press("s")
    await shown(pilot.app, pilot, SettingsScreen)


async def _help(pilot):
    await settle(pilot.app, pilot)
    await pilot.press("f1")
    await shown(pilot.app, pilot, HelpScreen)


STEPS = [_home, _new_game, _adventure, _new_story, _cowrite, _tree_play, _tree_browse, _poetry, _settings, _help]
NAMES = ["home", "new_game", "adventure", "new_story", "cowrite", "tree_play", "tree_browse", "poetry", "settings",
         "help"]


def _steady(steps):
    """Run the steps, then hold every cursor still: a blinking one was caught off in a snapshot
    taken more than half a second after the screen settled (a loaded machine)."""
    async def run(pilot):
        await steps(pilot)
        for box in pilot.app.screen.query("Input, TextArea"):
            box.cursor_blink = False
        await pilot.pause()
    return run


@pytest.mark.parametrize("steps", STEPS, ids=NAMES)
def test_screen_snapshot(snap_compare, steps):
    assert snap_compare(_app(), terminal_size=SIZE, run_before=_steady(steps))


@pytest.mark.parametrize("steps", STEPS, ids=NAMES)
def test_screen_snapshot_at_80x24(snap_compare, steps):
    """The smallest terminal we promise: every control and footer key still on screen."""
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=_steady(steps))


def test_every_stored_snapshot_belongs_to_a_test_here():
    """syrupy fails a run on a snapshot no test uses, but not under pytest-xdist (tasks.py runs the
    suite on workers): a screen renamed or dropped would leave its old picture behind unseen."""
    from pathlib import Path

    folder = Path(__file__).parent / "__snapshots__" / Path(__file__).stem
    wanted = {f"{test}[{name}].svg" for test in ("test_screen_snapshot", "test_screen_snapshot_at_80x24")
              for name in NAMES}
    stored = {p.name for p in folder.iterdir()}
    assert stored == wanted, f"stale: {sorted(stored - wanted)}, missing: {sorted(wanted - stored)}"

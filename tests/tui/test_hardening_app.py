"""Issue 14 in the app: database errors are toasts, never the end; text is never markup."""
from __future__ import annotations

import json
import sqlite3

from textual.widgets import Input

from storyloom.store import tree_packs
from storyloom.store.db import DiskFull
from storyloom.store.stories import GameStore
from storyloom.store.trees import Tree
from storyloom.tui.app import StoryloomApp
from storyloom.tui.screens.adventure import AdventureScreen
from storyloom.tui.screens.home import HomeScreen
from storyloom.tui.screens.tree_list import TreeListScreen
from storyloom.tui.screens.tree_play import TreePlayScreen

from tests.tui.pilot_helpers import act, settle, start_knight, transcript_text
from tests.tui.test_tree_app import ROOT_ACTIONS, new_tree, options


def toasts(app) -> list:
    return list(app._notifications)


async def test_voting_while_another_process_writes_is_a_toast_not_a_crash(make_app, fake, monkeypatch):
    """Before: `+` during another process's write ended the app with OperationalError."""
    monkeypatch.setattr(StoryloomApp, "DB_BUSY_TIMEOUT_S", 0.05)
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        other = sqlite3.connect(app.trees.db.path)
        other.execute("BEGIN IMMEDIATE")  # another StoryLoom is writing
        await pilot.press("plus")
        await pilot.pause()
        assert isinstance(app.screen, TreePlayScreen)  # still running, still here
        assert any("another StoryLoom is writing" in n.message and not n.markup for n in toasts(app))
        assert "+1" not in options(app)[0]  # not shown as counted
        other.rollback()
        await pilot.press("plus")  # the retry works once the other writer is done
        await pilot.pause()
        node = app.trees.node(app.screen.play.options()[0].id)
        assert node.ups == 1


async def test_import_messages_show_a_hostile_title_literally(make_app, fake, tmp_path):
    pack = {"format": tree_packs.PACK_FORMAT, "version": 1, "tree": {"id": "tree00000042", "title": "[b]Bold[/b] [link=x]"},
            "nodes": [{"id": "node00000001", "parent_id": None, "action": "", "outcome": "Hi."}]}
    path = tmp_path / "markup.json"
    path.write_text(json.dumps(pack))
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TreeListScreen)
        await pilot.press("i")
        await pilot.pause()
        app.screen.query_one(Input).value = str(path)
        await pilot.press("enter")
        await settle(app, pilot)
        done = [n for n in toasts(app) if "[b]Bold[/b]" in n.message]
        assert done and not done[0].markup


async def test_someone_elses_private_tree_does_not_open(make_app, fake):
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await settle(app, pilot)
        secret = Tree("Secret", visibility="private", owner="somebody-else")
        app.trees.create(secret, "Hidden.")
        app.open_tree(secret.id)
        await settle(app, pilot)
        assert not isinstance(app.screen, TreePlayScreen)
        assert any("No tree" in n.message for n in toasts(app))


async def test_a_garbage_database_opens_the_home_screen_and_says_so(fake, storyloom_home):
    """Before: the app died in __init__."""
    storyloom_home.mkdir(parents=True, exist_ok=True)
    db = storyloom_home / "storyloom.db"
    db.write_bytes(b"garbage" * 1000)
    app = StoryloomApp(generator_factory=lambda spec, progress: fake)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, HomeScreen)
        assert any("not a StoryLoom database" in n.message for n in toasts(app))
    assert db.read_bytes() == b"garbage" * 1000


async def test_a_turn_the_disk_could_not_take_is_not_shown_as_saved(make_app, fake, monkeypatch):
    """Before: memory showed the turn, the database did not have it."""
    fake.push("Wolves howl.", "The door swings open.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        assert isinstance(app.screen, AdventureScreen)

        def full(game):
            raise DiskFull("The disk is full: this change was not saved. Free some space and try again.")

        monkeypatch.setattr(GameStore, "add_turn", lambda self, game: full(game))
        await act(app, pilot, "open the door")
        game = app.screen.play.game
        assert len(game.turns) == 1 and "open the door" not in transcript_text(app)
        assert app.screen.query_one("#action", Input).value == "open the door"  # back in the box
        assert any("disk is full" in n.message for n in toasts(app))
        assert len(app.games.load(game.id).turns) == len(game.turns)  # memory and database agree


async def test_undo_while_another_process_writes_keeps_transcript_memory_and_database_together(
        make_app, fake, monkeypatch):
    """Found in tmux play: Ctrl+Z with the database locked said "Not saved", the transcript
    still showed the turn, but the game in memory had lost it (the next redraw dropped it, a
    relaunch brought it back)."""
    from storyloom.tui.widgets.transcript import Transcript

    monkeypatch.setattr(StoryloomApp, "DB_BUSY_TIMEOUT_S", 0.05)
    fake.push("Wolves howl.", "The door swings open.", "A hall of banners.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        await act(app, pilot, "walk in")
        game = app.screen.play.game
        assert len(game.turns) == 3 and "A hall of banners." in transcript_text(app)
        other = sqlite3.connect(app.games.db.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another StoryLoom is writing
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert any(n.title == "Not saved" and "another StoryLoom" in n.message for n in toasts(app))
        assert len(game.turns) == 3 and game.undone == []
        app.screen.query_one(Transcript).show(game.turns)  # the next redraw shows the same story
        await pilot.pause()
        assert "A hall of banners." in transcript_text(app)
        other.rollback()
        assert len(app.games.load(game.id).turns) == 3  # as shown, so saved
        await pilot.press("ctrl+z")  # once the other writer is done the undo goes through
        await pilot.pause()
        assert len(game.turns) == 2 and "A hall of banners." not in transcript_text(app)
        assert len(app.games.load(game.id).turns) == 2


async def test_a_memory_edit_the_database_refuses_comes_back_to_the_player_unsaved(make_app, fake, monkeypatch):
    """A refused save puts the game back as saved; what the player typed must not go with it."""
    from textual.widgets import TextArea

    monkeypatch.setattr(StoryloomApp, "DB_BUSY_TIMEOUT_S", 0.05)
    fake.push("Wolves howl.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        game = app.screen.play.game
        other = sqlite3.connect(app.games.db.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another StoryLoom is writing
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#memory", TextArea).text = "Ada fears the dark."
        app.screen.action_save()
        await pilot.pause()
        assert any(n.title == "Not saved" for n in toasts(app))
        assert game.memory == "" and app.games.load(game.id).memory == ""  # memory and database agree
        assert app.screen.query_one("#memory", TextArea).text == "Ada fears the dark."  # the draft is back
        other.rollback()
        app.screen.action_save()  # once the other writer is done, Save goes through
        await pilot.pause()
        assert game.memory == "Ada fears the dark." and app.games.load(game.id).memory == "Ada fears the dark."


async def test_an_alter_the_database_refuses_comes_back_with_the_altered_text(make_app, fake, monkeypatch):
    from textual.widgets import TextArea

    monkeypatch.setattr(StoryloomApp, "DB_BUSY_TIMEOUT_S", 0.05)
    fake.push("Wolves howl.", "The door swings open.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        game = app.screen.play.game
        other = sqlite3.connect(app.games.db.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        app.screen.action_alter()
        await pilot.pause()
        app.screen.query_one("#alter-text", TextArea).text = "The door groans open on a dark hall."
        app.screen.action_save()
        await pilot.pause()
        assert any(n.title == "Not saved" for n in toasts(app))
        assert game.turns[-1].output == "The door swings open."  # as saved
        assert app.screen.query_one("#alter-text", TextArea).text == "The door groans open on a dark hall."
        other.rollback()
        app.screen.action_save()
        await pilot.pause()
        assert app.games.load(game.id).turns[-1].output == "The door groans open on a dark hall."

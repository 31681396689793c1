"""What a player hit in a real terminal (tmux play session), played through the app."""
from __future__ import annotations

from storyloom.store.cowrite import CoStory
from storyloom.store.poems import SavedPoem
from storyloom.tui.screens.editors import ConfirmDialog

from tests.tui.pilot_helpers import settle, start_knight, transcript_text


def label_shown_whole(label) -> bool:
    """Every word of a label is on screen (wrapped), none cut off at its container's right edge
    (a label as wide as its text, wider than the dialog, is cut there)."""
    region, room = label.region, label.parent.content_region
    shown = " ".join(str(line.text).strip() for line in label.render_lines(region.reset_offset))
    return (region.right <= room.right and region.bottom <= label.screen.size.height
            and " ".join(str(label.render()).split()) == " ".join(shown.split()))


async def _delete_then(app, pilot, answer: str) -> None:
    await pilot.press("delete")
    await pilot.pause()
    assert isinstance(app.screen, ConfirmDialog)  # one key never throws away a whole piece of work
    await pilot.press(answer)
    await settle(app, pilot)


async def test_deleting_a_saved_game_asks_first(make_app):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        await _delete_then(app, pilot, "n")
        assert len(app.games.list()) == 1
        await _delete_then(app, pilot, "y")
        assert app.games.list() == []


async def test_deleting_a_cowritten_story_asks_first(make_app, fake):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        story = CoStory("The Keeper")
        app.cowrites.create(story)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("down")
        await _delete_then(app, pilot, "escape")
        assert [s.id for s in app.cowrites.list()] == [story.id]
        await _delete_then(app, pilot, "y")
        assert app.cowrites.list() == []


async def test_deleting_a_saved_poem_asks_first(make_app):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.poems.save(SavedPoem("the sea", {"name": "Haiku"}, "The moon in the sky"))
        await pilot.press("p")
        await settle(app, pilot)
        app.screen.query_one("#poetry-saved").focus()
        await pilot.pause()
        await _delete_then(app, pilot, "n")
        assert len(app.poems.list()) == 1
        await _delete_then(app, pilot, "y")
        assert app.poems.list() == []


async def test_a_stopped_action_comes_back_with_the_cursor_after_it(make_app, fake):
    """Esc before the model wrote a word: the action went back in the box with the cursor at its
    start (what the player typed next landed in front of it: "draw Dawnabc"), and no word said why."""
    from textual.widgets import Input

    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        fake.release.clear()  # the model has not written a word yet
        await pilot.press(*"open the door", "enter")
        await pilot.pause()
        await pilot.press("escape")
        fake.release.set()
        await settle(app, pilot)
        assert len(app.screen.play.game.turns) == 1
        box = app.screen.query_one("#action", Input)
        assert box.value == "open the door"
        await pilot.press(*" slowly")
        assert box.value == "open the door slowly"
        assert any("your action is back" in n.message for n in app._notifications)


async def test_the_last_turn_stays_in_view_when_the_terminal_shrinks(make_app, fake):
    """Resizing 120x40 to 80x24 left the transcript at its old offset: the newest turn was below
    the bottom edge, and the player saw turns from minutes ago."""
    from storyloom.tui.widgets.transcript import Transcript

    from tests.tui.pilot_helpers import act

    places = ["mill", "ford", "chapel", "gallows", "inn", "bridge", "tower", "quarry"]
    fake.push("Opening.", *[f"The road bends past the old {p}. Rain drums on your helm, the {p} is dark, and far "
                            f"off a bell rings {i + 2} times over the wet fields." for i, p in enumerate(places)])
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start_knight(app, pilot)
        for place in places:
            await act(app, pilot, f"walk to the {place}")
        assert "bell rings 9 times" in transcript_text(app)
        transcript = app.screen.query_one(Transcript)
        assert transcript.max_scroll_y > 0 and transcript.scroll_y == transcript.max_scroll_y
        await pilot.resize_terminal(80, 24)
        await settle(app, pilot)
        assert transcript.scroll_y == transcript.max_scroll_y
        await pilot.resize_terminal(120, 40)
        await settle(app, pilot)
        assert transcript.scroll_y == transcript.max_scroll_y


async def test_the_memory_dialog_fits_80x24(make_app, fake):
    """At 80x24 the memory dialog ran off the bottom: Save, Cancel and Lorebooks were cut away and
    the world-info box showed one line of its border; the long labels were cut mid-word."""
    from textual.widgets import Button, Label, TextArea

    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        screen = app.screen
        bottom = screen.size.height
        for button in screen.query(Button):
            assert button.region.height > 0 and button.region.bottom <= bottom, button.id
        for area in screen.query(TextArea):
            assert area.region.height >= 3 and area.region.bottom <= bottom, area.id
        for label in screen.query(Label):  # wrapped, not cut: every word of it is on screen
            assert label_shown_whole(label), label.render()


async def _while_another_process_writes(app, pilot, *keys) -> list[str]:
    """Press `keys` while another StoryLoom holds the write lock; the toasts that came of it."""
    import sqlite3

    other = sqlite3.connect(app.games.db.path)
    other.execute("BEGIN IMMEDIATE")
    try:
        before = len(app._notifications)
        await pilot.press(*keys)
        await settle(app, pilot)
        return [n.message for n in list(app._notifications)[before:] if not n.markup]
    finally:
        other.rollback()
        other.close()


async def test_saving_a_poem_while_another_process_writes_is_a_toast_not_a_crash(make_app, monkeypatch):
    """Ctrl+S on a poem during another StoryLoom's write ended the app with a DatabaseBusy traceback."""
    from storyloom.modes.poetry.compose import Poem, PoemLine
    from storyloom.modes.poetry.forms import load_forms
    from storyloom.tui.app import StoryloomApp
    from storyloom.tui.screens.poetry import PoetryScreen

    monkeypatch.setattr(StoryloomApp, "DB_BUSY_TIMEOUT_S", 0.05)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await settle(app, pilot)
        app.screen.poem = Poem(load_forms()["haiku"], "rain", [PoemLine("The moon in the sky", True, "sky")])
        said = await _while_another_process_writes(app, pilot, "ctrl+s")
        assert isinstance(app.screen, PoetryScreen) and app.is_running
        assert any("another StoryLoom is writing" in m for m in said) and "Saved." not in said
        assert app.poems.list() == []
        await pilot.press("ctrl+s")  # once the other writer is done, it saves
        await settle(app, pilot)
        assert len(app.poems.list()) == 1


async def test_deleting_and_undoing_while_another_process_writes_are_toasts(make_app, fake, monkeypatch):
    """Delete (after y) in Load game, and Ctrl+Z in a game, crashed the app the same way."""
    from storyloom.tui.app import StoryloomApp
    from storyloom.tui.screens.adventure import AdventureScreen
    from storyloom.tui.screens.load_game import LoadGameScreen

    from tests.tui.pilot_helpers import act

    monkeypatch.setattr(StoryloomApp, "DB_BUSY_TIMEOUT_S", 0.05)
    fake.push("Opening.", "The door swings open onto a cold hall.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        said = await _while_another_process_writes(app, pilot, "ctrl+z")
        assert isinstance(app.screen, AdventureScreen) and app.is_running
        assert any("another StoryLoom is writing" in m for m in said)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        said = await _while_another_process_writes(app, pilot, "delete", "y")
        assert isinstance(app.screen, LoadGameScreen) and app.is_running
        assert any("another StoryLoom is writing" in m for m in said) and "Game deleted." not in said
        assert len(app.games.list()) == 1


def test_a_crash_ends_with_a_failing_exit_status(monkeypatch):
    """After a traceback the shell saw `storyloom` exit 0, as if all was well."""
    from storyloom.tui import app as app_module

    def crash(self) -> None:
        raise RuntimeError("boom")

    run = app_module.StoryloomApp.run
    monkeypatch.setattr(app_module.StoryloomApp, "on_mount", crash)
    monkeypatch.setattr(app_module.StoryloomApp, "run", lambda self: run(self, headless=True))
    assert app_module.run_app() == 1


async def _poetry_with(app, pilot, poem):
    await settle(app, pilot)
    await pilot.press("p")
    await settle(app, pilot)
    app.screen.poem = poem
    app.screen._show()
    await pilot.pause()


def _haiku():
    from storyloom.modes.poetry.compose import Poem, PoemLine
    from storyloom.modes.poetry.forms import load_forms

    return Poem(load_forms()["haiku"], "rain", [PoemLine("The moon in the sky", True, "sky"),
                                                PoemLine("A gentle autumn rain falls", True, "falls"),
                                                PoemLine("Beneath the tree bare", True, "bare")])


async def test_esc_during_a_line_rewrite_keeps_the_line(make_app):
    """Esc while `r` rewrote a line put None in the poem's place for it (the next redraw failed)."""
    import threading

    from storyloom.tui.messages import PoemDone

    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await _poetry_with(app, pilot, _haiku())
        screen = app.screen
        screen.cancel = threading.Event()
        screen.cancel.set()  # what Esc does; the worker then reports no new line
        screen.post_message(PoemDone(rewritten=1, line=None))
        await settle(app, pilot)
        assert app.is_running and screen.poem.lines[1].text == "A gentle autumn rain falls"
        screen._show()


async def test_a_haiku_says_nothing_of_rhymes_and_an_unsaved_poem_is_named_before_it_is_replaced(make_app):
    """'3/3 lines scan, 0/0 rhymes' for a haiku; and Write (or opening a saved poem) silently
    threw away a finished poem that was never saved."""
    from storyloom.modes.poetry.scan import scan_poem
    from storyloom.tui.screens.poetry import verdict_summary

    poem = _haiku()
    assert verdict_summary(scan_poem(poem.text, poem.form), 3) == "3/3 lines scan"
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await _poetry_with(app, pilot, poem)
        screen = app.screen
        screen.unsaved = True  # as a finished poem is
        screen.action_write()
        await pilot.pause()
        assert screen.poem is poem and not screen.busy
        assert any("not saved" in n.message for n in app._notifications)
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert not screen.unsaved and len(app.poems.list()) == 1


async def test_the_cowrite_info_line_counts_one_turn_in_the_singular(make_app, fake):
    from tests.tui.test_cowrite_app import start_story

    fake.push("Gulls cried.", "Gulls cried.", "Gulls cried.", "Gulls cried.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        info = str(app.screen.query_one("#cowrite-info").render())
        assert info.endswith("· 1 turn"), info  # it read "1 turns"


async def test_the_token_view_says_how_to_pick_and_close_at_120_and_80_columns(make_app, fake):
    """Its one-line help was cut at 120 columns after 'its alternativ': how to continue from an
    alternative and that Esc closes were never on screen."""
    from textual.widgets import Label

    from tests.tui.pilot_helpers import act

    fake.push("Opening.", "The door creaks open slowly.")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        help_label = app.screen.query_one("#token-help", Label)
        assert "Esc closes" in str(help_label.render()) and label_shown_whole(help_label)
        await pilot.resize_terminal(80, 24)
        await settle(app, pilot)
        assert label_shown_whole(help_label)


async def test_settings_labels_and_errors_wrap_at_80_columns(make_app):
    """The model field's label was cut after 'or a serv' (the server syntax and the API key
    variable never shown), and so was a long error under the fields."""
    from textual.widgets import Input, Label

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await pilot.pause()
        first = app.screen.query("#settings > Label").first(Label)
        assert "STORYLOOM_API_KEY" in str(first.render()) and label_shown_whole(first)
        app.screen.query_one("#min_p", Input).value = "1.5"
        app.screen.query_one("#xtc_probability", Input).value = "often"
        await pilot.press("ctrl+s")
        await pilot.pause()
        error = app.screen.query_one("#settings-error", Label)
        error.scroll_visible(animate=False)
        await pilot.pause()
        region, room = error.region, error.parent.content_region
        assert "often" in str(error.render()) and region.right <= room.right


async def test_typing_on_the_candidates_starts_the_players_own_turn(make_app, fake):
    """With candidates on offer (the list focused) a player typed "Mara climbed the stairs":
    nothing reached the write box, and the 'e' of "the" opened an editor over candidate 1 with
    the rest of the sentence typed into it."""
    from textual.widgets import Input

    from storyloom.tui.screens.cowrite import CowriteScreen

    from tests.tui.test_cowrite_app import start_story

    fake.push("Gulls cried.", "Gulls cried.", "Gulls cried.", "Gulls cried.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        assert app.screen.play.story.pending and app.focused.id == "cowrite-candidates"
        await pilot.press(*"Mara climbed the stairs")
        await pilot.pause()
        assert isinstance(app.screen, CowriteScreen)  # no editor opened
        assert app.screen.query_one("#cowrite-write", Input).value == "Mara climbed the stairs"
        app.screen.query_one("#cowrite-candidates").focus()
        await pilot.press("1")  # the list's own keys still work
        await settle(app, pilot)
        assert app.screen.play.story.turns[-1].text == "Gulls cried."


async def test_typing_an_action_on_the_tree_options_goes_to_the_action_box(make_app, fake):
    """Typing "look up" with the options focused: the letters went nowhere."""
    from textual.widgets import Input

    from tests.tui.test_tree_app import ROOT_ACTIONS, new_tree

    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        app.screen.query_one("#tree-options").focus()
        await pilot.press(*"look up")
        await pilot.pause()
        assert app.screen.query_one("#tree-action", Input).value == "look up"


async def test_the_edit_dialog_fits_80x24_with_a_two_line_title(make_app, fake):
    """Editing a co-write candidate at 80x24: the title wraps to two lines and the buttons' lower
    edge fell outside the dialog."""
    from textual.widgets import Button

    from tests.tui.test_cowrite_app import start_story

    fake.push("Gulls cried.", "Gulls cried.", "Gulls cried.", "Gulls cried.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_story(app, pilot)
        await pilot.press("e")
        await settle(app, pilot)
        dialog = app.screen.query_one(".dialog")
        title = app.screen.query("Label").first()
        assert "Esc cancels" in str(title.render()) and label_shown_whole(title)
        for button in app.screen.query(Button):
            assert button.region.bottom <= dialog.content_region.bottom, button.id

"""The action box is kept with the game until its turn is saved: a quit, a kill or a crash
between typing and the saved turn loses nothing the player typed."""
from __future__ import annotations

from textual.widgets import Button, Input

from storyloom.tui.screens.adventure import AdventureScreen

from tests.tui.pilot_helpers import settle, start_knight, transcript_text


async def _open_the_latest_game(app, pilot) -> None:
    await settle(app, pilot)
    await pilot.press("l")
    await pilot.pause()
    await pilot.press("enter")
    await settle(app, pilot)
    assert isinstance(app.screen, AdventureScreen)


async def test_an_unsent_action_is_back_after_quitting(make_app, fake):
    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+t")  # typed as speech
        await pilot.press(*"is anyone there")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.return_code == 0
    game = app.games.latest()
    assert (game.draft, game.draft_kind) == ("is anyone there", "say")
    assert len(game.turns) == 1  # a draft is not a turn

    again = make_app()
    async with again.run_test(size=(100, 32)) as pilot:
        await _open_the_latest_game(again, pilot)
        box = again.screen.query_one("#action", Input)
        assert box.value == "is anyone there" and box.cursor_position == len(box.value)
        assert str(again.screen.query_one("#kind", Button).label) == "Say"
        assert any("not sent is back in the box" in n.message for n in again._notifications)
        await pilot.press("enter")
        await settle(again, pilot)
        assert again.screen.play.game.turns[-1].action == '> You say "is anyone there."'
    game = again.games.latest()
    assert (game.draft, game.draft_kind) == ("", "")


async def test_a_draft_is_saved_a_moment_after_typing_without_any_quit(make_app, fake):
    """A kill gives no chance to save at quit: the box is written shortly after the last key."""
    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        game_id = app.screen.play.game.id
        updated = app.games.load(game_id).updated
        await pilot.press(*"climb the wall")
        assert app.games.load(game_id).draft == ""  # not on every key
        await pilot.pause(1.3)
        saved = app.games.load(game_id)
        assert saved.draft == "climb the wall" and saved.draft_kind == "do"
        assert saved.updated == updated  # a draft does not move the game up the list


async def test_quitting_before_the_model_wrote_anything_keeps_the_action(make_app, fake):
    """Ctrl+Q gave the action back to the box when the model had written nothing yet, and the
    second Ctrl+Q then quit without it."""
    fake.push("Opening.", "The gate creaks open.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        game_id = app.screen.play.game.id
        fake.release.clear()  # the model is slow to start: nothing written yet
        await pilot.press(*"push the gate", "enter")
        await pilot.pause()
        assert app.screen.busy
        assert app.games.load(game_id).draft == "push the gate"  # a kill now would keep it
        await pilot.press("ctrl+q")
        fake.release.set()
        await settle(app, pilot)
        assert app.is_running and not app.screen.busy
        assert app.screen.query_one("#action", Input).value == "push the gate"
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.return_code == 0
    game = app.games.latest()
    assert len(game.turns) == 1 and game.draft == "push the gate"


async def test_a_saved_turn_clears_the_draft_and_keeps_what_was_typed_meanwhile(make_app, fake):
    fake.push("Opening.", "The gate creaks open " + "and on " * 300)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        game_id = app.screen.play.game.id
        fake.delay = 0.03
        await pilot.press(*"push the gate", "enter")
        for _ in range(100):
            await pilot.pause(0.02)
            if "creaks" in transcript_text(app):
                break
        fake.release.clear()  # the model holds mid-turn while the player types on
        await pilot.press(*"then run")
        assert app.screen.busy
        await pilot.pause(1.3)
        assert app.games.load(game_id).draft == "push the gate then run"  # the action, then the rest
        await pilot.press("escape")  # stopped: what was written is kept as the turn
        fake.release.set()
        await settle(app, pilot)
        await pilot.pause(1.3)  # the box's last change is saved a moment later
        saved = app.games.load(game_id)
        assert "You push the gate." in saved.turns[-1].action
        assert app.screen.query_one("#action", Input).value == "then run"
        assert saved.draft == "then run"


async def test_a_cowrite_turn_being_written_is_back_after_quitting(make_app, fake):
    from tests.tui.test_cowrite_app import FRESH, open_saved_story, start_story

    fake.push(*FRESH, "A fourth line.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        await pilot.press("ctrl+t")  # set the candidates aside: the writer takes this turn
        await pilot.press(*"She waited")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.return_code == 0
    assert app.cowrites.load(app.cowrites.list()[0].id).draft == "She waited"

    again = make_app()
    async with again.run_test(size=(100, 36)) as pilot:
        await open_saved_story(again, pilot)
        assert again.screen.query_one("#cowrite-write", Input).value == "She waited"
        again.screen.query_one("#cowrite-write", Input).focus()
        await pilot.press(".", "enter")
        await settle(again, pilot)
        story = again.screen.play.story
        assert story.turns[-1].text == "She waited." and story.draft == ""
    assert again.cowrites.load(story.id).draft == ""


async def test_leaving_with_esc_keeps_the_draft_at_once(make_app, fake):
    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        game_id = app.screen.play.game.id
        await pilot.press(*"light the torch", "escape")  # left before the typing pause was over
        await pilot.pause()
        assert not isinstance(app.screen, AdventureScreen)
        assert app.games.load(game_id).draft == "light the torch"

"""Drive the app like a player, with a scripted model."""
from __future__ import annotations


from storyloom.modes.adventure import PRIMER_SEPARATOR, load_primer
from storyloom.tui.screens.adventure import AdventureScreen
from storyloom.tui.screens.home import HomeScreen

from tests.tui.pilot_helpers import act, settle, start_knight, transcript_text




async def test_play_a_turn_and_see_it_in_the_transcript(make_app, fake):
    fake.push("Wolves howl in the distance. The road is dark.", "The door swings open. Inside, a fire burns.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        assert isinstance(app.screen, AdventureScreen)
        assert "Wolves howl in the distance." in transcript_text(app)
        await act(app, pilot, "open the door")
        text = transcript_text(app)
        assert "> You open the door." in text
        assert "The door swings open. Inside, a fire burns." in text
        # the prompt kept the context sentence (after the primer) and the action
        primer, game = fake.prompts[-1].split(PRIMER_SEPARATOR, 1)
        assert primer == load_primer() and "> You open the chest." in primer
        assert game.startswith("You are Ada, a knight living in the kingdom of Larion.")
        assert fake.prompts[-1].rstrip().endswith("> You open the door.")
        assert "Context:" in str(app.screen.query_one("StatusBar").render())


async def test_say_and_story_actions(make_app, fake):
    fake.push("Opening.", "The guard nods.", "Then it rains.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+t")
        await act(app, pilot, "hello there")
        await pilot.press("ctrl+t")
        await act(app, pilot, "A crow lands on the wall.")
        turns = app.screen.play.game.turns
        assert [t.action for t in turns[1:]] == ['> You say "hello there."', "A crow lands on the wall."]


async def test_undo_redo_retry_alter(make_app, fake):
    fake.push("Opening.", "First answer.", "Second answer, retried.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "look around")
        assert "First answer." in transcript_text(app)
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert "First answer." not in transcript_text(app)
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert "First answer." in transcript_text(app)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        text = transcript_text(app)
        assert "Second answer, retried." in text and "First answer." not in text
        assert fake.prompts[-1].rstrip().endswith("> You look around.")
        await pilot.press("ctrl+e")
        await pilot.pause()
        area = app.screen.query_one("#alter-text")
        area.text = "My own ending."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "My own ending." in transcript_text(app)
        assert app.games.latest().turns[-1].output == "My own ending."


async def test_quit_and_relaunch_restores_the_game(make_app, fake):
    fake.push("Opening.", "A bridge appears.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "cross the river")
    again = make_app()
    async with again.run_test(size=(100, 32)) as pilot:
        await settle(again, pilot)
        assert isinstance(again.screen, HomeScreen)
        await pilot.press("enter")  # "Continue: ..." is the first option
        await settle(again, pilot)
        assert isinstance(again.screen, AdventureScreen)
        text = transcript_text(again)
        assert "> You cross the river." in text and "A bridge appears." in text


async def test_markup_in_model_and_player_text_is_shown_literally(make_app, fake):
    evil = "[bold]x[/bold] and [link=file:///etc/passwd]y[/link]."
    fake.push("Opening.", evil)
    app = make_app()
    async with app.run_test(size=(120, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+t", "ctrl+t")  # Story: raw text
        await act(app, pilot, "[red]danger[/red]")
        text = transcript_text(app)
        assert evil in text
        assert "[red]danger[/red]" in text


async def test_escape_cancels_and_gives_the_action_back(make_app, fake):
    fake.push("Opening.", "This will be cut off " + "and on " * 50)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        fake.release.clear()  # hold the model mid-stream
        await pilot.press(*"wait", "enter")
        await pilot.pause()
        assert app.screen.busy
        await pilot.press("escape")
        fake.release.set()
        await settle(app, pilot)
        assert not app.screen.busy
        assert len(app.screen.play.game.turns) == 1
        assert app.screen.query_one("#action").value == "wait"


async def test_memory_and_world_info_reach_the_prompt(make_app, fake):
    fake.push("Opening.", "Fine.")
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#memory").text = "The princess is your sister."
        app.screen.query_one("#world-info").text = "Grimwald: a haunted fortress."
        await pilot.press("ctrl+s")
        await pilot.pause()
        await act(app, pilot, "ride to Grimwald")
        assert "The princess is your sister." in fake.prompts[-1]
        assert "a haunted fortress" in fake.prompts[-1]
        assert app.games.latest().memory == "The princess is your sister."


async def test_settings_are_validated_saved_and_applied(make_app):
    from storyloom.config import load_config

    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await pilot.pause()
        app.screen.query_one("#temperature").value = "9"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "Temperature must be between 0 and 5" in str(app.screen.query_one("#settings-error").render())
        app.screen.query_one("#temperature").value = "0.4"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.config.sampler.temperature == 0.4
        assert load_config().sampler.temperature == 0.4


async def test_export_markdown(make_app, fake, storyloom_home):
    fake.push("Opening.", "The end.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "bow")
        await pilot.press("ctrl+s")
        await pilot.pause()
    exported = list((storyloom_home / "exports").glob("*.md"))
    assert len(exported) == 1
    text = exported[0].read_text()
    assert text.startswith("# Fantasy: Knight (Ada)") and "**> You bow.**" in text and "The end." in text


async def test_model_failure_is_shown_and_the_app_keeps_running():
    from storyloom import StoryloomError
    from storyloom.tui.app import StoryloomApp

    def broken(spec, progress):
        raise StoryloomError("No GGUF file at /nowhere.gguf.")

    app = StoryloomApp(generator_factory=broken)
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        assert "not loaded" in app.model_status
        assert isinstance(app.screen, AdventureScreen)
        assert not app.screen.busy


async def test_command_palette_lists_the_actions(make_app):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("New adventure", "Load game", "Settings", "Help", "Undo", "Redo", "Retry", "Alter"):
            assert wanted in titles


async def test_a_model_that_only_acts_for_the_player_loses_nothing(make_app, fake):
    fake.push("Opening.", *["> You run away screaming."] * 4)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "wait")
        assert len(app.screen.play.game.turns) == 1  # no empty turn was committed
        assert app.screen.query_one("#action").value == "wait"
        assert "run away" not in transcript_text(app)


async def test_a_long_game_opens_and_plays(make_app, fake):
    from storyloom.store.stories import Game, Turn

    app = make_app()
    game = Game(title="Long", context="You are a sailor.",
                turns=[Turn("start", "The sea is calm.", "Gulls cry.")]
                + [Turn("do", f"> You row {i}.", f"Wave {i} passes.") for i in range(300)])
    fake.push("Land appears on the horizon.")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        app.games.create(game)
        app.open_game(game.id)
        await pilot.pause()
        await act(app, pilot, "row on")
        assert len(app.screen.query(".turn")) == 302
        assert "Land appears on the horizon." in transcript_text(app)
        prompt = next(p for p in reversed(fake.prompts) if "> You row on." in p)  # (then the summary's own)
        assert "Wave 299 passes." in prompt  # recent turns in, the oldest beyond the budget out
        assert "Wave 0 passes." not in prompt
        assert prompt.split(PRIMER_SEPARATOR, 1)[1].startswith("You are a sailor.")
        assert app.games.load(game.id).turns[-1].output == "Land appears on the horizon."


GOOD_TURN = ("The old woman lowers her lantern and points north along the forest road, where the trees grow "
             "thick and dark.")


def _batching(fake):
    from dataclasses import replace

    fake.capabilities = replace(fake.capabilities, batch=True)  # as the local engine: 4 for ~1.5x one
    return fake


async def test_four_candidates_show_progress_stay_responsive_and_the_critic_picks(make_app, fake):
    from storyloom.tui.messages import CandidatesProgress

    _batching(fake)
    opening = ["A dark forest lies ahead, and an old woman waits by the road with a lantern in her hand."] * 4
    fake.push(*opening, "What do you do?", "Sure! Here's your options: 1. Fight 2. Run.", GOOD_TURN,
              "You tell her that you will slay the dragon.")
    seen = []
    app = make_app()
    async with app.run_test(size=(100, 32), message_hook=seen.append) as pilot:
        await start_knight(app, pilot)
        fake.release.clear()  # hold the batch mid-way
        await pilot.press(*"ask the woman", "enter")
        await pilot.pause()
        assert app.screen.busy
        await pilot.press("ctrl+t")  # the screen still answers keys while the batch runs
        await pilot.pause()
        assert str(app.screen.query_one("#kind").label) == "Say"
        fake.release.set()
        await settle(app, pilot)
        assert not app.screen.busy
        assert app.screen.play.game.turns[-1].output == GOOD_TURN
        assert "Sure!" not in transcript_text(app) and GOOD_TURN in transcript_text(app)
        assert any(isinstance(m, CandidatesProgress) for m in seen)
        assert app.screen.last_pick is not None and len(app.screen.last_pick.considered) == 4
        await pilot.press("ctrl+d")
        await pilot.pause()
        shown = str(app.screen.query_one("#verdicts").render())
        assert "ranked by critic" in shown and "assistant" in shown and "for-player" in shown
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, AdventureScreen)


async def test_escape_cancels_a_batch_and_ctrl_k_turns_streaming_back_on(make_app, fake):
    from storyloom.tui.messages import GenerationChunk

    _batching(fake)
    fake.push(*["A dark forest lies ahead, and an old woman waits by the road with a lantern."] * 4)
    seen = []
    app = make_app()
    async with app.run_test(size=(100, 32), message_hook=seen.append) as pilot:
        await start_knight(app, pilot)
        fake.release.clear()
        await pilot.press(*"wait", "enter")
        await pilot.pause()
        await pilot.press("escape")
        fake.release.set()
        await settle(app, pilot)
        assert not app.screen.busy and len(app.screen.play.game.turns) == 1
        assert app.screen.query_one("#action").value == "wait"
        await pilot.press("ctrl+k", "ctrl+k")  # 4 -> 8 -> 1
        assert app.screen.candidates == 1
        fake.push(GOOD_TURN)
        seen.clear()
        await pilot.press("enter")
        await settle(app, pilot)
        assert sum(isinstance(m, GenerationChunk) for m in seen) > 3  # one candidate streams
        assert app.screen.play.game.turns[-1].output == GOOD_TURN


async def test_the_memory_dialogs_buttons_close_it_and_nothing_behind_it(make_app, fake):
    """Save pressed with the keyboard (Tab to it, Enter) saves and returns to the game; the
    Lorebooks button opens the lorebooks over the dialog, which stays. (Save once closed the
    dialog and then the game: Textual ran the button handler of both classes.)"""
    from storyloom.tui.screens.adventure import AdventureScreen
    from storyloom.tui.screens.editors import MemoryScreen
    from storyloom.tui.screens.lore import LoreScreen

    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#memory").text = "You fear spiders."
        app.screen.query_one("#lore").press()
        await pilot.pause()
        assert isinstance(app.screen, LoreScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MemoryScreen)  # still open, with what was typed
        assert app.screen.query_one("#memory").text == "You fear spiders."
        app.screen.query_one("#save").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AdventureScreen)
        assert app.games.latest().memory == "You fear spiders."
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#cancel").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AdventureScreen)


async def test_quitting_while_the_model_writes_keeps_the_turn(make_app, fake):
    """Ctrl+Q while the model wrote a turn quit at once: the action just typed, and what the
    model had written of it, were never saved."""
    fake.push("Opening.", "The gate creaks open " + "and on " * 300)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        fake.delay = 0.03  # a slow model: the turn is still being written when the player quits
        await pilot.press(*"push the gate", "enter")
        for _ in range(100):
            await pilot.pause(0.02)
            if "creaks" in transcript_text(app):
                break
        assert app.screen.busy
        await pilot.press("ctrl+q")
        await settle(app, pilot)
        assert app.is_running and app.return_code is None
        assert any("Ctrl+Q again quits." in n.message for n in app._notifications)
        assert not app.screen.busy
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.return_code == 0
    saved = app.games.latest().turns
    assert "You push the gate." in saved[-1].action
    assert "The gate creaks open" in saved[-1].output

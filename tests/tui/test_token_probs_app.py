"""Token probabilities as a player uses them: open the view, read tokens with percentages, pick
an alternative, see the story go on from it, undo back to the text before."""
from __future__ import annotations

from textual.widgets import OptionList, Static

from storyloom.tui.screens.adventure import AdventureScreen
from storyloom.tui.screens.token_probs import TokenProbsScreen

from tests.tui.pilot_helpers import act, settle, start_knight, transcript_text


def _lines(option_list: OptionList) -> list[str]:
    return [str(option_list.get_option_at_index(i).prompt) for i in range(option_list.option_count)]


async def test_pick_an_alternative_and_the_story_continues_from_it_then_undo(make_app, fake):
    fake.push("Opening.", "The door creaks open slowly.", " and a lantern swings inside.")
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        assert "The door creaks open slowly." in transcript_text(app)
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert isinstance(app.screen, TokenProbsScreen)
        tokens = _lines(app.screen.query_one("#tokens", OptionList))
        assert tokens[0].strip().startswith("40.0%") and tokens[0].endswith("The")
        assert [t.split("%  ")[1] for t in tokens] == ["The", " door", " creaks", " open", " slowly."]
        # the scripted model's alternatives at the second token, best first, with percentages
        await pilot.press("down")
        await pilot.pause()
        alternatives = _lines(app.screen.query_one("#alternatives", OptionList))
        assert len(alternatives) == 10 and alternatives[0].startswith(" 40.0%   door")
        assert alternatives[1].startswith(" 30.0%   suddenly")
        assert "door" in str(app.screen.query_one("#token-text", Static).render())
        # pick " suddenly" in place of " door"
        await pilot.press("right")
        await pilot.press("down")
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, AdventureScreen)
        text = transcript_text(app)
        assert "The suddenly and a lantern swings inside." in text
        assert "creaks" not in text
        # the continuation was asked for after the prompt of that turn plus the new prefix
        assert fake.prompts[-1].endswith("> You open the door.\nThe suddenly")
        assert app.games.latest().turns[-1].output == "The suddenly and a lantern swings inside."
        # undo returns to the text before the branch, then to before the turn
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert "The door creaks open slowly." in transcript_text(app)
        assert app.games.latest().turns[-1].output == "The door creaks open slowly."
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert "creaks" not in transcript_text(app)


async def test_escape_closes_the_view_and_nothing_changes(make_app, fake):
    fake.push("Opening.", "Rain falls.")
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "wait")
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert isinstance(app.screen, TokenProbsScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, AdventureScreen)
        assert app.screen.play.game.turns[-1].output == "Rain falls."


async def test_co_write_a_candidates_tokens_and_a_new_candidate_from_an_alternative(make_app, fake):
    from tests.tui.test_cowrite_app import FRESH, LOOP, candidate_lines, start_story

    fake.push(LOOP, *FRESH, " rope was wet.")
    app = make_app()
    async with app.run_test(size=(110, 40)) as pilot:
        await start_story(app, pilot)
        first = app.screen.play.story.pending[0].text
        await pilot.press("p")  # the highlighted (best) candidate
        await settle(app, pilot)
        assert isinstance(app.screen, TokenProbsScreen)
        tokens = _lines(app.screen.query_one("#tokens", OptionList))
        assert "".join(t.split("%  ", 1)[1] for t in tokens) == first
        await pilot.press("down", "right", "down", "enter")  # second token: the first alternative not in the text
        await settle(app, pilot)
        pending = app.screen.play.story.pending
        picked = first.split(" ")[0] + " suddenly"
        assert pending[0].text == picked + " rope was wet."
        assert candidate_lines(app)[0].startswith("1. " + picked + " rope was wet.")
        assert first in [c.text for c in pending[1:]]  # the others stay on offer
        await pilot.press("ctrl+b")  # the offer before
        await pilot.pause()
        assert app.screen.play.story.pending[0].text == first

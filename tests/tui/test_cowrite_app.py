"""Co-write driven like a writer would, with a scripted model."""
from __future__ import annotations

from textual import events
from textual.widgets import Input, OptionList

from storyloom.tui.app import StoryloomApp
from storyloom.tui.screens.cowrite import CowriteScreen
from storyloom.tui.screens.cowrite_list import CowriteListScreen

from tests.tui.pilot_helpers import settle

OPENING = "The lighthouse keeper had not spoken to anyone in three weeks when the boat arrived."
LOOP = "The lighthouse keeper had not spoken to anyone in three weeks."  # copies the story
FRESH = ["A gull cried over the grey water.", "She tied the rope with cold fingers.",
         "The boat was [bold]empty[/bold] but for a coat."]


async def start_story(app, pilot, title: str = "Keeper", opening: str = OPENING) -> None:
    await settle(app, pilot)
    await pilot.press("c")
    await pilot.pause()
    assert isinstance(app.screen, CowriteListScreen)
    await pilot.press("enter")  # "New story"
    await pilot.pause()
    await pilot.press(*title, "enter")  # title, then on to the premise
    await pilot.press("tab")  # skip the premise: to the opening
    app.post_message(events.Paste(opening))  # writers paste long openings (the terminal sends it to the app)
    await pilot.pause()
    await pilot.press("ctrl+s")
    await settle(app, pilot)


async def start_and_take_the_first(app, pilot) -> None:
    """A new story, and the model's first candidate taken: the writer's turn is next."""
    await start_story(app, pilot)
    await pilot.press("1")
    await pilot.pause()


async def open_saved_story(app, pilot) -> None:
    """Co-write, then the latest saved story (the row below "New story")."""
    await settle(app, pilot)
    await pilot.press("c")
    await pilot.pause()
    await pilot.press("down", "enter")
    await settle(app, pilot)
    assert isinstance(app.screen, CowriteScreen)


def story_lines(app) -> list[str]:
    menu = app.screen.query_one("#cowrite-story", OptionList)
    return [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)]


def candidate_lines(app) -> list[str]:
    menu = app.screen.query_one("#cowrite-candidates", OptionList)
    return [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)]


async def test_candidates_appear_ranked_and_picking_one_adds_a_model_turn(make_app, fake):
    fake.push(LOOP, *FRESH)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        assert isinstance(app.screen, CowriteScreen)
        assert story_lines(app) == ["you\n" + OPENING]
        shown = candidate_lines(app)
        assert len(shown) == 4
        assert shown[-1].startswith("4. " + LOOP)  # the copy of the story ranks last
        assert "repeats 100%" in shown[-1]
        assert any("[bold]empty[/bold]" in line for line in shown)  # model text is never markup
        assert app.focused is app.screen.query_one("#cowrite-candidates")
        second = app.screen.play.story.pending[1].text
        await pilot.press("2")
        await pilot.pause()
        assert story_lines(app)[-1] == "model\n" + second
        assert candidate_lines(app) == []
        assert app.focused is app.screen.query_one("#cowrite-write", Input)


async def test_write_a_turn_reroll_more_and_edit_before_accepting(make_app, fake):
    fake.push("One. ", "Two.", "Three.", "Four.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_and_take_the_first(app, pilot)
        fake.push("Rain began to fall.", "The lamp went out.")
        app.screen.play.set_candidates(2)
        await pilot.press(*"She walked down to the shore.", "enter")
        await settle(app, pilot)
        assert story_lines(app)[-1] == "you\nShe walked down to the shore."
        assert sorted(line.split(". ", 1)[1].split("\n")[0] for line in candidate_lines(app)) == [
            "Rain began to fall.", "The lamp went out."]
        assert fake.prompts[-1].endswith("\n\nShe walked down to the shore.")
        fake.push("A dog barked.", "Night came.")
        await pilot.press("ctrl+r")  # reroll replaces the offer
        await settle(app, pilot)
        texts = [c.text for c in app.screen.play.story.pending]
        assert sorted(texts) == ["A dog barked.", "Night came."]
        await pilot.press("ctrl+b")  # the offer the reroll replaced is still there
        await pilot.pause()
        assert sorted(c.text for c in app.screen.play.story.pending) == ["Rain began to fall.", "The lamp went out."]
        await pilot.press("ctrl+b")  # and back to the newest
        await pilot.pause()
        assert sorted(c.text for c in app.screen.play.story.pending) == texts
        fake.push("Stars rose.", "A bell rang.")
        await pilot.press("ctrl+n")  # more: ranked together with those on offer
        await settle(app, pilot)
        assert len(candidate_lines(app)) == 4
        await pilot.press("e")
        await pilot.pause()
        area = app.screen.query_one("#alter-text")
        area.text = "A dog barked twice, far away."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert story_lines(app)[-1] == "model (edited by you)\nA dog barked twice, far away."


async def test_turns_and_candidates_persist_across_a_restart_and_export_shows_authorship(make_app, fake, storyloom_home):
    fake.push("Gulls cried.", "The tide turned.", "Night fell.", "A bell rang.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        await pilot.press("1")
        await pilot.pause()
        picked = app.screen.play.story.turns[-1].text
        fake.push("Morning came.", "Fog rolled in.", "The radio crackled.", "Nobody answered.")
        await pilot.press(*"She waited.", "enter")
        await settle(app, pilot)
        offered = candidate_lines(app)
        await pilot.press("ctrl+s")
        await pilot.pause()
    exports = sorted((storyloom_home / "exports").iterdir())
    assert [p.suffix for p in exports] == [".md", ".txt"]
    md = exports[0].read_text()
    assert "written by scripted" in md and f"\n*{picked}*\n" in md and "\nShe waited.\n" in md
    assert exports[1].read_text() == f"Keeper\n\n{OPENING}\n\n{picked}\n\nShe waited.\n"

    again = StoryloomApp(generator_factory=lambda spec, progress: fake)
    async with again.run_test(size=(100, 36)) as pilot:
        await open_saved_story(again, pilot)
        assert story_lines(again) == ["you\n" + OPENING, "model\n" + picked, "you\nShe waited."]
        assert candidate_lines(again) == offered  # the offer was saved too: no new generation
        assert len(fake.prompts) == 8


async def test_escape_cancels_and_switch_lets_the_writer_take_the_turn(make_app, fake):
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        fake.push("One.", "Two.", "Three.", "Four.")
        await start_story(app, pilot)
        await pilot.press("ctrl+t")  # set the offer aside: my turn
        await pilot.pause()
        assert candidate_lines(app) == [] and app.screen.play.story.pending == []
        assert app.focused is app.screen.query_one("#cowrite-write", Input)
        fake.release.clear()  # hold the model mid-generation
        await pilot.press("ctrl+t")  # now the model goes
        await pilot.pause()
        assert app.screen.busy
        await pilot.press("escape")
        fake.release.set()
        await settle(app, pilot)
        assert not app.screen.busy and candidate_lines(app) == []
        assert len(app.screen.play.story.turns) == 1
        assert isinstance(app.screen, CowriteScreen)  # Esc stopped the model, it did not leave


async def test_edit_and_remove_earlier_turns_then_undo(make_app, fake):
    fake.push("Gulls cried.", "Gulls cried.", "Gulls cried.", "Gulls cried.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        await pilot.press("1")
        await pilot.pause()
        app.screen.query_one("#cowrite-story").focus()
        await pilot.press("up", "e")  # the opening
        await pilot.pause()
        app.screen.query_one("#alter-text").text = "The keeper had been alone for weeks."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert story_lines(app)[0] == "you\nThe keeper had been alone for weeks."
        await pilot.press("down", "delete")
        await pilot.pause()
        assert story_lines(app) == ["you\nThe keeper had been alone for weeks."]
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert story_lines(app)[-1] == "model\nGulls cried."
        fake.push("Then silence.")
        app.screen.play.set_candidates(1)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert fake.prompts[-1].startswith("Keeper\n\nThe keeper had been alone for weeks.")
        saved = app.cowrites.load(app.screen.play.story.id)
        assert [t.text for t in saved.turns] == ["The keeper had been alone for weeks.", "Gulls cried."]


async def test_a_failed_generation_is_shown_and_nothing_is_lost(make_app, fake):
    fake.push("no sentence end", "still none", "nor here", "nope")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        assert candidate_lines(app) == []
        assert any("no complete sentence" in n.message for n in app._notifications)
        assert story_lines(app) == ["you\n" + OPENING]


async def test_each_candidate_says_what_the_critic_found_and_a_worse_reroll_points_back(make_app, fake):
    fake.push("One. ", "Two.", "Three.", "Four.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_and_take_the_first(app, pilot)
        app.screen.play.set_candidates(2)
        app.screen.play.set_length("sentence")
        fake.push("The keeper watched the boat come in over the grey water.",
                  "The boat bumped against the rocks below the lighthouse.")
        await pilot.press(*"She walked down to the shore.", "enter")
        await settle(app, pilot)
        shown = candidate_lines(app)
        assert len(shown) == 2 and all("critic: pass" in line for line in shown)
        fake.push("This story is getting boring and nothing happens in it.",
                  "Everyone should be more careful with the things they want.")
        await pilot.press("ctrl+r")  # a reroll that came out worse
        await settle(app, pilot)
        shown = candidate_lines(app)
        assert len(shown) == 2 and all("critic: fails (" in line for line in shown)
        assert any("Ctrl+B brings back the candidates they replaced" in n.message for n in app._notifications)
        await pilot.press("ctrl+d")  # why: each candidate with its verdict
        await pilot.pause()
        why = str(app.screen.query_one("#verdicts").render())
        assert "1. " in why and "2. " in why and "FAIL" in why
        await pilot.press("escape")
        await pilot.pause()
        said = len(list(app._notifications))
        fake.push("This story is going nowhere and nothing happens.", "Everyone should be more careful with wishes.")
        await pilot.press("ctrl+r")  # failing again: what Ctrl+B brings back now fails too, so no pointer
        await settle(app, pilot)
        assert not any("Ctrl+B brings back" in n.message for n in list(app._notifications)[said:])
        await pilot.press("ctrl+b", "ctrl+b")  # the failing offer, then the passing one before it
        await pilot.pause()
        assert all("critic: pass" in line for line in candidate_lines(app))
        await pilot.press("ctrl+l")  # a paragraph asked now: these one-sentence candidates are too short
        await pilot.pause()
        assert app.screen.play.story.length == "paragraph"
        assert all("critic: fails (length" in line for line in candidate_lines(app))

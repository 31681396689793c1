"""The poetry screen with a tiny random model: lines appear checked, rewrite, save, reopen, export."""
from __future__ import annotations

from textual.widgets import OptionList, Select

from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.scan import scan_poem
from storyloom.tui.app import StoryloomApp
from storyloom.tui.screens.poetry import PoetryScreen

from tests.tui.pilot_helpers import settle


def lines(app) -> list[str]:
    menu = app.screen.query_one("#poem-lines", OptionList)
    return [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)]


async def write(app, pilot, form: str, topic: str) -> None:
    await settle(app, pilot)
    await pilot.press("p")
    await pilot.pause()
    assert isinstance(app.screen, PoetryScreen)
    app.screen.query_one("#poetry-form", Select).value = form
    await pilot.press(*topic, "enter")
    await settle(app, pilot)


async def test_write_a_poem_and_every_line_is_checked(poet, storyloom_home):
    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    app.config = app.config.with_(sampler=app.config.sampler.with_(seed=4))
    async with app.run_test(size=(110, 36)) as pilot:
        await write(app, pilot, "couplets", "the moon")
        shown = lines(app)
        assert len(shown) == 6 and all(" ✓ " in line for line in shown), shown
        assert "iambic pentameter" in shown[0] and "rhymes with 1" in shown[1]
        assert "lines scan" in str(app.screen.query_one("#poetry-status").render())
        poem = app.screen.poem
        assert scan_poem(poem.text, get_form("couplets")).ok
        before = poem.lines[1].text
        await pilot.press("down", "r")  # rewrite line 2
        await settle(app, pilot)
        assert " ✓ " in lines(app)[1]
        assert scan_poem(app.screen.poem.text, get_form("couplets")).ok
        assert app.screen.poem.lines[1].ok and app.screen.poem.lines[1].text != before  # a new version, still checked
        await pilot.press("ctrl+s")
        await pilot.pause()
        saved_text = app.screen.poem.text
        await pilot.press("ctrl+x")
        await pilot.pause()
    exports = sorted((storyloom_home / "exports").iterdir())
    assert [p.suffix for p in exports] == [".md", ".txt"] and exports[1].read_text() == saved_text

    again = StoryloomApp(generator_factory=lambda spec, progress: poet)
    async with again.run_test(size=(110, 36)) as pilot:
        await settle(again, pilot)
        await pilot.press("p")
        await pilot.pause()
        saved = again.screen.query_one("#poetry-saved", OptionList)
        assert saved.option_count == 1 and "the moon" in str(saved.get_option_at_index(0).prompt)
        saved.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert again.screen.poem.text == saved_text
        assert len(lines(again)) == 6 and all(" ✓ " in line for line in lines(again))
        assert "6/6 lines scan" in str(again.screen.query_one("#poetry-status").render())


async def test_a_model_that_cannot_be_steered_gets_a_clear_message():
    from storyloom.engine.backends.scripted import ScriptedGenerator

    app = StoryloomApp(generator_factory=lambda spec, progress: ScriptedGenerator())
    async with app.run_test(size=(110, 36)) as pilot:
        await write(app, pilot, "haiku", "rain")
        assert any("local model" in n.message for n in app._notifications)
        assert not app.screen.busy


async def test_after_a_line_that_failed_the_next_lines_keep_their_own_checks(poet):
    from storyloom.modes.poetry.compose import Poem, PoemLine

    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    async with app.run_test(size=(110, 36)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await pilot.pause()
        couplets = get_form("couplets")
        screen = app.screen
        screen.poem = Poem(couplets, "x", [PoemLine("", False),
                                           PoemLine("The river ran below the silver light,", True, "light"),
                                           PoemLine("And gentle rain will fall upon the night.", True, "night")])
        screen._show()
        shown = lines(app)
        assert "could not be completed" in shown[0]
        assert "no rhyme with 1" in shown[1]  # line 2's partner is the missing line 1
        assert " ✓ " in shown[2] and "rhymes with 3" not in shown[2]  # line 3 opens its own pair


async def test_the_word_filter_is_a_setting_on_by_default(poet, storyloom_home):
    from textual.widgets import Checkbox

    from storyloom.config import load_config
    from storyloom.modes import wordfilter

    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    try:
        async with app.run_test(size=(100, 40)) as pilot:
            await settle(app, pilot)
            assert app.config.word_filter and wordfilter.enabled()
            await pilot.press("s")
            await pilot.pause()
            box = app.screen.query_one("#word-filter", Checkbox)
            assert box.value is True
            box.value = False
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert app.config.word_filter is False and load_config().word_filter is False
            assert not wordfilter.enabled() and wordfilter.found("damn") == []
    finally:
        wordfilter.set_enabled(True)


async def _ask_for_couplets(app, pilot) -> None:
    await settle(app, pilot)
    await pilot.press("p")
    await pilot.pause()
    app.screen.query_one("#poetry-form", Select).value = "couplets"
    await pilot.press(*"the moon", "enter")


async def test_a_revision_shows_as_it_goes_and_its_line_replaces_the_old(poet, monkeypatch):
    """Once the poem stands, the revision (revise.py) says which line it writes again while it does
    (no silent wait), and a line it keeps replaces the old one in place, the others staying."""
    import asyncio
    import threading

    from storyloom.modes.poetry import revise
    from storyloom.modes.poetry.compose import PoemLine

    going, go_on = threading.Event(), threading.Event()
    new = PoemLine("The river ran below the silver light,", True, "light")

    def revising(generator, vocab, writer, poem, prompt, gauge, settings, seconds, cancel=None, on_revise=None):
        on_revise(1, None)
        going.set()
        assert go_on.wait(30), "the test never saw the revision"
        poem.lines[1] = new
        poem.revisions += 1
        on_revise(1, new)

    monkeypatch.setattr(revise, "revise", revising)
    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    async with app.run_test(size=(110, 36)) as pilot:
        await _ask_for_couplets(app, pilot)
        status = app.screen.query_one("#poetry-status")
        for _ in range(600):
            await pilot.pause()
            if going.is_set() and "Revising" in str(status.render()):
                break
            await asyncio.sleep(0.05)
        assert "Revising" in str(status.render()) and "line 2" in str(status.render())
        before = lines(app)
        assert len(before) == 6 and new.text not in before[1]
        go_on.set()
        await settle(app, pilot)
        after = lines(app)
        assert new.text in after[1] and after[0] == before[0] and after[2:] == before[2:]
        assert "1 line revised" in str(status.render())


async def test_esc_while_revising_keeps_the_poem_and_says_how_it_scans(poet, monkeypatch):
    """Esc during the revision stops it; the poem as it stands is shown with its verdict (a bare
    "Stopped." read as if the poem had been cut short)."""
    import asyncio
    import threading

    from storyloom.modes.poetry import revise

    going = threading.Event()

    def revising(generator, vocab, writer, poem, prompt, gauge, settings, seconds, cancel=None, on_revise=None):
        on_revise(2, None)
        going.set()
        assert cancel.wait(30), "the test never pressed Esc"

    monkeypatch.setattr(revise, "revise", revising)
    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    async with app.run_test(size=(110, 36)) as pilot:
        await _ask_for_couplets(app, pilot)
        for _ in range(600):
            await pilot.pause()
            if going.is_set():
                break
            await asyncio.sleep(0.05)
        await pilot.press("escape")
        await settle(app, pilot)
        status = str(app.screen.query_one("#poetry-status").render())
        assert status.startswith("Stopped: the poem as it stands") and "scan" in status, status
        assert len(lines(app)) == 6 and app.screen.unsaved

"""Lorebooks in the TUI, driven as a player would: import, attach, edit, and see what fired."""
from __future__ import annotations

from pathlib import Path

from textual.widgets import Checkbox, Input, OptionList, Static, TextArea

from storyloom.tui.screens.adventure import AdventureScreen, VerdictScreen
from storyloom.tui.screens.editors import MemoryScreen
from storyloom.tui.screens.lore import EntryScreen, LoreScreen

from tests.tui.pilot_helpers import act, settle, start_knight

DATA = Path(__file__).parent.parent / "data" / "lore"


def options(app, list_id: str) -> list[str]:
    widget = app.screen.query_one(list_id, OptionList)
    return [str(widget.get_option_at_index(i).prompt) for i in range(widget.option_count)]


def shown(app, widget_id: str) -> str:
    return str(app.screen.query_one(widget_id, Static).render())


async def open_lore(app, pilot) -> None:
    await pilot.press("ctrl+o")
    await pilot.pause()
    assert isinstance(app.screen, MemoryScreen)
    await pilot.press("ctrl+l")
    await pilot.pause()
    assert isinstance(app.screen, LoreScreen)


async def submit(app, pilot, input_id: str, value: str) -> None:
    box = app.screen.query_one(input_id, Input)
    box.focus()
    box.value = value
    await pilot.press("enter")
    await pilot.pause()


async def test_import_attach_and_see_which_entries_fired(make_app, fake):
    fake.push("Opening.", "The gates creak.")
    app = make_app()
    async with app.run_test(size=(120, 45)) as pilot:
        await start_knight(app, pilot)
        assert not app.screen.query_one("#lore-line").display  # nothing fired yet: no line
        await open_lore(app, pilot)
        await submit(app, pilot, "#lore-import", str(DATA / "sillytavern_eldoria.json"))
        assert shown(app, "#lore-status").startswith("Imported 5 entries into sillytavern_eldoria (kept 4, mapped 1")
        assert "[ ] sillytavern_eldoria (5)" in options(app, "#lore-books")
        assert any(line.startswith("Castle Varn  [Castle Varn, the castle]") for line in options(app, "#lore-entries"))
        await pilot.press("space")
        await pilot.pause()
        assert "[x] sillytavern_eldoria (5)" in options(app, "#lore-books")
        assert "Attached sillytavern_eldoria" in shown(app, "#lore-status")
        await pilot.press("escape")  # the editor
        await pilot.pause()
        await pilot.press("ctrl+s")  # memory
        await pilot.pause()
        assert isinstance(app.screen, AdventureScreen)
        await act(app, pilot, "ride to the castle")
        assert "Castle Varn is a black fortress" in fake.prompts[-1]
        assert "oaths bind even the dead" in fake.prompts[-1]  # the constant entry
        line = app.screen.query_one("#lore-line", Static)
        assert line.display
        assert "Castle Varn: key 'the castle' in the action" in str(line.render())
        assert "Tone: constant" in str(line.render())
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert isinstance(app.screen, VerdictScreen)
        why = str(app.screen.query_one("#verdicts").render())
        assert "Castle Varn [sillytavern_eldoria]: key 'the castle' in the action" in why
        game_id = app.screen_stack[-2].play.game.id
    assert [b.name for b in app.games.load(game_id).lorebooks] == ["sillytavern_eldoria"]


async def test_edit_an_entry_with_flags_and_it_is_saved(make_app, fake):
    fake.push("Opening.", "Fine.", "Fine again.")
    app = make_app()
    async with app.run_test(size=(120, 45)) as pilot:
        await start_knight(app, pilot)
        await open_lore(app, pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, EntryScreen)
        await pilot.press("ctrl+s")  # nothing written yet: said so, nothing saved
        await pilot.pause()
        assert "Write the entry's text" in shown(app, "#entry-error")
        app.screen.query_one("#entry-keys", Input).value = "Grimwald, /grim ?wald/i"
        app.screen.query_one("#entry-title", Input).value = "The fortress"
        app.screen.query_one("#entry-order", Input).value = "300"
        app.screen.query_one("#entry-text", TextArea).text = "Grimwald is a fortress full of ghosts."
        app.screen.query_one("#flag-case_sensitive", Checkbox).value = True
        app.screen.query_one("#entry-bias", Input).value = "lots"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "Bias must be a number" in shown(app, "#entry-error")
        app.screen.query_one("#entry-bias", Input).value = "1.5"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LoreScreen)
        assert "Saved The fortress." in shown(app, "#lore-status")
        assert "This game (1)" in options(app, "#lore-books")
        await pilot.press("escape")
        await pilot.pause()
        assert "Grimwald, /grim ?wald/i: Grimwald is a fortress" in app.screen.query_one("#world-info", TextArea).text
        await pilot.press("ctrl+s")  # the memory editor keeps the flags set in the entry editor
        await pilot.pause()
        await act(app, pilot, "ride to grim wald")
        assert "full of ghosts" in fake.prompts[-1]  # the regex key (case-insensitive by its /i)
        game = app.games.load(app.screen.play.game.id)
        entry = game.world_info[0]
        assert (entry.keys, entry.order, entry.case_sensitive, entry.comment, entry.bias) == \
            (["Grimwald", "/grim ?wald/i"], 300, True, "The fortress", 1.5)


async def test_a_bad_file_gets_one_sentence_and_a_new_book_can_be_made(make_app, fake, tmp_path):
    fake.push("Opening.")
    bad = tmp_path / "bad.lorebook"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    app = make_app()
    async with app.run_test(size=(120, 45)) as pilot:
        await start_knight(app, pilot)
        await open_lore(app, pilot)
        await submit(app, pilot, "#lore-import", str(bad))
        assert shown(app, "#lore-status") == ("This is a binary file, not a lorebook (SillyTavern, Kobold and "
                                              "NovelAI lorebooks are JSON).")
        await submit(app, pilot, "#lore-new", "My [b]world[/b]")  # markup stays literal
        assert "[ ] My [b]world[/b] (0)" in options(app, "#lore-books")
        assert options(app, "#lore-entries") == ["(no entries: Ctrl+N adds one)"]
        await submit(app, pilot, "#lore-new", "my [B]WORLD[/B]")
        assert "already exists" in shown(app, "#lore-status")
        await settle(app, pilot)

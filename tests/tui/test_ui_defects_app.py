"""Small defects a player saw in a tmux play-through, played through the app."""
from __future__ import annotations

import re

from tests.tui.pilot_helpers import act, settle, start_knight


def status(app) -> str:
    return str(app.screen.query_one("StatusBar").render())


def context_used(app) -> int:
    found = re.search(r"Context: (\d+)/(\d+)", status(app))
    assert found, status(app)
    return int(found.group(1))


def next_prompt_tokens(app) -> int:
    screen = app.screen
    return screen.play.prompt_for("", app.generator, app.config.sampler).tokens


async def test_the_context_count_follows_undo_redo_and_memory_edits(make_app, fake):
    """'Context: 343/2040' stayed as it was after Ctrl+Z and after a memory edit: it showed the
    prompt of the turn already written, not the one the next turn reads."""
    from textual.widgets import TextArea

    fake.push("Opening.", "The door creaks open onto a long hall lit by torches, and dust hangs in the air.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        after_turn = context_used(app)
        assert after_turn == next_prompt_tokens(app)  # the written turn is in the next prompt
        await pilot.press("ctrl+z")
        await settle(app, pilot)
        assert context_used(app) == next_prompt_tokens(app) < after_turn
        await pilot.press("ctrl+y")
        await settle(app, pilot)
        assert context_used(app) == after_turn
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        app.screen.query(TextArea).first().text = "You are a knight sworn to the old queen. " * 5
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert context_used(app) == next_prompt_tokens(app) > after_turn

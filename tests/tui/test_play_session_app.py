"""What a new player met in a tmux play session (100x32 and 80x24), played through the app."""
from __future__ import annotations

from textual.widgets import Static

from storyloom.tui.widgets.transcript import Transcript

from tests.tui.pilot_helpers import act, settle, start_knight


async def test_the_world_info_line_starts_in_the_transcripts_column(make_app, fake):
    """The line that says which world info fired sat against the screen's left edge, one column
    left of the story above it."""
    fake.push("Opening.", "The keep is dark.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#world-info").text = "keep: The keep is the old tower of Larion."
        await pilot.press("ctrl+s")
        await pilot.pause()
        await act(app, pilot, "enter the keep")
        line = app.screen.query_one("#lore-line", Static)
        assert line.display and "keep: key 'keep' in the action" in str(line.render())
        story = app.screen.query_one(Transcript).query(Static).first()
        assert line.content_region.x == story.content_region.x > 0

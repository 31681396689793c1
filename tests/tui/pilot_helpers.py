"""Steps a player takes, shared by the Pilot tests."""
from __future__ import annotations


async def settle(app, pilot) -> None:
    """Let workers finish and their messages land."""
    for _ in range(3):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


async def start_knight(app, pilot, name: str = "Ada") -> None:
    await settle(app, pilot)
    await pilot.press("n")
    await pilot.pause()
    await pilot.press("enter")  # first scenario: Fantasy: Knight
    await pilot.press(*name, "enter")
    await settle(app, pilot)


async def act(app, pilot, text: str) -> None:
    await pilot.press(*text, "enter")
    await settle(app, pilot)


def transcript_text(app) -> str:
    from textual.widgets import Static

    from storyloom.tui.widgets.transcript import Transcript

    return "\n".join(str(s.render()) for s in app.screen.query_one(Transcript).query(Static))

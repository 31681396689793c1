"""Steps a player takes, shared by the Pilot tests."""
from __future__ import annotations


async def settle(app, pilot) -> None:
    """Let workers finish and their messages land.

    A worker in an exclusive group is cancelled when a newer one replaces it (the next-prompt
    count does so on every keystroke); that is the app working, not a failure to wait on.
    """
    from textual.worker import WorkerCancelled

    for _ in range(3):
        await pilot.pause()
        for worker in list(app.workers):
            try:
                await worker.wait()
            except WorkerCancelled:
                pass
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

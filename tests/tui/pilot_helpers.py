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


async def shown(app, pilot, screen_type, timeout: float = 30.0) -> None:
    """Wait until a screen of `screen_type` is on top and settled: on a loaded machine one pause
    after a key was not always enough (a snapshot caught the screen before it)."""
    import time

    deadline = time.monotonic() + timeout
    while not isinstance(app.screen, screen_type):
        assert time.monotonic() < deadline, f"{screen_type.__name__} never showed (at {type(app.screen).__name__})"
        await pilot.pause(0.05)
    await settle(app, pilot)


async def start_knight(app, pilot, name: str = "Ada") -> None:
    from storyloom.tui.screens.adventure import AdventureScreen
    from storyloom.tui.screens.new_game import NewGameScreen

    await settle(app, pilot)
    await pilot.press("n")
    await shown(app, pilot, NewGameScreen)
    await pilot.press("enter")  # first scenario: Fantasy: Knight
    await pilot.press(*name, "enter")
    await shown(app, pilot, AdventureScreen)


async def act(app, pilot, text: str) -> None:
    await pilot.press(*text, "enter")
    await settle(app, pilot)


def transcript_text(app) -> str:
    from textual.widgets import Static

    from storyloom.tui.widgets.transcript import Transcript

    return "\n".join(str(s.render()) for s in app.screen.query_one(Transcript).query(Static))

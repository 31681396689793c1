"""The app on a real server, as a player uses it: Settings shows what answered, a turn is written
remotely, and when the server dies the action goes back to the box with one clear sentence."""
from __future__ import annotations

import pytest
from textual.widgets import Input

from storyloom.tui.app import StoryloomApp
from tests.servers import start_server
from tests.tui.pilot_helpers import act, settle, start_knight, transcript_text

pytestmark = pytest.mark.real_model


async def test_play_on_a_server_then_lose_it(tmp_path):
    server = start_server()
    try:
        app = StoryloomApp(model=server.spec)
        async with app.run_test(size=(110, 36)) as pilot:
            await settle(app, pilot)
            assert app.generator is not None and app.generator.info.backend == "openai"
            assert f"on {server.url} (llama-cpp-python)" in app.model_status
            app.action_settings()
            await pilot.pause()
            shown = str(app.screen.query_one("#model-in-use").render())
            assert "llama-cpp-python" in shown and "grammar" in shown and "no scoring" in shown
            await pilot.press("escape")
            await pilot.pause()

            await start_knight(app, pilot)
            turns = len(app.screen.play.game.turns)
            server.kill()
            await act(app, pilot, "open the door")
            assert len(app.screen.play.game.turns) == turns  # nothing half-written was kept
            assert app.screen.query_one("#action", Input).value == "open the door"  # back in the box
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert any(m.startswith(f"The server at {server.url}") for m in errors), errors
            assert "> You open the door." not in transcript_text(app)
    finally:
        server.stop()

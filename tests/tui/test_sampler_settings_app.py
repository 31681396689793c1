"""The sampler settings and presets in the settings screen, as a player edits them."""
from __future__ import annotations

from textual.widgets import Button, Input, Select

from storyloom.config import load_config
from storyloom.tui.app import StoryloomApp
from tests.fake_openai import FakeServer
from tests.tui.pilot_helpers import settle


async def _open_settings(app, pilot):
    await settle(app, pilot)
    await pilot.press("s")
    await pilot.pause()


async def test_new_samplers_are_checked_by_the_names_on_screen_and_saved(make_app):
    app = make_app()
    async with app.run_test(size=(110, 50)) as pilot:
        await _open_settings(app, pilot)
        box = app.screen.query_one
        box("#min_p", Input).value = "1.5"
        box("#xtc_probability", Input).value = "often"
        box("#dry_sequence_breakers", Input).value = '["\\n", ":"'
        box("#dry_allowed_length", Input).value = "0"
        await pilot.press("ctrl+s")
        await pilot.pause()
        shown = str(box("#settings-error").render())
        assert "Min-p must be 0 (off) or more, and below 1 (got 1.5)" in shown
        assert "XTC probability must be a number (got 'often')" in shown
        assert "DRY sequence breakers is not a valid JSON list" in shown
        assert "DRY allowed length must be between 1 and 50" in shown
        assert box("#min_p", Input).has_class("-invalid")
        box("#min_p", Input).value = "0.05"
        box("#xtc_probability", Input).value = "0.5"
        box("#dry_sequence_breakers", Input).value = '["\\n", ":", "\\"", "*"]'
        box("#dry_allowed_length", Input).value = "3"
        box("#dry_multiplier", Input).value = "0.8"
        box("#banned", Input).value = "shivers down her spine, ozone"
        await pilot.press("ctrl+s")
        await pilot.pause()
        sampler = load_config().sampler
        assert (sampler.min_p, sampler.xtc_probability, sampler.dry_allowed_length) == (0.05, 0.5, 3)
        assert sampler.dry_sequence_breakers == ("\n", ":", '"', "*")
        assert sampler.banned == ("shivers down her spine", "ozone")
        assert app.config.sampler == sampler  # applied without a restart


async def test_a_preset_fills_the_fields_and_the_players_own_is_saved_and_deleted(make_app):
    app = make_app()
    async with app.run_test(size=(110, 50)) as pilot:
        await _open_settings(app, pilot)
        box = app.screen.query_one
        box("#max_new_tokens", Input).value = "120"
        box("#preset", Select).value = "DRY storyteller"
        await pilot.pause()
        assert box("#dry_multiplier", Input).value == "0.8" and box("#min_p", Input).value == "0.05"
        assert box("#max_new_tokens", Input).value == "120"  # the player's own stays
        assert "DRY against looping" in str(box("#settings-error").render())
        box("#temperature", Input).value = "0.7"
        box("#preset-name", Input).value = "precise"
        box("#save-preset", Button).press()
        await pilot.pause()
        assert "built-in preset" in str(box("#settings-error").render())
        box("#preset-name", Input).value = "Night owl"
        box("#save-preset", Button).press()
        await pilot.pause()
        saved = load_config().presets["Night owl"]
        assert saved["temperature"] == 0.7 and saved["dry_multiplier"] == 0.8 and "seed" not in saved
        box("#temperature", Input).value = "1.2"
        box("#preset", Select).value = "Night owl"
        await pilot.pause()
        assert box("#temperature", Input).value == "0.7"
        box("#delete-preset", Button).press()
        await pilot.pause()
        assert "Night owl" not in load_config().presets


async def test_a_remote_server_says_which_samplers_it_will_not_apply():
    with FakeServer("vllm") as fake:
        app = StoryloomApp(model=fake.spec)
        async with app.run_test(size=(110, 50)) as pilot:
            await _open_settings(app, pilot)
            assert "min-p (no DRY, XTC" in str(app.screen.query_one("#model-in-use").render())
            app.screen.query_one("#dry_multiplier", Input).value = "0.8"
            app.screen.query_one("#min_p", Input).value = "0.1"
            await pilot.press("ctrl+s")
            await pilot.pause()
            notes = [n.message for n in app._notifications]
            assert any("will not apply: DRY" in m for m in notes), notes
            await pilot.press("s")
            await pilot.pause()
            assert "will not apply: DRY." in str(app.screen.query_one("#sampler-ignored").render())

"""The context viewer and the background summary, driven like a player with a scripted model."""
from __future__ import annotations

from rich.text import Text

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.tui.app import StoryloomApp
from storyloom.tui.screens.adventure import AdventureScreen
from storyloom.tui.screens.context_view import PART_STYLE, ContextViewScreen

from tests.tui.pilot_helpers import act, settle, start_knight

MARKUP = "The sign reads [bold red]KEEP OUT[/] and [link=x]nothing[/link] more."


def _shown(app, widget_id: str) -> str:
    return str(app.screen.query_one(widget_id).render())


async def test_the_viewer_shows_the_exact_next_prompt_by_part_with_tokens_and_budget(make_app, fake):
    fake.push("Wolves howl in the distance.", MARKUP)
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await start_knight(app, pilot)
        screen = app.screen
        screen.play.game.memory = "You carry your father's [i]sword[/i]."
        await act(app, pilot, "read the sign")
        await pilot.press(*"open the gate")  # typed, not sent: the viewer shows it as the next action
        await pilot.press("f2")
        await settle(app, pilot)
        assert isinstance(app.screen, ContextViewScreen)
        built = app.screen.built
        expected = screen.play.prompt_for("> You open the gate.", fake, app.config.sampler)
        assert built.text == expected.text and built.text.rstrip().endswith("> You open the gate.")
        prompt = _shown(app, "#context-prompt")
        assert prompt == built.text  # exactly what the model will read, markup and all, literally
        assert MARKUP in prompt and "[i]sword[/i]" in prompt
        legend = _shown(app, "#context-legend")
        for name, tokens in built.part_tokens().items():
            label = {"world_info": "world info", "authors_note": "author's note"}.get(name, name)
            assert f"{label}: {tokens:,} tokens" in legend or (name == "primer" and f"{tokens:,} tokens" in legend)
        assert f"Prompt: {built.tokens:,} of {built.budget:,} tokens" in legend
        content = app.screen.query_one("#context-prompt").content
        assert isinstance(content, Text)
        memory_at = built.text.index("You carry your father's")
        assert any(span.start <= memory_at < span.end and span.style == PART_STYLE["memory"]
                   for span in content.spans)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, AdventureScreen)
        assert app.screen.query_one("#action").value == "open the gate"  # nothing typed is lost


class Summariser(ScriptedGenerator):
    """Answers the summary prompt itself (so turn outputs stay in their queue)."""

    def _stream(self, prompt, settings, cancel):
        if "key facts of the text" in prompt:
            self.prompts.append(prompt)
            name = "Bram" if "Bram" in prompt else "the road"
            yield f"You met {name} and walked on."
            return
        yield from super()._stream(prompt, settings, cancel)


async def test_turns_that_fall_out_are_summarised_in_the_background_saved_and_controllable():
    gen = Summariser(default="The road runs on between tall dark pines, and the wind is cold.", context_length=260)
    gen.push("Opening.", "An old shepherd named Bram waves to you from the hill and points north.")
    app = StoryloomApp(generator_factory=lambda spec, progress: gen)
    async with app.run_test(size=(100, 40)) as pilot:
        await start_knight(app, pilot)
        app.screen.play.primer = False
        for i in range(14):
            await act(app, pilot, f"walk north {i}")
        game = app.screen.play.game
        assert app.screen.summary.folds >= 1
        assert "Bram" in game.summary and game.summary_upto >= 4
        assert app.games.load(game.id).summary == game.summary  # saved with the game
        await pilot.press("f2")
        await settle(app, pilot)
        assert "Story so far: You met Bram" in _shown(app, "#context-prompt")
        assert "summary:" in _shown(app, "#context-legend") and "kept up to date" in _shown(app, "#context-legend")
        await pilot.press("p")
        await settle(app, pilot)
        assert game.summary_mode == "pinned" and app.games.load(game.id).summary_mode == "pinned"
        assert "pinned" in _shown(app, "#context-legend")
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#alter-text").text = "You swore to find the [b]lost[/b] bell."
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, ContextViewScreen)
        assert "Story so far: You swore to find the [b]lost[/b] bell." in _shown(app, "#context-prompt")
        await pilot.press("o")
        await settle(app, pilot)
        assert game.summary_mode == "off" and "Story so far" not in _shown(app, "#context-prompt")
        await pilot.press("escape")
        await pilot.pause()
        folds, asked = app.screen.summary.folds, len([p for p in gen.prompts if "key facts" in p])
        for i in range(6):  # off: nothing is summarised any more
            await act(app, pilot, f"walk south {i}")
        assert app.screen.summary.folds == folds
        assert len([p for p in gen.prompts if "key facts" in p]) == asked
        assert app.games.load(game.id).summary == "You swore to find the [b]lost[/b] bell."

"""A new player's tree list holds the starter trees, and they read without the model."""
from __future__ import annotations

from textual.widgets import OptionList, Static

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.store import starters
from storyloom.tui.app import StoryloomApp
from storyloom.tui.screens.home import HomeScreen
from storyloom.tui.screens.tree_list import TreeListScreen
from storyloom.tui.screens.tree_play import TreePlayScreen

from tests.tui.pilot_helpers import settle
from tests.tui.test_tree_app import options, outcome

GULL_ROCK = "The Lighthouse on Gull Rock"


class NoModel(ScriptedGenerator):
    """Records, then fails, any generation: reading a starter's cached branches needs none."""

    def _stream(self, prompt, settings, cancel):
        self.prompts.append(prompt)
        raise AssertionError(f"the model was asked to write after {prompt[-60:]!r}")


def list_labels(app) -> list[str]:
    menu = app.screen.query_one("#trees", OptionList)
    return [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)]


async def test_a_fresh_app_lists_the_starters_and_reads_one_without_the_model():
    model = NoModel()
    app = StoryloomApp(generator_factory=lambda spec, progress: model)  # a fresh STORYLOOM_HOME
    async with app.run_test(size=(100, 36)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await settle(app, pilot)
        assert isinstance(app.screen, TreeListScreen)
        labels = list_labels(app)
        row = next(i for i, label in enumerate(labels) if label.startswith(GULL_ROCK))
        assert "22 passages, depth 3" in labels[row] and "·  starter" in labels[row]
        assert any(label.startswith("The Midnight Market") and "·  starter" in label for label in labels)
        await pilot.press(*["down"] * row, "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, TreePlayScreen) and app.screen.sub_title == GULL_ROCK
        assert outcome(app).startswith("The storm has thrown itself at Gull Rock since noon.")
        assert [o.split("   ")[0] for o in options(app)] == [
            "1. Climb the stairs to the lamp room.", "2. Knock on the keeper's door again.",
            "3. Go down to the boat landing."]
        assert not any("new: the model writes it" in o for o in options(app))
        await pilot.press("1")
        await settle(app, pilot)
        assert outcome(app).startswith("One hundred and twelve steps later, you unlock the lamp room")
        assert [o.split("   ")[0] for o in options(app)] == [
            "1. Light the wick from your lantern.", "2. Signal the ship with your lantern."]
        await pilot.press("2")
        await settle(app, pilot)
        assert outcome(app).startswith("You hold the lantern against the cracked pane")
        stats = str(app.screen.query_one("#tree-stats", Static).render())
        assert "2 from cache, 0 generated" in stats
    assert model.prompts == []  # read-ahead was on (the default) and found nothing to write


async def test_a_starter_the_player_deleted_is_not_back_on_the_next_launch(make_app, monkeypatch):
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await settle(app, pilot)
        row = next(i for i, label in enumerate(list_labels(app)) if label.startswith(GULL_ROCK))
        await pilot.press(*["down"] * row, "delete")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert not any(label.startswith(GULL_ROCK) for label in list_labels(app))
    again = make_app()
    async with again.run_test(size=(100, 36)) as pilot:
        await settle(again, pilot)
        await pilot.press("t")
        await settle(again, pilot)
        labels = list_labels(again)
        assert not any(label.startswith(GULL_ROCK) for label in labels)
        assert any(label.startswith("The Midnight Market") for label in labels)


async def test_the_app_starts_when_no_starter_can_be_imported(make_app, monkeypatch, tmp_path):
    broken = tmp_path / "trees"
    broken.mkdir()
    (broken / "bad.twee").write_text("not a Twee story")
    monkeypatch.setattr(starters, "starters_folder", lambda: broken)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("t")
        await settle(app, pilot)
        assert list_labels(app) == ["New tree", "Import a pack or Twine story"]

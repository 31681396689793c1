"""Story trees driven like a player would, with a scripted model."""
from __future__ import annotations


import json

from textual import events
from textual.widgets import OptionList, Static, Tree

from storyloom.store.starters import starter_ids
from storyloom.store.trees import Tree as TreeRow
from storyloom.tui.app import StoryloomApp
from storyloom.tui.screens.tree_browse import TreeBrowseScreen
from storyloom.tui.screens.tree_list import TreeListScreen
from storyloom.tui.screens.tree_play import TreePlayScreen

from tests.tui.pilot_helpers import settle




OPENING = "You stand at the gate of a ruined castle, under its old wall."  # every root action acts on what is here
ROOT_ACTIONS = ["You knock on the gate.", "You climb the wall.", "You walk away.", "You call out.", "You wait."]


async def new_tree(app, pilot, pregenerate: bool = False) -> None:
    app.pregenerate = pregenerate
    await settle(app, pilot)
    await pilot.press("t")
    await pilot.pause()
    assert isinstance(app.screen, TreeListScreen)
    await pilot.press("enter")  # "New tree"
    await pilot.pause()
    await pilot.press(*"Castle", "tab", "tab")  # title, skip the scenario, to the opening
    app.post_message(events.Paste(OPENING))
    await pilot.pause()
    await pilot.press("ctrl+s")
    await settle(app, pilot)


def options(app) -> list[str]:
    menu = app.screen.query_one("#tree-options", OptionList)
    return [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)]


def outcome(app) -> str:
    return str(app.screen.query_one("#tree-outcome", Static).render())


async def test_a_miss_generates_once_and_the_same_choice_later_is_served_from_the_cache(make_app, fake):
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        assert isinstance(app.screen, TreePlayScreen)
        assert outcome(app) == OPENING
        assert [o.split("   ")[0] for o in options(app)] == [
            "1. Knock on the gate.", "2. Climb the wall.", "3. Walk away.", "4. Call out.", "5. Wait."]
        assert all("new: the model writes it" in o for o in options(app))
        fake.push("The stones are slick, but you reach the top.", *[f"You try thing {i}." for i in range(5)])
        await pilot.press("2")
        await settle(app, pilot)
        assert outcome(app) == "The stones are slick, but you reach the top."
        assert "Climb the wall." in str(app.screen.query_one("#tree-crumbs", Static).render())
        assert options(app)[0].startswith("1. Try thing 0.")
        calls = len(fake.prompts)
        await pilot.press("b")  # back to the gate
        await pilot.pause()
        assert outcome(app) == OPENING
        assert "chosen 1" in options(app)[0] and "Climb the wall." in options(app)[0]  # chosen once: ranks first
        await pilot.press("1")
        await settle(app, pilot)
        assert outcome(app) == "The stones are slick, but you reach the top."
        assert len(fake.prompts) == calls  # a cache hit: no model call
        stats = str(app.screen.query_one("#tree-stats", Static).render())
        assert "1 from cache, 1 generated (50% hits, 1 generation saved)" in stats


async def test_votes_rank_and_hide_options_and_voting_again_takes_it_back(make_app, fake):
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        await pilot.press("down", "down", "plus")  # upvote "Walk away."
        await pilot.pause()
        assert options(app)[0].startswith("1. Walk away.") and "votes +1 -0 (you: +)" in options(app)[0]
        assert app.screen.query_one("#tree-options", OptionList).highlighted == 0  # the cursor follows it
        await pilot.press("plus")  # again: the vote is taken back
        await pilot.pause()
        assert "votes +0 -0" in options(app)[0] and "you:" not in options(app)[0]
        store, play = app.trees, app.screen.play
        wait = next(o for o in play.options() if o.action == "Wait.")
        for voter in ("a", "b", "c"):
            store.vote(wait.id, voter, -1)
        app.screen._show()
        await pilot.pause()
        assert not any("Wait." in o for o in options(app))
        assert "1 downvoted hidden" in str(app.screen.query_one("#tree-options-label").render())
        await pilot.press("h")
        await pilot.pause()
        assert any("Wait." in o and "hidden (downvoted)" in o for o in options(app))


async def test_own_action_and_hand_written_outcome(make_app, fake):
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        await pilot.press("w")  # write the outcome of option 1 by hand
        await pilot.pause()
        app.screen.query_one("#alter-text").text = "The gate opens by itself."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "new: the model writes it" not in options(app)[0]
        fake.push("You dig until your hands bleed. There is a tunnel.", *[f"You crawl {i} feet." for i in range(5)])
        await pilot.press("a", *"dig under the wall", "enter")
        await settle(app, pilot)
        assert outcome(app) == "You dig until your hands bleed. There is a tunnel."
        node = app.screen.play.node
        assert node.action == "Dig under the wall" and node.outcome.startswith("You dig")
        assert fake.prompts[-6].rstrip().endswith("> You dig under the wall.")


async def test_reading_ahead_makes_the_next_choice_instant(make_app, fake):
    fake.push(*ROOT_ACTIONS, "Nobody answers the knock.", "The wall is too high.", "You leave.",
              *[f"You knock {i} times." for i in range(5)])
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot, pregenerate=True)
        await settle(app, pilot)
        assert sum("new: the model writes it" in o for o in options(app)) == 2  # top 3 written ahead
        assert "3 written ahead" in str(app.screen.query_one("#tree-stats", Static).render())
        calls = len(fake.prompts)
        app.pregenerate = False
        await pilot.press("1")
        await settle(app, pilot)
        assert outcome(app) == "Nobody answers the knock."
        assert len(fake.prompts) == calls + 5  # only the new options; the outcome was already there


async def test_browse_the_tree_and_jump_back_into_play(make_app, fake):
    fake.push(*ROOT_ACTIONS, "You are on the wall.", *[f"You jump {i}." for i in range(5)])
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        await pilot.press("ctrl+k")  # bookmark
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert isinstance(app.screen, TreeBrowseScreen)
        tree = app.screen.query_one(Tree)
        assert tree.cursor_node.data.action == "Climb the wall."
        assert str(tree.cursor_node.label).startswith("★ ")
        assert "You are on the wall." in str(app.screen.query_one("#browse-preview", Static).render())
        await pilot.press("up")  # the root
        await pilot.pause()
        assert tree.cursor_node.data.parent_id is None
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, TreePlayScreen) and outcome(app) == OPENING


async def test_export_then_import_into_a_new_home_and_a_bad_pack_changes_nothing(make_app, fake, storyloom_home, tmp_path, monkeypatch):
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("down", "down", "x")  # the tree, below "New tree" and "Import"
        await pilot.pause()
    exported = sorted((storyloom_home / "exports").iterdir())
    assert [p.suffix for p in exported] == [".json", ".twee"]
    pack = json.loads(exported[0].read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**pack, "nodes": pack["nodes"][1:]}))

    monkeypatch.setenv("STORYLOOM_HOME", str(tmp_path / "elsewhere"))
    again = StoryloomApp(generator_factory=lambda spec, progress: fake)
    async with again.run_test(size=(100, 36)) as pilot:
        await settle(again, pilot)
        await pilot.press("t", "i")
        await pilot.pause()
        await pilot.press(*str(bad), "enter")
        await pilot.pause()
        assert any("Nothing was imported" in n.message and "root" in n.message for n in again._notifications)
        shipped = starter_ids(again.trees)  # the starter trees a new home begins with
        assert [t for t in again.trees.public_trees() if t.id not in shipped] == []
        await pilot.press("i")
        await pilot.pause()
        await pilot.press(*str(exported[0]), "enter")
        await pilot.pause()
        trees = [t for t in again.trees.public_trees() if t.id not in shipped]
        assert [t.title for t in trees] == ["Castle"]
        assert again.trees.stats(trees[0].id)["nodes"] == 6


async def test_private_trees_are_listed_only_for_their_owner(make_app, fake):
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        app.trees.create(TreeRow("Mine", visibility="private", owner="player"), "Secret start.")
        app.trees.create(TreeRow("Theirs", visibility="private", owner="someone"), "Their start.")
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        menu = app.screen.query_one("#trees", OptionList)
        labels = [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)]
        assert any("Mine" in lbl and "private" in lbl for lbl in labels)
        assert not any("Theirs" in lbl for lbl in labels)


async def test_link_an_option_to_an_existing_passage_from_the_browser(make_app, fake):
    fake.push(*ROOT_ACTIONS, "You are on the wall.", *[f"You jump {i}." for i in range(5)])
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        await pilot.press("2")  # on the wall
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.pause()
        await pilot.press("up", "l")  # the start: link to it from the wall
        await pilot.pause()
        app.screen.query_one("#alter-text").text = "Climb back down to the gate."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, TreePlayScreen)
        link = next(o for o in options(app) if "Climb back down" in o)
        assert "leads back into the tree" in link
        number = options(app).index(link) + 1
        calls = len(fake.prompts)
        await pilot.press(str(number))
        await settle(app, pilot)
        assert outcome(app) == OPENING and len(fake.prompts) == calls  # the jump is served, no model call


async def test_importing_your_own_export_back_does_not_count_your_vote_twice(make_app, fake, storyloom_home):
    """Found in tmux play: vote -, export (x), import the same file (i): "1 votes counted" and
    the option read "votes +0 -1 (you: -) · +0/-1 from packs"."""
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        await pilot.press("minus")  # downvote "Knock on the gate."
        await pilot.pause()
        knock = next(o for o in options(app) if "Knock on the gate." in o)
        assert "votes +0 -1 (you: -)" in knock and "from packs" not in knock
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("down", "down", "x")  # the tree, below "New tree" and "Import"
        await settle(app, pilot)
        pack = next(p for p in (storyloom_home / "exports").iterdir() if p.suffix == ".json")
        await pilot.press("i")
        await pilot.pause()
        await pilot.press(*str(pack), "enter")
        await settle(app, pilot)
        said = [n.message for n in app._notifications if n.title == "Import"]
        assert said and "0 votes counted (1 of its votes were cast here and are counted already)" in said[-1]
        tree = app.trees.public_trees()[0]
        app.open_tree(tree.id)
        await settle(app, pilot)
        knock = next(o for o in options(app) if "Knock on the gate." in o)
        assert "votes +0 -1 (you: -)" in knock and "from packs" not in knock


async def test_an_own_action_typed_and_not_sent_is_kept_with_its_passage(make_app, fake):
    """The own-action box kept nothing: typed at a passage, a quit (or a move) lost it."""
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        root = app.screen.play.node.id
        await pilot.press("a", *"ring the old bell")
        await pilot.pause(1.3)  # a moment after the last key, with no quit: a kill keeps it too
        assert app.trees.draft(root, app.config.player) == "ring the old bell"
        fake.push("The stones are slick, but you reach the top.", *[f"You try thing {i}." for i in range(5)])
        await pilot.press("escape", "2")  # to another passage: the box is that passage's, empty
        await settle(app, pilot)
        box = app.screen.query_one("#tree-action")
        assert app.screen.play.node.id != root and box.value == ""
        await pilot.press("a", *"jump down")
        await pilot.press("escape", "b")  # back at the gate before the pause: both kept
        await pilot.pause()
        assert box.value == "ring the old bell"
        assert app.trees.draft(root, app.config.player) == "ring the old bell"
        await pilot.press("ctrl+q")
        await pilot.pause()
    child = next(k for k in app.trees.children(root) if k.action == "Climb the wall.")
    assert app.trees.draft(child.id, app.config.player) == "jump down"

    again = make_app()
    async with again.run_test(size=(100, 36)) as pilot:
        await settle(again, pilot)
        again.open_tree(again.trees.public_trees()[0].id)
        await settle(again, pilot)
        box = again.screen.query_one("#tree-action")
        assert box.value == "ring the old bell"
        assert any("not sent is back in the box" in n.message for n in again._notifications)
        fake.push("The bell booms over the hills.", *[f"You hear thing {i}." for i in range(5)])
        await pilot.press("a", "enter")  # sent: it is an option now, and the gate keeps no draft
        await settle(again, pilot)
        assert again.screen.play.node.action == "Ring the old bell"
        assert again.trees.draft(root, again.config.player) == ""

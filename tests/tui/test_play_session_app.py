"""What a new player met in a tmux play session (100x32 and 80x24), played through the app."""
from __future__ import annotations

from textual.widgets import Static

from storyloom.tui.widgets.transcript import Transcript

from tests.tui.pilot_helpers import act, settle, start_knight, transcript_text


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


async def _help_keys(app, pilot) -> list:
    await settle(app, pilot)
    await pilot.press("f1")
    await pilot.pause()
    await pilot.pause()
    cells = [c for c in app.screen.query("MarkdownTableCellContents") if (c.name or "").endswith(".1")]
    assert len(cells) > 30  # every key of every table
    return cells


async def test_the_help_screens_keys_each_fit_on_one_line(make_app):
    """The key column was 8 wide: 'Ctrl+Z / Ctrl+Y' took three rows ('Ctrl+Z', '/', 'Ctrl+Y') and
    'Enter on an empty box' four, beside a one-line action."""
    for size in ((100, 32), (80, 24)):
        app = make_app()
        async with app.run_test(size=size) as pilot:
            for cell in await _help_keys(app, pilot):
                shown = [str(line.text).strip() for line in cell.render_lines(cell.region.reset_offset)]
                assert [line for line in shown if line] == [str(cell.render()).strip()], size


def buttons_shown_whole(screen) -> list[str]:
    """The buttons whose label and border do not fit inside their row (cut at its right edge)."""
    from textual.widgets import Button

    cut = []
    for button in screen.query(Button):
        if button.display and button.region.right > button.parent.content_region.right:
            cut.append(str(button.label))
    return cut


async def test_the_preset_buttons_fit_80_columns(make_app):
    """'Save as preset' and 'Delete preset' ran off the right edge of the settings at 80 (and
    100) columns, beside a 60-column name box."""
    for size in ((80, 24), (100, 32)):
        app = make_app()
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            await pilot.press("s")
            await pilot.pause()
            assert buttons_shown_whole(app.screen) == [], size


async def test_the_hint_over_ten_tree_options_fits_80_columns(make_app):
    """With ten options the hint above them ended 'w write outcom', cut at the 80th column."""
    from storyloom.store.trees import Tree

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tree = Tree("Castle")
        root = app.trees.create(tree, "You stand at the gate.")
        app.trees.add_children(root, [f"Try door {i}." for i in range(1, 11)], "human")
        app.open_tree(tree.id)
        await settle(app, pilot)
        app.screen.action_toggle_hidden()  # every option, not the top five
        await pilot.pause()
        label = app.screen.query_one("#tree-options-label")
        hint = str(label.render())
        assert hint.startswith("What do you do? (1-9, 0/Enter") and hint.endswith("w write outcome)")
        assert label.region.right <= app.screen.size.width


async def test_a_passage_never_offers_the_action_that_led_to_it(make_app, fake):
    """After 'Stand up.' the next passage offered 'Stand up.' again, first of its options."""
    from tests.tui.test_tree_app import ROOT_ACTIONS, new_tree, options

    fake.push(*ROOT_ACTIONS)
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await new_tree(app, pilot)
        fake.push("The stones are slick, but you reach the top.", "You climb the wall.",
                  *[f"You try thing {i}." for i in range(6)])
        await pilot.press("2")  # Climb the wall.
        await settle(app, pilot)
        shown = [o.split("   ")[0] for o in options(app)]
        assert shown == [f"{i + 1}. Try thing {i}." for i in range(5)]


async def test_the_exported_story_reads_as_the_transcript_does(make_app, fake, storyloom_home):
    """The export put the opening's prompt and the model's continuation in two paragraphs, so it
    broke mid-sentence ('Ahead of you,' / 'a dragon lands.'), and a Story turn's words apart
    from what the model wrote after them."""
    fake.push("a dragon lands on the road.", "It breathes fire.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("ctrl+t", "ctrl+t")  # Story
        await act(app, pilot, "The wolf howls.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        shown = transcript_text(app)
    text = next((storyloom_home / "exports").glob("*.md")).read_text()
    paragraphs = text.strip().split("\n\n")
    opening = next(p for p in paragraphs if p.startswith("You are on a quest"))
    assert opening.endswith("Ahead of you, a dragon lands on the road.") and opening in shown
    assert "The wolf howls. It breathes fire." in paragraphs and "The wolf howls. It breathes fire." in shown


async def test_a_turn_with_nothing_usable_says_so_once(make_app, fake):
    """Eight candidates that were all the player's next move gave two notices at once, the
    critic's count ('8 drawn in 2 batch(es): 8 empty, 0 judged') and 'it tried to act for you'."""
    from dataclasses import replace

    from storyloom.engine.backends.scripted import ScriptedGenerator

    fake.push("Opening.", *["> You run away."] * 8)
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        fake.capabilities = replace(ScriptedGenerator.capabilities, batch=True)  # 4 candidates a turn
        app._notifications.clear()
        await act(app, pilot, "wait")
        said = [n.message for n in app._notifications]
        assert len(said) == 1 and said[0].startswith("The model wrote nothing usable this time")
        assert "Ctrl+D shows why" in said[0]
        assert app.screen.query_one("#action").value == "wait"  # the action is back in the box
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert "8 drawn in 2 batch(es): 8 empty" in str(app.screen.query_one("#verdicts").render())


async def test_a_custom_adventure_keeps_the_players_name_and_a_whole_word_title(make_app, fake):
    """The name typed for a custom opening was dropped without a word, and the title was the
    opening cut at 40 characters mid-word ('You wake in a lighthouse. The lamp is ou')."""
    from textual import events
    from textual.widgets import OptionList

    fake.push("The beam sweeps the water.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        menu = app.screen.query_one("#scenarios", OptionList)
        menu.highlighted = menu.option_count - 1  # Custom: write your own opening
        await pilot.pause()
        app.screen.query_one("#player-name").value = "Ada"
        app.screen.query_one("#custom-prompt").focus()
        app.post_message(events.Paste("You wake in a lighthouse. The lamp is out and a ship is coming."))
        await pilot.pause()
        app.screen.query_one("#start").press()
        await settle(app, pilot)
        assert app.screen.sub_title == "You wake in a lighthouse. The lamp is… (Ada)"
        assert "Your name is Ada." in fake.prompts[-1]


async def test_the_cowrite_story_shows_its_latest_turn_beside_the_candidates(make_app, fake):
    """At 80x24 the candidates took most of the screen, and the story above them showed its
    first turn: the turn they continue was out of sight (the list had scrolled to its end while
    it was tall, then shrank)."""
    from tests.tui.test_cowrite_app import FRESH, OPENING, start_story, story_lines

    fake.push(*FRESH, "The boat was empty.", *FRESH, "A fourth.", *FRESH, "A fifth.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_story(app, pilot, opening=" ".join([OPENING] * 3))
        await pilot.press("1")
        await pilot.pause()
        await pilot.press(*"She waited by the door.", "enter")
        await settle(app, pilot)
        assert story_lines(app)[-1] == "you\nShe waited by the door."
        turns = app.screen.query_one("#cowrite-story")
        assert app.screen.query_one("#cowrite-candidates").display
        assert turns.max_scroll_y > 0 and turns.scroll_y == turns.max_scroll_y


async def test_undoing_a_pick_offers_its_candidates_again(make_app, fake, storyloom_home):
    """Ctrl+Z after picking the wrong candidate took the turn back and lost the other three:
    'No earlier candidates for this turn', only a new roll of the model."""
    from storyloom.store.cowrite import CowriteStore
    from storyloom.store.db import open_db

    from tests.tui.test_cowrite_app import FRESH, candidate_lines, start_story, story_lines

    fake.push(*FRESH, "The boat was empty.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_story(app, pilot)
        offered = candidate_lines(app)
        await pilot.press("3")
        await pilot.pause()
        assert len(story_lines(app)) == 2 and not app.screen.query_one("#cowrite-candidates").display
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert len(story_lines(app)) == 1
        assert candidate_lines(app) == offered
        assert app.focused is app.screen.query_one("#cowrite-candidates")
        story_id = app.screen.play.story.id
        await pilot.press("1")
        await pilot.pause()
        assert story_lines(app)[-1] == "model\n" + offered[0].split("\n")[0][3:]
    saved = CowriteStore(open_db(storyloom_home / "storyloom.db")).load(story_id)
    assert len(saved.turns) == 2 and saved.pending == []


async def test_leaving_poetry_with_an_unsaved_poem_asks_once(poet, storyloom_home):
    """Esc on a poem just written went straight home, and the poem was gone: every other mode
    saves as it goes, so nothing said it would be lost."""
    from storyloom.tui.app import StoryloomApp
    from storyloom.tui.screens.home import HomeScreen
    from storyloom.tui.screens.poetry import PoetryScreen

    from tests.tui.test_poetry_app import write

    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    app.config = app.config.with_(sampler=app.config.sampler.with_(seed=4))
    async with app.run_test(size=(80, 24)) as pilot:
        await write(app, pilot, "couplets", "the moon")
        assert app.screen.poem.lines
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, PoetryScreen)
        assert app._notifications and "Esc again leaves without it." in list(app._notifications)[-1].message
        await pilot.press("ctrl+s")  # saved: Esc leaves at once
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen) and len(app.poems.list()) == 1
        await pilot.press("p")
        await pilot.pause()
        await pilot.press(*"the sea", "enter")
        await settle(app, pilot)
        await pilot.press("escape", "escape")  # told once, then it goes
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen) and len(app.poems.list()) == 1


async def test_continue_counts_one_turn_as_one_turn(make_app, fake):
    """A game with only its opening was offered as 'Continue: ...  (1 turns)'."""
    from textual.widgets import OptionList

    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        first = str(app.screen.query_one("#home-menu", OptionList).get_option_at_index(0).prompt)
        assert first == "Continue: Fantasy: Knight (Ada)  (1 turn)"


async def test_poetry_does_not_show_another_modes_context(poet, storyloom_home):
    """Writing a poem after an adventure, the status bar said 'Context: 30/2040 tokens' and the
    adventure's speed: numbers of a prompt poetry never sends."""
    from storyloom.engine.backends.scripted import ScriptedGenerator
    from storyloom.tui.app import StoryloomApp
    from storyloom.tui.widgets.status_bar import StatusBar

    fake = ScriptedGenerator(["Opening.", "The door opens."])
    app = StoryloomApp(generator_factory=lambda spec, progress: fake)
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        assert "Context: " in str(app.screen.query_one(StatusBar).render())
        await pilot.press("escape")
        await pilot.pause()
        app.generator = poet
        app.config = app.config.with_(sampler=app.config.sampler.with_(seed=4))
        await pilot.press("p")
        await pilot.pause()
        await pilot.press(*"the moon", "enter")  # the poem's "writing" claims the status bar
        await settle(app, pilot)
        assert app.usage_screen is app.screen
        shown = str(app.screen.query_one(StatusBar).render())
        assert "Context" not in shown and "tok/s" not in shown, shown


async def test_a_continued_turn_reads_apart_from_the_one_before_in_the_prompt(make_app, fake):
    """Enter alone lets the story go on; in the next prompt that passage ran on from the one
    before it with no space ('...offer it a golden cup.A very old man steps in')."""
    fake.push("Opening.", "You offer it a golden cup.", "A very old man steps in.", "He bows.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "wait")
        await act(app, pilot, "")  # Enter alone
        await act(app, pilot, "bow")
        assert "golden cup.\nA very old man steps in.\n> You bow." in fake.prompts[-1]
        assert "cup.A" not in fake.prompts[-1]


async def test_the_import_dialogs_button_says_import(make_app):
    """The tree import dialog's button said 'Save' beside the path of a file to read."""
    from textual.widgets import Button

    from storyloom.tui.screens.tree_list import ImportDialog

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("down", "enter")  # "Import a pack or Twine story"
        await pilot.pause()
        assert isinstance(app.screen, ImportDialog)
        assert [str(b.label) for b in app.screen.query(Button)] == ["Import", "Cancel"]


async def test_a_custom_rhyme_scheme_from_the_poetry_screen(poet, storyloom_home):
    """The command line took --scheme, --meter and --feet; the poetry screen offered only the
    five named forms."""
    from textual.widgets import Input, Select

    from storyloom.tui.app import StoryloomApp

    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    app.config = app.config.with_(sampler=app.config.sampler.with_(seed=4))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await pilot.pause()
        scheme = app.screen.query_one("#poetry-scheme", Input)
        assert not scheme.display  # only for a custom form
        app.screen.query_one("#poetry-form", Select).value = "custom"
        await pilot.pause()
        assert scheme.display and app.focused is scheme and "e.g. ABAB CDCD iambic 4" in scheme.placeholder
        await pilot.press(*"AABB iambik 3", "enter")
        await pilot.pause()
        assert "Unknown meter 'iambik'" in list(app._notifications)[-1].message
        assert scheme.value == "AABB iambik 3" and app.screen.poem is None  # nothing lost, nothing written
        scheme.value = "AABB trochaic 3"
        app.screen.query_one("#poetry-topic", Input).value = "the moon"
        await pilot.press("enter")
        await settle(app, pilot)
        poem = app.screen.poem
        assert (poem.form.scheme, poem.form.meter, poem.form.feet) == ("AABB", "trochaic", (3, 3, 3, 3))
        assert len(poem.lines) == 4
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.poems.list()[0].title.startswith("Custom AABB")


async def test_quitting_with_an_unsaved_poem_asks_once(poet, storyloom_home):
    """Ctrl+Q on a poem just written quit at once, and the poem was gone."""
    from storyloom.tui.app import StoryloomApp

    from tests.tui.test_poetry_app import write

    app = StoryloomApp(generator_factory=lambda spec, progress: poet)
    app.config = app.config.with_(sampler=app.config.sampler.with_(seed=4))
    async with app.run_test(size=(80, 24)) as pilot:
        await write(app, pilot, "couplets", "the moon")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.is_running and app.return_code is None
        assert "Ctrl+Q again quits without it." in list(app._notifications)[-1].message
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.return_code == 0


async def test_a_failed_import_keeps_the_path_that_was_typed(make_app, tmp_path):
    """A mistyped path gave 'Nothing was imported. Cannot read ...' and the path was gone: the
    next import started from an empty box."""
    from textual.widgets import Input

    from storyloom.tui.screens.tree_list import ImportDialog

    typed = str(tmp_path / "the-castle.jsn")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("i")
        await pilot.pause()
        app.screen.query_one("#import-path", Input).value = typed
        await pilot.press("enter")
        await settle(app, pilot)
        assert "Nothing was imported." in list(app._notifications)[-1].message
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, ImportDialog) and app.screen.query_one("#import-path", Input).value == typed


async def test_the_breadcrumbs_keep_the_step_just_taken_in_80_columns(make_app):
    """Three long steps into a tree the crumbs ran past the 80th column: the step just taken
    (where the player is) was the part cut off."""
    from storyloom.store.trees import Tree
    from storyloom.tui.screens.tree_play import Crumbs

    steps = ["Climb the stairs to the lamp room.", "Light the wick from your lantern.",
             "Go down and search the rowing boat."]
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tree = Tree("Gull Rock")
        node = app.trees.create(tree, "The storm has thrown itself at Gull Rock since noon.")
        for step in steps:
            node = app.trees.add_children(node, [step], "human")[0]
            app.trees.rewrite_outcome(node.id, f"After: {step}", "human")
        app.open_tree(tree.id)
        await settle(app, pilot)
        for _ in steps:
            await pilot.press("1")
            await settle(app, pilot)
        crumbs = app.screen.query_one("#tree-crumbs", Crumbs)
        shown = str(crumbs.render())
        assert shown.endswith("› Go down and search the rowing boat.") and shown.startswith("…")
        assert len(shown) <= crumbs.content_region.width
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        assert str(crumbs.render()).startswith("Start › Climb the stairs")  # room again: all of it

"""Small defects a player saw in a tmux play-through, played through the app."""
from __future__ import annotations

import re

from tests.tui.pilot_helpers import act, settle, start_knight


def status(app) -> str:
    return str(app.screen.query_one("StatusBar").render())


def context_used(app) -> int:
    found = re.search(r"Context: (\d+)/(\d+)", status(app))
    assert found, status(app)
    return int(found.group(1))


def next_prompt_tokens(app) -> int:
    screen = app.screen
    return screen.play.prompt_for("", app.generator, app.config.sampler).tokens


async def test_the_context_count_follows_undo_redo_and_memory_edits(make_app, fake):
    """'Context: 343/2040' stayed as it was after Ctrl+Z and after a memory edit: it showed the
    prompt of the turn already written, not the one the next turn reads."""
    from textual.widgets import TextArea

    fake.push("Opening.", "The door creaks open onto a long hall lit by torches, and dust hangs in the air.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await act(app, pilot, "open the door")
        after_turn = context_used(app)
        assert after_turn == next_prompt_tokens(app)  # the written turn is in the next prompt
        await pilot.press("ctrl+z")
        await settle(app, pilot)
        assert context_used(app) == next_prompt_tokens(app) < after_turn
        await pilot.press("ctrl+y")
        await settle(app, pilot)
        assert context_used(app) == after_turn
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        app.screen.query(TextArea).first().text = "You are a knight sworn to the old queen. " * 5
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert context_used(app) == next_prompt_tokens(app) > after_turn


async def test_the_world_info_editors_fit_80_columns(make_app, fake):
    """At 80x24 the lorebook import hint was cut ('...Kobold or NovelA'), and in an entry the
    order, scan-depth and bias boxes were pushed past the dialog's edge (Tab went to boxes no one
    could see), the last flag cut in half."""
    from textual.widgets import Checkbox, Input, Label

    from storyloom.tui.screens.lore import EntryScreen, LoreScreen
    from tests.tui.test_play_findings_app import label_shown_whole

    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_knight(app, pilot)
        app.screen.action_lore()
        await settle(app, pilot)
        assert isinstance(app.screen, LoreScreen)
        for box in app.screen.query(Input):
            assert len(box.placeholder) <= box.content_region.width, box.placeholder
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert isinstance(app.screen, EntryScreen)
        room = app.screen.query_one(".dialog").scrollable_content_region  # inside its scroll bar
        for widget in [*app.screen.query(Input), *app.screen.query(Checkbox)]:
            widget.scroll_visible(animate=False)
            await pilot.pause()
            assert widget.region.width > 0 and widget.region.right <= room.right, widget.id
        for label in app.screen.query(Label):
            label.scroll_visible(animate=False)
            await pilot.pause()
            assert label_shown_whole(label), label.render()


def toasts(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_export_and_delete_on_the_new_rows_say_why_nothing_happens(make_app, fake):
    """x and Delete on the 'New tree' and 'New story' rows (and on an empty list of saved games)
    did nothing and said nothing."""
    from storyloom.store.cowrite import CoStory

    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        for home_key, row in (("t", "tree"), ("c", "story")):
            await pilot.press(home_key)
            await settle(app, pilot)
            for key, verb in (("x", "export"), ("delete", "delete")):
                before = len(toasts(app))
                await pilot.press(key)
                await pilot.pause()
                said = toasts(app)[before:]
                assert said and f"Nothing to {verb}" in said[-1], (row, key, said)
            await pilot.press("escape")
            await pilot.pause()
        await pilot.press("l")
        await settle(app, pilot)
        assert "no saved games yet" in str(app.screen.query_one("#games").get_option_at_index(0).prompt)
        await pilot.press("delete")
        await pilot.pause()
        assert "Nothing to delete yet" in toasts(app)[-1]
        await pilot.press("escape")
        app.cowrites.create(CoStory("The Keeper"))
        await pilot.press("c")
        await settle(app, pilot)
        await pilot.press("delete")  # on "New story", with a story below it
        await pilot.pause()
        assert "highlight a story first" in toasts(app)[-1]


async def test_a_saved_game_of_one_turn_says_turn(make_app, fake):
    """The saved-games list said 'Fantasy: Knight (Ada)  ·  1 turns'."""
    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("l")
        await settle(app, pilot)
        row = str(app.screen.query_one("#games").get_option_at_index(0).prompt)
        assert "·  1 turn  ·" in row, row


def label_text(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def test_the_number_keys_hint_says_the_keys_that_work(make_app, fake):
    """'1-9/Enter choose' showed over 3 options (7 did nothing, silently) and over 12 (no key
    reached the tenth)."""
    from storyloom.store.trees import Tree

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tree = Tree("Castle")
        root = app.trees.create(tree, "You stand at the gate.")
        app.trees.add_children(root, ["Knock.", "Climb.", "Wait."], "human")
        app.open_tree(tree.id)
        await settle(app, pilot)
        assert "(1-3/Enter choose ·" in label_text(app, "#tree-options-label")
        await pilot.press("7")
        await pilot.pause()
        assert "There is no option 7 here: 1-3/Enter chooses." in toasts(app)[-1]
        app.trees.add_children(root, [f"Try door {i}." for i in range(4, 11)], "human")  # ten options
        app.screen.action_toggle_hidden()  # h: every option, not the top five
        await pilot.pause()
        assert "(1-9, 0/Enter ·" in label_text(app, "#tree-options-label")
        menu = app.screen.query_one("#tree-options")
        tenth = app.trees.node(menu.get_option_at_index(9).id).action
        await pilot.press("0")
        await settle(app, pilot)
        assert app.screen.play.node.action == tenth
        await pilot.press("ctrl+b")
        app.trees.add_children(root, ["Try door 11.", "Try door 12."], "human")
        app.screen._show()
        await pilot.pause()
        hint = label_text(app, "#tree-options-label")
        assert "(1-9, 0, ↑↓ Enter ·" in hint and hint.endswith("w write outcome)")
        label = app.screen.query_one("#tree-options-label")
        assert label.region.right <= app.screen.size.width and len(hint) <= label.content_region.width


async def test_the_cowrite_pick_hint_counts_the_candidates(make_app, fake):
    from storyloom.store.cowrite import Candidate, CoStory

    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        story = CoStory("The Keeper", pending=[Candidate(t, 1.0) for t in ("The lamp went out.", "A gull cried.",
                                                                             "Rain came.")])
        app.cowrites.create(story)
        app.open_cowrite(story.id)
        await settle(app, pilot)
        assert "Best first: 1-3/Enter picks" in label_text(app, "#cowrite-candidates-label")
        await pilot.press("5")
        await pilot.pause()
        assert "There is no candidate 5: 1-3/Enter picks." in toasts(app)[-1]


async def test_the_status_bar_fits_80_columns_while_writing(make_app, fake):
    """At 80 columns the line read 'Model: SmolLM2-135M-Instruct ready  │  writing… (Esc stops)  │
    Context:' (the count cut off), and after a turn the tok/s was cut to '101.5'."""
    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_knight(app, pilot)
        app.model_status = "SmolLM2-135M-Instruct ready"
        fake.release.clear()
        await pilot.press(*"open the door", "enter")
        for _ in range(5):
            await pilot.pause()
        app.activity = "writing: 42 tokens, 18.3 tok/s (Esc stops)"  # as the stream says it
        await pilot.pause()
        bar = app.screen.query_one("StatusBar")
        line = str(bar.render())
        assert "writing: 42 tokens, 18.3 tok/s (Esc stops)" in line and re.search(r"Context: \d+/\d+", line)
        assert len(line) <= bar.content_region.width, line
        fake.release.set()
        await settle(app, pilot)
        app.speed = "101.5"
        await pilot.pause()
        line = str(bar.render())
        assert "101.5 tok/s" in line and "SmolLM2-135M-Instruct" in line and len(line) <= bar.content_region.width


async def test_the_why_view_is_a_box_that_scrolls_at_80x24(make_app, fake):
    """Ctrl+D / Ctrl+L printed their text bare over the transcript (it read as part of the story),
    and eight candidates' verdicts ran off the bottom of 24 rows, out of reach."""
    from storyloom.tui.screens.adventure import VerdictScreen

    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_knight(app, pilot)
        explanation = "\n".join(f"*{i}. pass (relevance 0.{i})\n    'Candidate text number {i}.'" for i in range(1, 21))
        app.push_screen(VerdictScreen(explanation))
        await settle(app, pilot)
        box = app.screen.query_one("#verdict-box")
        assert box.region.bottom <= app.screen.size.height and box.region.y > 0
        assert str(box.styles.background) != str(app.screen.styles.background)  # a box of its own
        await pilot.press("end")
        await pilot.pause()
        assert box.scroll_y == box.max_scroll_y > 0  # the last verdicts can be read
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, VerdictScreen)


async def test_the_poetry_screen_says_how_to_start_at_80x24(make_app):
    """At 80x24 the topic hint was cut ('Topic, e.g. the sea at'), the empty saved-poems list
    was a blank box, and nothing on the screen said to press Enter."""
    from textual.widgets import Input

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await settle(app, pilot)
        topic = app.screen.query_one("#poetry-topic", Input)
        assert len(topic.placeholder) <= topic.content_region.width, topic.placeholder
        assert "press Enter" in label_text(app, "#poetry-status")
        saved = app.screen.query_one("#poetry-saved")
        assert "none yet" in str(saved.get_option_at_index(0).prompt)


def shown_text(widget) -> str:
    """The widget's text as the terminal shows it, its lines joined and spaces squeezed."""
    from textual.geometry import Region

    lines = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return " ".join(" ".join(strip.text.replace("▊", " ").replace("▎", " ").split()) for strip in lines)


async def test_an_option_that_wraps_under_a_scroll_bar_keeps_its_last_word(make_app, fake):
    """At 80x24, once the options needed a scroll bar, option 3 read '...votes +0 -0 · chosen'
    and its '0' was gone (its height measured without the bar, its text wrapped with it)."""
    from storyloom.store.trees import Tree

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.pregenerate = False
        tree = Tree("The Castle", scenario="Dark fantasy.")
        root = app.trees.create(tree, "You stand at the gate of a ruined castle. Rain falls.")
        kids = app.trees.add_children(root, ["Look around.", "Glance about.",
                                             "Look around to find someone who looks like you.",
                                             "Look up into the battlements.",
                                             "Look around at the people standing before you."], "m")
        for kid in kids[:3] + kids[4:]:
            app.trees.set_outcome(kid.id, "Rain.", "m")
        app.open_tree(tree.id)
        await settle(app, pilot)
        menu = app.screen.query_one("#tree-options")
        assert "looks like you. votes +0 -0 · chosen 0 4. Look up" in shown_text(menu)
        await pilot.resize_terminal(140, 45)  # room for all: no empty row kept under the last
        await settle(app, pilot)
        assert menu.region.height == menu.virtual_size.height + 2  # the rows and the border


async def test_the_tree_browser_title_fits_80_columns(make_app, fake):
    """The header read 'StoryLoom — The Castle (Enter or p plays from the highlighted…'."""
    from storyloom.store.trees import Tree

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.pregenerate = False
        tree = Tree("The Castle")
        root = app.trees.create(tree, "You stand at the gate.")
        app.trees.add_children(root, ["Knock."], "human")
        app.open_tree(tree.id)
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        header = shown_text(app.screen.query_one("HeaderTitle"))
        assert f"StoryLoom — {app.screen.sub_title}" in header and "Enter plays" in header, header


async def test_a_bad_setting_says_not_saved_where_it_can_be_seen_at_80x24(make_app):
    """Ctrl+S with 'abc' as the temperature did nothing visible at 80x24: the error was written
    under the fields, off screen; and the screen opened with no field focused (typing did nothing)."""
    from textual.widgets import Input

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await settle(app, pilot)
        assert app.focused is app.screen.query_one("#model", Input)
        app.screen.query_one("#temperature", Input).value = "abc"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert any(t.startswith("Not saved. Temperature") for t in toasts(app)), toasts(app)
        error = app.screen.query_one("#settings-error")
        assert 0 < error.region.y < app.screen.size.height and "Temperature" in str(error.render())


async def test_what_was_typed_while_the_model_wrote_survives_a_stop(make_app, fake):
    """Typing the next action while the model wrote, then Esc: 'your action is back in the box'
    put the stopped action there and the new words were gone."""
    from textual.widgets import Input

    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        fake.release.clear()  # the model has not written a word yet
        await pilot.press(*"open the door", "enter")
        await pilot.pause()
        await pilot.press(*"then run")
        await pilot.press("escape")
        fake.release.set()
        await settle(app, pilot)
        box = app.screen.query_one("#action", Input)
        assert box.value == "open the door then run" and box.cursor_position == len(box.value)


async def test_fast_typing_on_the_candidates_keeps_every_letter(make_app, fake):
    """Typed at terminal speed (tmux), "The keeper climbed the stairs" reached the write box as
    "Th kr climbd th stairs": the keys after the first came before the box had focus, and each
    'e' went to the list's Edit key."""
    from textual import events
    from textual.widgets import Input

    from storyloom.tui.screens.cowrite import CowriteScreen
    from tests.tui.test_cowrite_app import start_story

    fake.push("Gulls cried.", "Gulls cried.", "Gulls cried.", "Gulls cried.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        assert app.screen.play.story.pending and app.focused.id == "cowrite-candidates"
        for ch in "The keeper climbed the stairs":  # no pause between keys, as a terminal sends them
            app.post_message(events.Key("space" if ch == " " else ch, ch))
        await settle(app, pilot)
        assert isinstance(app.screen, CowriteScreen)  # no editor opened
        assert app.screen.query_one("#cowrite-write", Input).value == "The keeper climbed the stairs"


async def test_the_custom_adventure_form_fits_80x24(make_app):
    """'Context: who you are, always kept in m' was cut at the pane's edge."""
    from textual.widgets import Button, Label

    from tests.tui.test_play_findings_app import label_shown_whole

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("n")
        await settle(app, pilot)
        await pilot.press("end", "enter")  # Custom: write your own opening
        await settle(app, pilot)
        for label in app.screen.query(Label):
            if label.display:
                assert label_shown_whole(label), label.render()
        start = app.screen.query_one(Button)
        assert start.region.height and start.region.bottom <= app.screen.size.height - 2  # above the status bar


async def test_the_kind_button_leaves_the_action_box_its_room(make_app, fake):
    """The Do/Say/Story button took 18 of 80 columns (Button's min-width beat its width of 9)."""
    fake.push("Opening.")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start_knight(app, pilot)
        kind = app.screen.query_one("#kind")
        assert kind.region.width <= 9 and app.screen.query_one("#action").region.width >= 66
        for label in ("Say", "Story"):
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert label in shown_text(kind)


async def test_the_cowrite_context_count_follows_a_pick_and_an_undo(make_app, fake):
    """Co-write's 'Context: 25/2040' stayed at the prompt of the turn just offered after the
    writer picked a candidate (and after Ctrl+Z): the next turn's prompt holds the picked one."""
    from tests.tui.test_cowrite_app import FRESH, start_story

    fake.push(*FRESH, "A fourth line about the tide.")
    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await start_story(app, pilot)
        offered = context_used(app)
        await pilot.press("1")
        await settle(app, pilot)
        picked = context_used(app)
        assert picked == app.screen.play.prompt_for(app.generator, app.config.sampler).tokens > offered
        await pilot.press("ctrl+z")
        await settle(app, pilot)
        assert context_used(app) == app.screen.play.prompt_for(app.generator, app.config.sampler).tokens < picked

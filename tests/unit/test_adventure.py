"""Adventure mode without a UI: actions, clean-up, context budget, turns and the store."""
from __future__ import annotations

import pytest

from storyloom import StoryloomError
from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import adventure as adv
from storyloom.modes.adventure import Adventure, Restart, TokenCounter, build_prompt, clean_output
from storyloom.store.db import DatabaseBusy, open_db
from storyloom.store.stories import Game, GameStore, Turn, WorldEntry


@pytest.mark.parametrize(
    "kind,text,expected",
    [("do", "> open the door", "> You open the door."),
     ("do", "I draw my sword and raise it at myself", "> You draw your sword and raise it at yourself."),
     ("do", "you run!", "> You run!"),
     ("say", "hello", '> You say "hello."'),
     ("say", '"Who goes there?"', '> You say "Who goes there?"'),
     ("story", "The wind howls.", "The wind howls.")],
)
def test_actions_are_written_in_second_person(kind, text, expected):
    assert adv.format_action(kind, text) == expected


@pytest.mark.parametrize(
    "raw,action,expected",
    [(" The door creaks open. A cold wind blows.\n> You go inside", "", "The door creaks open. A cold wind blows."),
     ("The goblin laughs. You draw your sw", "", "The goblin laughs."),
     ("You open the door. The hall is empty.", "> You open the door.", "The hall is empty."),
     ('He says "Run!" and you', "", 'He says "Run!"'),
     ("It rains.<|im_end|>assistant\nsure", "", "It rains."),
     ("The cat sleeps. > look around", "", "The cat sleeps."),
     ("no end at all", "", "no end at all")],
)
def test_clean_up(raw, action, expected):
    assert clean_output(raw, action) == expected


def test_loop_guard_spots_near_repeats():
    earlier = ["The dragon roars and breathes fire at you, burning the grass around your feet."]
    assert adv.is_repeat("The dragon roars and breathes fire at you, burning the grass near your feet.", earlier)
    assert not adv.is_repeat("You duck behind a rock and the flames pass over your head.", earlier)


def _long_game(turns: int) -> Game:
    game = Game(title="long", context="You are Ada, a knight of Larion with a silver sword.",
                memory="Ada swore to protect the princess.", authors_note="Write in a gloomy style.",
                world_info=[WorldEntry(["Grimwald"], "Grimwald is a ruined fortress full of ghosts."),
                            WorldEntry(["dragon"], "The dragon Vex sleeps under the mountain.")],
                turns=[Turn("start", "Your quest begins.", "The road is long.")])
    for i in range(turns):
        game.turns.append(Turn("do", f"> You walk north for the {i}th time.",
                               f"Turn {i}: trees and more trees line the road, and birds sing above."))
    return game


def test_context_stays_in_budget_over_500_turns_and_keeps_what_must_stay():
    counter = TokenCounter(lambda s: len(s.split()))
    game = _long_game(0)
    for i in range(500):
        built = build_prompt(game, "> You ride toward Grimwald.", counter, 200)
        assert built.tokens <= 200, i
        assert built.text.startswith(game.context)
        assert "Ada swore to protect the princess." in built.text
        assert "Grimwald is a ruined fortress" in built.text  # triggered by the action
        assert "dragon Vex" not in built.text  # not mentioned recently
        assert built.text.rstrip().endswith("> You ride toward Grimwald.")
        game.turns.append(Turn("do", f"> You walk north for the {i}th time.", f"Turn {i}: the road goes on and on."))
    assert "Turn 499" in built.text or "Turn 498" in built.text
    assert "Turn 3:" not in built.text
    assert built.text.index("[Author's note: Write in a gloomy style.]") > built.text.index("Turn 49")


def test_context_budget_with_a_real_tokenizer_and_huge_inputs(tiny):
    counter = TokenCounter(tiny.count_tokens)
    game = _long_game(300)
    game.memory = "Remember the oath. " * 400
    built = build_prompt(game, "> You shout " + "very " * 500 + "loudly.", counter, 180)
    assert tiny.count_tokens(built.text) <= 180
    assert built.text.startswith("You are Ada")
    assert built.text.rstrip().endswith("loudly.")


def test_world_info_triggered_by_recent_turns():
    game = _long_game(2)
    game.turns.append(Turn("do", "> You look up.", "A dragon circles the tower."))
    built = build_prompt(game, "> You hide.", TokenCounter(lambda s: len(s.split())), 500)
    assert "dragon Vex" in built.text


def test_generate_retries_when_the_output_repeats():
    game = _long_game(1)
    gen = ScriptedGenerator([game.turns[-1].output + " Yes.", "A fox runs across the road."])
    play = Adventure(game)
    events, output = adv.run(play.generate("prompt", "> You wait.", gen, SamplerSettings()))
    assert any(isinstance(e, Restart) for e in events)
    assert output == "A fox runs across the road."
    assert len(gen.prompts) == 2


def test_turns_persist_and_undo_redo_survive_reload(tmp_path):
    db = open_db(tmp_path / "s.db")
    store = GameStore(db)
    setting = adv.load_scenarios()[0]
    game = adv.new_game(setting, setting.characters[0], "Ada")
    assert "You are Ada, a knight" in game.context
    store.create(game)
    play = Adventure(game, store)
    play.commit_opening("A wolf howls.")
    for i in range(3):
        turn = play.begin("do", f"step {i}")
        turn.output = f"Output {i}."
        play.commit(turn)
    play.undo()
    play.undo()
    again = GameStore(open_db(tmp_path / "s.db")).load(game.id)
    assert [t.output for t in again.turns] == ["A wolf howls.", "Output 0."]
    assert [t.output for t in again.undone] == ["Output 2.", "Output 1."]
    resumed = Adventure(again, GameStore(open_db(tmp_path / "s.db")))
    assert resumed.redo().output == "Output 1."
    resumed.replace_last_output("Altered.")
    third = GameStore(open_db(tmp_path / "s.db")).latest()
    assert [t.output for t in third.turns] == ["A wolf howls.", "Output 0.", "Altered."]
    new = resumed.begin("say", "hi")
    new.output = "They wave."
    resumed.commit(new)  # a new action drops the redo stack
    fourth = GameStore(open_db(tmp_path / "s.db")).load(game.id)
    assert fourth.undone == [] and fourth.turns[-1].action == '> You say "hi."'


def test_markdown_export_and_bad_actions():
    game = _long_game(1)
    play = Adventure(game)
    md = play.to_markdown()
    assert md.startswith("# long") and "**> You walk north for the 0th time.**" in md
    with pytest.raises(StoryloomError):
        play.begin("do", "   ")
    with pytest.raises(StoryloomError):
        adv.custom_game("  ")


def test_every_scenario_is_complete():
    settings = adv.load_scenarios()
    assert len(settings) >= 5
    for s in settings:
        assert s.characters
        for c in s.characters:
            g = adv.new_game(s, c)
            assert g.context.startswith("You are ") and ", " not in g.context[:9] and "{name}" not in g.context + g.turns[0].action


def test_a_regenerated_opening_is_saved_to_the_opening_row(tmp_path):
    """An opening left empty (model failed) and regenerated later, after more turns, lands on turn 0."""
    store = GameStore(open_db(tmp_path / "o.db"))
    game = adv.custom_game("The ship sinks.")
    store.create(game)
    play = Adventure(game, store)
    turn = play.begin("do", "swim")
    turn.output = "You reach a raft."
    play.commit(turn)
    play.commit_opening("Water pours in.")
    saved = store.load(game.id)
    assert [t.output for t in saved.turns] == ["Water pours in.", "You reach a raft."]


# -- sample-and-rank -------------------------------------------------------------------------
GOOD = ("The old woman lowers her lantern and points north along the forest road, where the trees grow "
        "thick and dark.")


def _knight_play() -> Adventure:
    game = Game(title="t", context="You are a knight of Larion.", turns=[
        Turn("start", "You reach the edge of a dark forest. An old woman waits with a lantern.", "")])
    return Adventure(game)


def test_candidates_are_drawn_in_one_batch_and_the_critic_picks_the_good_one():
    play = _knight_play()
    gen = ScriptedGenerator(["What do you do?", "Sure! Here's your options: 1. Fight 2. Run.",
                             GOOD, "You tell her that you will kill the dragon of the forest tonight."])
    events, output = adv.run(play.generate("prompt", "> You ask the woman.", gen, SamplerSettings(), candidates=4))
    assert output == GOOD
    assert len(gen.prompts) == 4 and not gen.queue  # one batch of four
    picked = [e for e in events if isinstance(e, adv.Picked)][-1]
    assert picked.verdict.passed and picked.text == GOOD and len(picked.considered) == 4
    assert "assistant" in picked.explain() and "for-player" in picked.explain()
    assert any(isinstance(e, adv.Progress) for e in events)


def test_when_no_candidate_passes_it_draws_again_then_shows_the_best_with_a_note():
    play = _knight_play()
    gen = ScriptedGenerator(["What now?"] * 2 + ["The woman nods."] * 2 + ["Hmm."] * 4)
    events, output = adv.run(play.generate("prompt", "> You wait.", gen, SamplerSettings(), candidates=2))
    picked = [e for e in events if isinstance(e, adv.Picked)][-1]
    assert picked.batches == adv.REDRAWS + 1 and len(gen.prompts) == 2 * (adv.REDRAWS + 1)
    assert any(isinstance(e, Restart) for e in events)
    assert not picked.verdict.passed and picked.note and output == "The woman nods."


def test_a_redraw_that_passes_wins_over_the_first_batch():
    play = _knight_play()
    gen = ScriptedGenerator(["The woman nods."] * 2 + [GOOD, "What now?"])
    _, output = adv.run(play.generate("prompt", "> You wait.", gen, SamplerSettings(), candidates=2))
    assert output == GOOD


def test_one_candidate_still_streams_and_reports_a_verdict():
    play = _knight_play()
    gen = ScriptedGenerator([GOOD])
    events, output = adv.run(play.generate("prompt", "> You wait.", gen, SamplerSettings(), candidates=1))
    assert output == GOOD and sum(isinstance(e, adv.Chunk) for e in events) > 3
    assert [e for e in events if isinstance(e, adv.Picked)][-1].verdict.passed


def test_model_rank_breaks_ties_among_passing_candidates_by_pmi():
    play = _knight_play()
    other = ("The woman lifts her lantern higher, and in its light you see a narrow path winding into the "
             "forest.")
    gen = ScriptedGenerator([GOOD, other])
    gen.score_many = lambda prompt, texts: [len(t) / 100 if prompt != "\n" else 0.0 for t in texts]
    events, output = adv.run(play.generate("prompt", "> You wait.", gen, SamplerSettings(), candidates=2,
                                           model_rank=True))
    picked = [e for e in events if isinstance(e, adv.Picked)][-1]
    assert picked.ranked_by.startswith("critic + model")
    assert output == max((GOOD, other), key=len)


@pytest.mark.parametrize("raw,expected", [
    ("> The map shows two stones by the old tree, and a path leads north.", "The map shows two stones by the old tree, and a path leads north."),
    ("> You place it on the ground.", ""),
    ("The woman waits.\n1. Fight\n2. Run", "The woman waits."),
    ("The woman waits.\n+ 4:30:25\n- 1:00:02", "The woman waits."),
    ("The woman waits by the road. What do you do?", "The woman waits by the road."),
    # played (space engineer): the model quizzing the player in a paragraph of its own
    ('Someone speaks up: "I want to find you!"\n\nWhat does the metal box look like?',
     'Someone speaks up: "I want to find you!"'),
    ('The guard frowns.\n\n"Who goes there?"', 'The guard frowns.\n\n"Who goes there?"'),  # dialogue stays
    ("The door creaks open.\n\nWho could be there at this hour? You step back.",
     "The door creaks open.\n\nWho could be there at this hour? You step back."),  # a question inside the story
    ("The door creaks open.\n\nWho could be there at this hour? You st",  # cut off after it: the story's
     "The door creaks open.\n\nWho could be there at this hour?"),
    ("You wait in the dark hall.\n\nIs it a trap, or a test?", "You wait in the dark hall.\n\nIs it a trap, or a test?"),
    ("The guard frowns.\n\n— Who goes there?", "The guard frowns.\n\n— Who goes there?"),  # dash dialogue
])
def test_clean_up_of_what_small_models_write(raw, expected):
    assert clean_output(raw, "> You look around.") == expected


def test_the_primer_goes_first_and_only_when_it_fits():
    game = _long_game(3)
    count = TokenCounter(lambda s: len(s.split()))
    primer = adv.load_primer()
    built = build_prompt(game, "> You hide.", count, 2000, primer)
    assert built.text.startswith(primer + adv.PRIMER_SEPARATOR) and built.primer == primer
    assert built.tokens <= 2000
    small = build_prompt(game, "> You hide.", count, 300, primer)
    assert primer not in small.text and small.primer == ""


def test_the_brief_knows_the_scene_and_hides_the_primer_and_note():
    play = _knight_play()
    play.game.authors_note = "Keep it grim."
    built = play.prompt_for("> You wait.", ScriptedGenerator(), SamplerSettings())
    brief = play.brief_for("> You wait.", built=built)
    assert "lantern" in brief.scene and "> You wait." in brief.scene
    assert "Keep it grim." in brief.hidden and built.primer in brief.hidden


def test_the_prompt_is_its_named_parts_in_order_with_their_tokens():
    count = TokenCounter(lambda s: len(s.split()))
    game = _long_game(40)
    game.summary = "You met Vex the dragon.\nYou crossed the bridge."
    primer = adv.load_primer()
    built = build_prompt(game, "> You ride toward Grimwald.", count, 1200, primer, world_style="head")
    assert "".join(p.text for p in built.parts) == built.text
    names = [p.name for p in built.parts]
    assert names[:5] == ["primer", "context", "memory", "summary", "world_info"]
    assert names[-1] == "action" and "authors_note" in names and names.count("history") == 2
    assert all(p.tokens == count(p.text) for p in built.parts) and built.budget == 1200
    parts = {p.name: p.text for p in built.parts}
    assert "Story so far: You met Vex the dragon. You crossed the bridge." in parts["summary"]
    assert "Grimwald is a ruined fortress" in parts["world_info"]
    assert built.part_tokens()["history"] == sum(p.tokens for p in built.parts if p.name == "history")


def test_summary_is_left_out_when_off_and_never_takes_more_than_its_share():
    count = TokenCounter(lambda s: len(s.split()))
    game = _long_game(40)
    game.summary = "You swore an oath. " * 200
    built = build_prompt(game, "> You wait.", count, 400)
    summary = next(p for p in built.parts if p.name == "summary")
    assert summary.tokens <= adv.summary_budget(400) and built.tokens <= 400
    game.summary_mode = "off"
    assert "summary" not in [p.name for p in build_prompt(game, "> You wait.", count, 400).parts]


@pytest.mark.parametrize("style", ["near_end", "note", "note+primer"])
def test_world_info_can_go_just_before_the_action(style):
    assert adv.WORLD_INFO_STYLE == "note"  # what the bench picked (see adventure.py)
    count = TokenCounter(lambda s: len(s.split()))
    built = build_prompt(_long_game(5), "> You ride toward Grimwald.", count, 500, world_style=style)
    assert [p.name for p in built.parts][-2:] == ["world_info", "action"]
    facts = built.parts[-2].text.strip()
    assert facts == ("[Note: Grimwald is a ruined fortress full of ghosts.]" if style.startswith("note")
                     else "Grimwald is a ruined fortress full of ghosts.")
    assert not built.text.startswith("You are Ada, a knight of Larion with a silver sword.\nAda swore to protect "
                                     "the princess.\nGrimwald")
    with pytest.raises(StoryloomError):
        build_prompt(_long_game(5), "> You ride toward Grimwald.", count, 500, world_style="sideways")


def test_a_candidate_that_uses_triggered_world_info_gains_the_credit_only_when_it_is_on():
    plain = ("The innkeeper looks up from the counter and nods toward a narrow staircase behind the bar, "
             "then goes back to her work.")
    lore = ("The innkeeper looks up from the counter; it is Mira, and her silver eye patch catches the light "
            "as she nods toward the stairs.")
    quality = {}
    for credit in (True, False):
        play = _knight_play()
        play.lore_rank = credit
        play.game.world_info = [WorldEntry(["innkeeper"], "The innkeeper is Mira, a tall woman with a silver eye patch.")]
        gen = ScriptedGenerator([plain, lore])
        built = play.prompt_for("> You ask the innkeeper for a room.", gen, SamplerSettings())
        brief = play.brief_for("> You ask the innkeeper for a room.", built=built)
        assert ("mira" in brief.lore and "innkeep" not in " ".join(brief.lore)) if credit else brief.lore == ()
        events, output = adv.run(play.generate(built.text, "> You ask the innkeeper for a room.", gen,
                                               SamplerSettings(), candidates=2, brief=brief))
        picked = [e for e in events if isinstance(e, adv.Picked)][-1]
        verdicts = dict(picked.considered)
        assert verdicts[lore].lore_used is credit and not verdicts[plain].lore_used
        quality[credit] = verdicts[lore].quality
        if credit:
            assert output == lore
    assert quality[True] - quality[False] == pytest.approx(adv.critic.LORE_CREDIT)


# -- a write the database refuses changes nothing (found in tmux play: Ctrl+Z with the
# database locked by another StoryLoom lost the turn from memory, not from the database) --------
def _locked_play(tmp_path):
    """A saved game of three turns, its store waiting only 50 ms for the write lock, and a
    second connection (another StoryLoom) that can hold that lock."""
    import sqlite3

    path = tmp_path / "locked.db"
    store = GameStore(open_db(path, busy_timeout=0.05))
    game = Game("Locked", context="A keep.", memory="The key is gold.", turns=[Turn("start", "You wake.", "Rain.")])
    store.create(game)
    play = Adventure(game, store, primer=False)
    for i in range(2):
        turn = play.begin("do", f"step {i}")
        turn.output = f"Output {i}."
        play.commit(turn)
    return play, store, sqlite3.connect(path, isolation_level=None)


def _state(game: Game) -> tuple:
    return ([(t.kind, t.action, t.output, list(t.earlier)) for t in game.turns],
            [(t.kind, t.action, t.output) for t in game.undone], game.memory, game.summary, game.updated)


@pytest.mark.parametrize("prepare,change", [
    (lambda play: play.branch("Branch before."), lambda play: play.undo()),  # back through a branch
    (lambda play: None, lambda play: play.undo()),  # a whole turn
    (lambda play: play.undo(), lambda play: play.redo()),
    (lambda play: None, lambda play: play.replace_last_output("Retried.")),
    (lambda play: None, lambda play: play.commit_opening("A new opening.")),
    (lambda play: None, lambda play: play.branch("A branch.")),
    (lambda play: play.undo(), lambda play: play.commit(Turn("do", "> You sit.", "You sit."))),
], ids=["undo-branch", "undo", "redo", "retry", "opening", "branch", "commit"])
def test_a_write_the_locked_database_refuses_leaves_the_game_as_it_was(tmp_path, prepare, change):
    play, store, other = _locked_play(tmp_path)
    prepare(play)
    before = _state(play.game)
    other.execute("BEGIN IMMEDIATE")  # another StoryLoom is writing
    with pytest.raises(DatabaseBusy):
        change(play)
    assert _state(play.game) == before  # memory is exactly what it was...
    other.rollback()
    assert _state(store.load(play.game.id))[:2] == before[:2]  # ...which is what is saved
    change(play)  # once the other writer is done the same change goes through
    assert _state(store.load(play.game.id))[:2] == _state(play.game)[:2] != before[:2]


def test_undo_of_a_turn_under_a_lock_keeps_the_turn_in_memory_and_on_disk(tmp_path):
    play, store, other = _locked_play(tmp_path)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(DatabaseBusy):
        play.undo()
    other.rollback()
    assert [t.output for t in play.game.turns] == ["Rain.", "Output 0.", "Output 1."] and play.game.undone == []
    assert [t.output for t in store.load(play.game.id).turns] == ["Rain.", "Output 0.", "Output 1."]


def test_memory_edited_then_refused_goes_back_to_what_is_saved(tmp_path):
    play, store, other = _locked_play(tmp_path)
    play.game.memory, play.game.summary = "The key is iron.", "They met."  # the editor changes the game first
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(DatabaseBusy):
        play.save_meta()
    other.rollback()
    assert (play.game.memory, play.game.summary) == ("The key is gold.", "")
    play.game.memory = "The key is iron."
    play.save_meta()
    assert store.load(play.game.id).memory == "The key is iron."


def test_a_draft_is_saved_without_moving_the_game_and_a_refused_one_is_not_claimed(tmp_path):
    play, store, other = _locked_play(tmp_path)
    updated = store.load(play.game.id).updated
    play.keep_draft("open the chest", "do")
    saved = store.load(play.game.id)
    assert (saved.draft, saved.draft_kind, saved.updated) == ("open the chest", "do", updated)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(DatabaseBusy):
        play.keep_draft("hello", "say")
    assert (play.game.draft, play.game.draft_kind) == ("open the chest", "do")  # what the database holds
    other.rollback()
    play.keep_draft("hello", "say")  # the next try writes it
    assert (store.load(play.game.id).draft, store.load(play.game.id).draft_kind) == ("hello", "say")
    play.keep_draft("   ", "story")  # nothing typed: no kind to keep
    assert (store.load(play.game.id).draft, store.load(play.game.id).draft_kind) == ("   ", "")


# -- the drawn count (found in tmux play: the notice said "1 drawn", Ctrl+D "8 drawn, 1 considered") --
def test_the_notice_and_the_explanation_tell_one_count_of_what_was_drawn():
    play = _knight_play()
    acting = "> You draw your sword and charge."  # the model writing the player's action: cut to nothing
    gen = ScriptedGenerator([acting] * 3 + ["The woman nods."] + [acting] * 2 + ["The woman nods.", acting])
    events, output = adv.run(play.generate("prompt", "A dragon lands.", gen, SamplerSettings(), candidates=4))
    picked = [e for e in events if isinstance(e, adv.Picked)][-1]
    assert output == "The woman nods." and not picked.verdict.passed
    assert picked.drawn == 8 and picked.dropped == {"empty": 6, "cut short": 0, "repeated": 1}
    assert picked.drawn == len(picked.considered) + sum(picked.dropped.values())
    counts = "8 drawn in 2 batch(es): 6 empty, 1 repeated, 1 judged"
    assert counts in picked.note and picked.explain().startswith(counts)
    assert "1 drawn" not in picked.note


def test_nothing_usable_says_how_many_were_drawn_and_why_none_was_judged():
    play = _knight_play()
    gen = ScriptedGenerator(["> You run."] * 8)
    events, output = adv.run(play.generate("prompt", "> You wait.", gen, SamplerSettings(), candidates=4))
    picked = [e for e in events if isinstance(e, adv.Picked)][-1]
    assert output == "" and "nothing usable (8 drawn in 2 batch(es): 8 empty, 0 judged)" in picked.note


def test_rows_the_early_stop_cut_short_are_counted_as_cut_not_as_empty():
    texts, dropped = adv.sort_batch([GOOD + " " + GOOD, "The woman", "", GOOD + " " + GOOD], "> You wait.",
                                    type("Enough", (), {"cut": [False, True, True, False]})())
    assert texts == [GOOD + " " + GOOD] and dropped == {"empty": 0, "cut short": 2, "repeated": 1}


def test_a_story_action_is_a_marked_line_so_the_model_narrates_instead_of_writing_the_next_action():
    """Left as plain narration, the action read as a finished passage: SmolLM2-135M wrote the
    player's next "> You ..." (cut to nothing) in 23 of 32 candidates after three do/say turns."""
    game = Game(title="t", turns=[Turn("start", "You wake.", "Rain."),
                                  Turn("story", "A bell rings.", "The monks look up."),
                                  Turn("do", "> You listen.", "Silence.")])
    built = build_prompt(game, "A dragon lands behind you.", TokenCounter(lambda t: len(t.split())), 500)
    assert built.text.endswith("Silence.\n> A dragon lands behind you.\n")
    assert "\n> A bell rings.\nThe monks look up.\n> You listen.\nSilence." in built.text
    game.turns.pop()  # token probabilities of a story turn: its text follows the marked line, as it was written
    play = Adventure(game, primer=False)
    assert play.last_turn_prompt(ScriptedGenerator([]), SamplerSettings()).endswith("Rain.\n> A bell rings.\n")

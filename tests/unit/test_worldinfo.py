"""World info selection: keys, secondary logic, scan depth, recursion, budget, regex time limit."""
from __future__ import annotations

import pytest

from storyloom.modes import worldinfo as wi
from storyloom.modes.adventure import build_prompt
from storyloom.modes.text import TokenCounter
from storyloom.store.lorebooks import Lorebook
from storyloom.store.stories import Game, Turn, WorldEntry

words = TokenCounter(lambda s: len(s.split()))


def pick(entries, turns=(), action="", budget=1000, **kw) -> wi.Selection:
    return wi.select([wi.Source("game", list(entries))], list(turns), action, words, budget, **kw)


def labels(selection) -> list[str]:
    return [f.entry.label() for f in selection.kept]


def test_plain_keys_whole_word_and_case():
    cat = WorldEntry(["cat"], "Cats rule here.", comment="cat")
    assert labels(pick([cat], action="The cat sleeps.")) == ["cat"]
    assert labels(pick([cat], action="A caterpillar.")) == []  # whole words by default
    anywhere = WorldEntry(["cat"], "Cats.", whole_word=False, comment="any")
    assert labels(pick([anywhere], action="A caterpillar.")) == ["any"]
    exact = WorldEntry(["Rose"], "Rose is the queen.", case_sensitive=True, comment="Rose")
    assert labels(pick([exact], action="a rose grows")) == []
    assert labels(pick([exact], action="Rose waves")) == ["Rose"]
    punct = WorldEntry(["Dr. Vale"], "The doctor.", comment="vale")  # \b would miss a key ending in '.'
    assert labels(pick([punct], action="You call Dr. Vale")) == ["vale"]


@pytest.mark.parametrize("logic, action, fires", [
    ("and_any", "the dragon sleeps", True), ("and_any", "the dragon", False),
    ("and_all", "the dragon sleeps in the cave", True), ("and_all", "the dragon sleeps", False),
    ("not_any", "the dragon flies", True), ("not_any", "the dragon sleeps", False),
    ("not_all", "the dragon sleeps", True), ("not_all", "the dragon sleeps in the cave", False),
])
def test_secondary_logic_as_sillytavern(logic, action, fires):
    entry = WorldEntry(["dragon"], "Lore.", secondary=["sleeps", "cave"], logic=logic)
    assert bool(pick([entry], action=action).kept) is fires


def test_reasons_name_the_key_and_the_turn():
    dragon = WorldEntry(["dragon"], "The dragon Vex sleeps.")
    turns = ["You enter the hall.", "A dragon roars far away.", "You wait."]
    fired = pick([dragon], turns).kept[0]
    assert fired.reason == "key 'dragon' in turn -2"
    assert pick([dragon], turns, action="I fight the dragon").kept[0].reason == "key 'dragon' in the action"
    constant = pick([WorldEntry([], "Always.", constant=True)]).kept[0]
    assert constant.reason == "constant"


def test_scan_depth_per_entry_and_default():
    turns = ["A dragon flew by."] + ["Nothing happens."] * 5
    assert pick([WorldEntry(["dragon"], "Lore.")], turns).kept == []  # turn -6: beyond the default 4
    assert pick([WorldEntry(["dragon"], "Lore.", scan_depth=6)], turns).kept
    assert pick([WorldEntry(["dragon"], "Lore.", scan_depth=0)], turns, action="dragon!").kept  # action only
    assert not pick([WorldEntry(["dragon"], "Lore.", scan_depth=0)], ["dragon"], action="look").kept


def test_disabled_and_empty_entries_never_fire():
    assert not pick([WorldEntry(["x"], "Lore.", enabled=False), WorldEntry(["x"], "  ")], action="x").kept


def test_recursion_bounded_and_explained_with_flags():
    castle = WorldEntry(["castle"], "The castle has a dragon in its cellar.", comment="Castle")
    dragon = WorldEntry(["dragon"], "The dragon is named Morrow.", comment="Dragon")
    morrow = WorldEntry(["Morrow"], "Morrow hates the king.", comment="Morrow")
    king = WorldEntry(["king"], "The king is old.", comment="King")
    sel = pick([castle, dragon, morrow, king], action="You see the castle.")
    reasons = {f.entry.label(): f.reason for f in sel.kept}
    assert reasons == {"Castle": "key 'castle' in the action", "Dragon": "recursion from 'Castle'",
                       "Morrow": "recursion from 'Dragon'", "King": "recursion from 'Morrow'"}
    assert labels(pick([castle, dragon, morrow, king], action="the castle", max_recursion=1)) == ["Castle", "Dragon"]
    dragon.prevent_recursion = True  # its text triggers nothing further
    assert labels(pick([castle, dragon, morrow, king], action="the castle")) == ["Castle", "Dragon"]
    dragon.prevent_recursion, dragon.exclude_recursion = False, True  # only the story can trigger it
    assert labels(pick([castle, dragon, morrow], action="the castle")) == ["Castle"]


def test_recursion_loops_end():
    a = WorldEntry(["alpha"], "alpha beta", comment="A")
    b = WorldEntry(["beta"], "beta alpha", comment="B")
    sel = pick([a, b], action="alpha")
    assert labels(sel) == ["A", "B"]


def test_budget_keeps_higher_order_and_drops_children_of_dropped():
    big = WorldEntry(["castle"], "castle " + "stone " * 30, order=10, comment="Big")
    child = WorldEntry(["stone"], "Stone is cold.", order=500, comment="Child")  # named only by Big
    small = WorldEntry(["castle"], "A small castle note.", order=200, comment="Small")
    sel = pick([big, child, small], action="the castle", budget=12)
    assert labels(sel) == ["Small"]
    why = {f.entry.label(): f.why_dropped for f in sel.dropped}
    assert why["Big"].startswith("over the world-info budget")
    assert "'Big' that named it was dropped" in why["Child"]
    assert sel.used <= 12
    roomy = pick([big, child, small], action="the castle", budget=1000)
    assert labels(roomy) == ["Big", "Small", "Child"]  # prompt order: lowest order first
    assert "Small: key 'castle' in the action" in roomy.summary()


def test_regex_keys_with_flags_and_bad_patterns():
    entry = WorldEntry(["/\\bMorr?ow\\b/i"], "Lore.", comment="re")
    assert labels(pick([entry], action="MOROW sings")) == ["re"]
    case = WorldEntry(["/Morrow/"], "Lore.")
    assert not pick([case], action="morrow").kept
    bad = pick([WorldEntry(["/(unclosed/"], "Lore.")], action="unclosed")
    assert not bad.kept and "not a valid pattern" in bad.notes[0]


def test_a_hostile_regex_cannot_hang_a_turn():
    evil = WorldEntry(["/(a+)+$/"], "Lore.", comment="evil")
    fine = WorldEntry(["a"], "Fine.", whole_word=False, comment="fine")
    text = "a" * 5000 + "!"
    sel = pick([evil] * 40 + [fine], action=text)  # unbounded, one of these searches would never end
    assert labels(sel) == ["fine"]
    assert any("took too long" in n or "ran out" in n for n in sel.notes)


def test_game_and_lorebooks_share_one_budget_in_build_prompt():
    game = Game(title="t", context="You are a knight.", turns=[Turn("start", "You, a knight, stand at the gate.", "")],
                world_info=[WorldEntry(["gate"], "The gate is iron.")])
    game.lorebooks = [Lorebook("Eldoria", [WorldEntry(["knight"], "Knights swear to Eldoria.", comment="Knights"),
                                           WorldEntry([], "It always rains.", constant=True, order=1)])]
    built = build_prompt(game, "> You open the gate.", words, 300)
    assert built.world_info == [game.lorebooks[0].entries[1], game.world_info[0], game.lorebooks[0].entries[0]]
    assert "The gate is iron." in built.text and "It always rains." in built.text
    assert {f.source for f in built.lore.kept} == {"game", "Eldoria"}
    assert "[Eldoria]" in built.lore.explain()


def test_old_world_entries_load_with_defaults():
    entry = WorldEntry.from_dict({"keys": ["a"], "text": "b", "from_the_future": 1})
    assert (entry.whole_word, entry.case_sensitive, entry.enabled, entry.order, entry.scan_depth) == \
        (True, False, True, 100, None)

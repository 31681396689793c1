"""Story-tree prompts mark every action as a "> " line, a player's narration too.

The adventure once left a story action as plain narration in its prompt: read as a finished
passage, the model wrote the player's next "> You ..." and the clean-up cut it to nothing.
Tree mode has no story kind: every option, a player's own "A dragon lands." included, goes in
as "> You ..." (measured: 0 of 24 outcomes empty after such options, k=1 and k=4, SmolLM2-135M).
"""
from __future__ import annotations

from storyloom.modes.text import TokenCounter
from storyloom.modes.tree import story_prompt
from storyloom.store.trees import Node, Tree


def test_a_players_narration_option_is_a_marked_line_in_the_prompt():
    tree = Tree("Road", scenario="A road through the hills.")
    root = Node("t", None, "", "You walk the old road.")
    narration = Node("t", "root", "A dragon lands on the road behind me.", "It folds its wings.")
    count = TokenCounter(lambda s: len(s.split()))
    prompt = story_prompt(tree, [root, narration], count, next_action="The ground shakes.", budget=200)
    lines = prompt.splitlines()
    assert [line[:2] for line in lines if "dragon lands" in line] == ["> "]  # the path's option, marked
    assert lines[-1].startswith("> ") and "ground shakes" in lines[-1]  # the option being written


def test_a_narration_option_is_not_made_an_action_of_you():
    from storyloom.modes.tree import action_line

    assert action_line("Open the iron door.") == "> You open the iron door."
    assert action_line("A dragon lands behind you.") == "> A dragon lands behind you."
    assert action_line("the lamp goes out") == "> The lamp goes out"
    assert action_line("Theorize about the ruins.") == "> You theorize about the ruins."  # a verb, not "the"

"""Story trees: the store (ranking, votes, path to root, privacy) and play with a fake model."""
from __future__ import annotations

import pytest

from storyloom import StoryloomError
from storyloom.engine.backends.scripted import ScriptedGenerator as _Scripted
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes.tree import (
    TreePlay,
    clean_action,
    rank,
    story_prompt,
    wilson_lower_bound,
)
from storyloom.modes.text import TokenCounter
from storyloom.store.db import open_db
from storyloom.store.trees import Node, Tree, TreeStore

SETTINGS = SamplerSettings(seed=1)


class ScriptedGenerator(_Scripted):
    """One scripted output per candidate and no batching (one outcome candidate, options one row
    each), so these tests can count calls; `_batching` turns sample-and-rank on."""

    def __init__(self, *args, **kwargs):
        from dataclasses import replace

        super().__init__(*args, **kwargs)
        self.capabilities = replace(self.capabilities, batch=False)
OPENING = "You stand at the gate of a ruined castle. Crows circle the towers."


@pytest.fixture
def store(tmp_path) -> TreeStore:
    return TreeStore(open_db(tmp_path / "t.db"))


def make_tree(store: TreeStore, visibility: str = "public", owner: str = "ada") -> Tree:
    tree = Tree("The Castle", scenario="A dark fantasy adventure.", visibility=visibility, owner=owner)
    store.create(tree, OPENING)
    return tree


def test_wilson_lower_bound_prefers_many_good_votes_over_a_few():
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(40, 5) > wilson_lower_bound(1, 0) > 0
    assert wilson_lower_bound(5, 5) < wilson_lower_bound(9, 1)
    assert 0 <= wilson_lower_bound(3, 100) < 0.1


def test_ranking_order_votes_then_choices(store):
    tree = make_tree(store)
    root = store.root(tree.id)
    a, b, c, d = store.add_children(root, ["Knock.", "Climb the wall.", "Leave.", "Shout."], "m")
    for voter in ("u1", "u2", "u3"):
        store.vote(b.id, voter, 1)
    store.vote(c.id, "u1", 1)
    store.chosen(d.id)
    store.chosen(d.id)
    ranked = rank(store.children(root.id))
    assert [n.action for n in ranked] == ["Climb the wall.", "Leave.", "Shout.", "Knock."]


def test_one_vote_per_voter_changeable_and_removable(store):
    tree = make_tree(store)
    option = store.add_child(store.root(tree.id), "Knock.")
    store.vote(option.id, "u1", 1)
    store.vote(option.id, "u1", 1)
    assert (store.node(option.id).ups, store.node(option.id).downs) == (1, 0)
    store.vote(option.id, "u1", -1)
    assert (store.node(option.id).ups, store.node(option.id).downs) == (0, 1)
    store.vote(option.id, "u2", -1)
    store.vote(option.id, "u1", 0)
    assert (store.node(option.id).ups, store.node(option.id).downs) == (0, 1)
    assert store.db.execute("select count(*) from votes").fetchone()[0] == 1
    with pytest.raises(ValueError):
        store.vote(option.id, "u1", 5)


def test_path_to_root_and_stats(store):
    tree = make_tree(store)
    node = store.root(tree.id)
    for i in range(5):
        node = store.add_child(node, f"Step {i}.", outcome=f"Outcome {i}.")
    path = store.path_to_root(node.id)
    assert [n.depth for n in path] == [0, 1, 2, 3, 4, 5]
    assert path[0].outcome == OPENING and path[-1].id == node.id
    assert store.stats(tree.id) == {"nodes": 6, "depth": 5, "outcomes": 6}


def test_private_trees_stay_out_of_public_listings_and_ids_are_random(store):
    public = make_tree(store)
    private = make_tree(store, "private", owner="bo")
    assert [t.id for t in store.public_trees()] == [public.id]
    assert {t.id for t in store.trees("bo")} == {public.id, private.id}
    assert {t.id for t in store.trees("ada")} == {public.id}
    assert len(private.id) == 24 and int(private.id, 16) != int(public.id, 16) + 1


def test_a_cache_hit_makes_no_model_call_and_a_miss_calls_once_and_stores(store):
    tree = make_tree(store)
    gen = ScriptedGenerator(["you step inside", "You look around.", "> You run away.", "you step inside",
                             "You shout for help."])
    play = TreePlay(store, tree.id, top=5)
    assert play.needs_options()
    play.more_options(gen, SETTINGS)  # the root's options (5 candidates, one duplicate dropped)
    options = play.options()
    assert sorted(o.action for o in options) == ["Look around.", "Run away.", "Shout for help.", "Step inside."]
    step = next(o for o in options if o.action == "Step inside.")
    before = len(gen.prompts)
    shown = play.choose(step)
    assert shown is None  # not cached yet: a miss
    gen.push("The gate creaks open. Dust falls.", "Go upstairs.", "Go downstairs.", "Wait.", "Listen.", "Pray.")
    node = play.choose_and_expand(step, gen, SETTINGS)
    assert node.outcome == "The gate creaks open. Dust falls." and node.author == "scripted"
    assert len(gen.prompts) == before + 1 + 5  # one outcome call, one batched options call of 5
    assert gen.prompts[before].rstrip().endswith("> You step inside.")
    assert gen.prompts[before + 1].endswith("Dust falls.\n> You")
    assert play.stats.generated == 1
    # a second player reading the same branch: served from the cache, no model call
    other = TreePlay(store, tree.id, player="bo")
    calls = len(gen.prompts)
    cached = next(o for o in other.options() if o.action == "Step inside.")
    assert other.choose(cached).outcome == "The gate creaks open. Dust falls."
    assert len(gen.prompts) == calls and other.stats.served == 1 and other.stats.hit_ratio == 1.0
    assert store.node(cached.id).choices == 2


def test_back_jump_bookmark_link_and_own_writing(store):
    tree = make_tree(store)
    play = TreePlay(store, tree.id)
    root = play.node
    door = play.add_action("I open the door")
    assert door.action == "I open the door" and door.author == "human"
    assert play.add_action("i open the door").id == door.id  # the same option, not a copy
    door = play.write_outcome(door, "Behind it, stairs lead down.")
    assert play.choose(door).outcome == "Behind it, stairs lead down."
    play.bookmark("stairs")
    loop = play.link("Go back outside.", root.id)
    assert play.choose(loop).id == root.id
    assert play.back().id == door.id and play.back().id == root.id and play.back() is None
    assert play.jump(door.id).id == door.id
    assert [n.id for n, label in store.bookmarks(tree.id, "you")] == [door.id]
    with pytest.raises(StoryloomError):
        play.write_outcome(door, "  ")


def test_heavily_downvoted_options_are_hidden_but_recoverable(store):
    tree = make_tree(store)
    play = TreePlay(store, tree.id)
    bad = play.add_action("Eat the crows.")
    play.add_action("Knock.")
    for voter in ("a", "b", "c"):
        store.vote(bad.id, voter, -1)
    assert [o.action for o in play.options()] == ["Knock."]
    assert play.hidden_count() == 1
    assert "Eat the crows." in [o.action for o in play.options(include_hidden=True)]
    assert play.vote(bad, 1) == 1 and play.vote(bad, 1) == 0  # voting again takes it back


def test_pregeneration_targets_are_the_top_uncached_options(store):
    tree = make_tree(store)
    play = TreePlay(store, tree.id)
    a = play.add_action("Knock.")
    b = play.add_action("Climb.")
    play.write_outcome(b, "You climb.")
    store.vote(a.id, "x", 1)
    assert [n.action for n in play.pregeneration_targets()] == ["Knock."]


@pytest.mark.parametrize("raw,expected", [
    (" open the door.\n> You", "Open the door."), ("> You run.", "Run."), ("1. Hide", "Hide."),
    ("  \n", ""), ("?!", ""),
])
def test_clean_action(raw, expected):
    assert clean_action(raw) == expected


def test_prompt_keeps_the_scenario_and_the_end_of_a_long_path():
    tree = Tree("T", scenario="Scenario line.")
    path = [Node("t", None, "", "Opening.")] + [Node("t", "p", f"step {i}", f"Outcome number {i}.") for i in range(200)]
    prompt = story_prompt(tree, path, TokenCounter(lambda s: len(s.split())), next_action="wait", budget=120)
    assert prompt.startswith("Scenario line.\n\n") and prompt.endswith("Outcome number 199.\n> You wait.\n")
    assert "Outcome number 0." not in prompt and len(prompt.split()) <= 120


def test_read_ahead_runs_as_many_at_once_as_the_backend_serves(store):
    """expand_many: one at a time on a local model; on a server with 4 slots, 4 requests at once."""
    import threading
    from dataclasses import replace

    from storyloom.engine.generate import Capabilities
    from storyloom.modes.tree import expand_many

    class Counting(ScriptedGenerator):
        def __init__(self, parallel):
            super().__init__(delay=0.02)
            self.capabilities = replace(Capabilities(), parallel=parallel)
            self.now = self.most = 0
            self.lock = threading.Lock()

        def _stream(self, prompt, settings, cancel):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                yield from super()._stream(prompt, settings, cancel)
            finally:
                with self.lock:
                    self.now -= 1

    tree = make_tree(store)
    play = TreePlay(store, tree.id)
    jobs = [(n, play.path(n)) for n in (play.add_action(f"Door {i}.") for i in range(6))]
    for parallel, most in ((1, 1), (4, 4)):
        gen = Counting(parallel)
        gen.push(*[f"Door {i} opens onto a hall of old portraits." for i in range(6)])
        done = list(expand_many(gen, tree, jobs, settings=SETTINGS))
        assert sorted(n.action for n, _, _ in done) == sorted(n.action for n, _ in jobs)
        assert all(e is not None and e.outcome and err is None for _, e, err in done)
        assert gen.most == most


def _batching(gen):
    from dataclasses import replace

    gen.capabilities = replace(gen.capabilities, batch=True)
    return gen


def test_options_glued_to_the_prompts_you_never_become_ve_got_fragments(store):
    # The prompt ends on "> You": a model that goes on with "'ve got" wrote "You've got ...".
    assert clean_action("'ve got a long way to go") == "You've got a long way to go."
    tree = make_tree(store)
    gen = ScriptedGenerator(["'ve got a long way to go", "'re about to leave", " are standing in a room",
                             " open the iron door", " try the door. It's locked. What do you do?",
                             " walk toward the old " + "very " * 30])
    play = TreePlay(store, tree.id, top=5)
    actions = play.more_options(gen, SETTINGS)
    # fragments and the cut line are dropped; the line that went on into its outcome keeps its action
    assert actions == ["Open the iron door.", "Try the door."]
    assert not any(a.startswith(("Ve ", "Re ", "Are ")) or "locked" in a or "?" in a for a in actions)


@pytest.mark.parametrize("raw,expected", [
    # the first sentence is the action, what follows is its outcome
    (" look around. The room looks like it was built for a king. The bed", "Look around."),
    (" see a battle ahead of you. A man is standing before you, holding", "See a battle ahead of you."),
    (" ask Mr. Holmes about the letter.", "Ask Mr. Holmes about the letter."),
    # over-long: up to its first comma, else the longest leading clause that fits
    (" stand near the bed, your eyes fixed on the young man who has been murdered.", "Stand near the bed."),
    (" climb up the mountain and into a cave where the king's army is waiting for you today",
     "Climb up the mountain and into a cave."),
    (" find your way to a table filled with papers that look like they might contain news", "Find your way to a table filled with papers."),
    # short and whole: as it is
    (" light the torch and wait.", "Light the torch and wait."),
])
def test_generated_options_keep_only_their_action(raw, expected):
    assert clean_action(raw, trim=True) == expected


def test_an_option_where_the_world_acts_is_an_outcome():
    from storyloom.modes import critic
    from storyloom.modes.tree import option_brief

    assert not critic.judge("Take a few steps and a door opens into an old building.", option_brief()).passed
    assert critic.judge("Take a few steps and open the old door.", option_brief()).passed


def test_options_are_drawn_twice_over_where_the_backend_batches_and_the_best_kept(store):
    tree = make_tree(store)
    gen = _batching(ScriptedGenerator([" open the door", " look around", " the wind howls", " run.",
                                       " pray", " ask the crows", " climb the tower", " wait"]))
    play = TreePlay(store, tree.id, top=4)
    actions = play.more_options(gen, SETTINGS)
    assert len(gen.prompts) == 8 and len(actions) == 4
    assert "The wind howls." not in actions and all(a.endswith(".") for a in actions)


def test_outcomes_are_the_critics_pick_of_a_batch_and_never_leak_notes(store):
    tree = Tree("Castle", scenario="Second person, present tense. A dark fantasy adventure.")
    store.create(tree, OPENING)
    play = TreePlay(store, tree.id, top=1)
    gate = play.add_action("Open the gate.")
    good = ("The gate groans open on rusted hinges, and a cold wind carries the smell of ash out of the "
            "castle courtyard.")
    gen = _batching(ScriptedGenerator(["Second person, second person. The gate opens.", good,
                                       "What do you do?", "You decide to go home and forget the castle.",
                                       " knock on the inner door"] + [" wait"] * 7))
    node = play.choose_and_expand(gate, gen, SETTINGS)
    assert node.outcome == good


def test_options_about_what_the_passage_named_come_before_ones_about_nothing_there(store):
    # played at the night market: "Take off your armor." where no armor was ever named
    tree = make_tree(store)
    gen = _batching(ScriptedGenerator([" take off your armor", " hold up the lantern", " climb the towers",
                                       " watch the crows", " polish your helmet", " look around"] + [" wait"] * 2))
    play = TreePlay(store, tree.id, top=4)
    actions = play.more_options(gen, SETTINGS)
    assert len(actions) == 4
    assert actions[:2] == ["Climb the towers.", "Watch the crows."], actions
    assert "Take off your armor." not in actions and "Polish your helmet." not in actions


def test_an_option_that_only_extends_another_is_the_same_choice(store):
    # played at Gull Rock: "Look up over the sea." and "Look up." offered side by side
    tree = make_tree(store)
    gen = _batching(ScriptedGenerator([" look up", " climb the towers", " look up over the towers",
                                       " watch the crows", " climb the towers to the top", " look", " wait",
                                       " open the gate"]))
    play = TreePlay(store, tree.id, top=4)
    actions = play.more_options(gen, SETTINGS)
    assert "Look up." not in actions and "Climb the towers." not in actions, actions
    assert {"Look up over the towers.", "Climb the towers to the top."} <= set(actions), actions
    assert len(actions) == 4


def test_options_stored_meanwhile_by_another_player_are_not_offered_twice(store):
    # two players expand the same node at once: the second to store drops its options that are the
    # same choice as the first's ("Look up." there, "Look up over the sea." ours), by expand's rule
    from storyloom.modes.tree import Expansion

    tree = make_tree(store)
    first, second = TreePlay(store, tree.id), TreePlay(store, tree.id)
    first.apply(first.node, Expansion(actions=["Look up.", "Open the gate."]), "model")
    second.apply(second.node, Expansion(actions=["Look up over the sea.", "Open the gate now.", "open the gate",
                                                 "Watch the crows."]), "model")
    assert sorted(k.action for k in store.children(first.node.id)) == ["Look up.", "Open the gate.",
                                                                       "Watch the crows."]

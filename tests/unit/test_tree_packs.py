"""Sharing trees: JSON pack round trip and merge, bad packs rejected whole, Twee out and back in."""
from __future__ import annotations

import json

import pytest

from storyloom.store import tree_packs
from storyloom.store.db import open_db
from storyloom.store.tree_packs import PackError, dump_pack, export_pack, export_twee, import_pack, import_twee, load_pack, parse_twee
from storyloom.store.trees import Tree, TreeStore


@pytest.fixture
def store(tmp_path) -> TreeStore:
    return TreeStore(open_db(tmp_path / "a.db"))


@pytest.fixture
def other(tmp_path) -> TreeStore:
    return TreeStore(open_db(tmp_path / "b.db"))


def build(store: TreeStore) -> Tree:
    tree = Tree("The Castle", scenario="Dark fantasy.")
    root = store.create(tree, "You stand at the gate.")
    door = store.add_child(root, "Open the door.", "It creaks open. :: not a header", author="m")
    store.add_child(root, "Walk away.")  # not written yet
    store.add_child(door, "Go back to the gate.", link_to=root.id)
    store.vote(door.id, "ada", 1)
    store.vote(door.id, "bo", -1)
    return tree


def counts(store: TreeStore) -> tuple[int, int, int]:
    db = store.db
    return tuple(db.execute(f"select count(*) from {t}").fetchone()[0] for t in ("trees", "nodes", "votes"))


def test_pack_round_trip_and_merging_twice_adds_nothing(store, other):
    tree = build(store)
    text = dump_pack(export_pack(store, tree.id))
    report = import_pack(other, load_pack(text))
    assert (report.nodes_added, report.votes_added) == (4, 2)
    mine, theirs = export_pack(other, tree.id), export_pack(store, tree.id)
    assert (mine["tree"], mine["nodes"]) == (theirs["tree"], theirs["nodes"])
    door = next(n for n in other.children(other.root(tree.id).id) if n.action == "Open the door.")
    # the pack's votes are counted apart from local ones: they rank nothing here
    assert (door.ups, door.downs, door.pack_ups, door.pack_downs) == (0, 0, 1, 1)
    assert mine["tallies"] == []  # only votes cast here leave in a pack
    link = other.children(door.id)[0]
    assert link.link_to == other.root(tree.id).id
    again = import_pack(other, load_pack(text))
    assert (again.nodes_added, again.votes_added, again.outcomes_filled) == (0, 0, 0)
    assert counts(other) == (*counts(store)[:2], 0)  # no pack vote became a local voter's


def test_merge_brings_new_branches_outcomes_and_votes_per_voter(store, other):
    tree = build(store)
    import_pack(other, load_pack(dump_pack(export_pack(store, tree.id))))
    # elsewhere, players grew the tree
    root = other.root(tree.id)
    walk = next(n for n in other.children(root.id) if n.action == "Walk away.")
    other.set_outcome(walk.id, "You leave the castle behind.", "m")
    other.add_child(walk, "Look back.")
    other.vote(walk.id, "cy", 1)
    other.vote(walk.id, "ada", 1)
    store.vote(walk.id, "ada", -1)  # ada already voted here: her own vote stays
    report = import_pack(store, load_pack(dump_pack(export_pack(other, tree.id, voters=True))), trust=True)
    assert (report.nodes_added, report.outcomes_filled, report.votes_added) == (1, 1, 1)
    merged = store.node(walk.id)
    assert merged.outcome == "You leave the castle behind."
    assert (merged.ups, merged.downs) == (1, 1)  # trusted: cy merged as a voter, ada's own vote kept
    assert store.my_vote(walk.id, "ada") == -1


def _pack(store) -> dict:
    return export_pack(store, build(store).id)


@pytest.mark.parametrize("spoil,message", [
    (lambda p: "{not json", "not valid JSON"),
    (lambda p: {**p, "format": "zip"}, "schema"),
    (lambda p: {**p, "nodes": [{**p["nodes"][0], "outcome": 5}, *p["nodes"][1:]]}, "nodes/0/outcome"),
    (lambda p: {**p, "nodes": [n for n in p["nodes"] if n["parent_id"] is not None]}, "exactly one root"),
    (lambda p: {**p, "nodes": p["nodes"] + [{**p["nodes"][1], "id": "f" * 24, "parent_id": "e" * 24}]},
     "neither in the pack"),
    (lambda p: {**p, "votes": [{"node_id": "d" * 24, "voter": "x", "value": 1}]}, "not in the tree"),
    (lambda p: {**p, "votes": [{"node_id": p["nodes"][0]["id"], "voter": "x", "value": 3}]}, "schema"),
])
def test_a_bad_pack_changes_nothing_and_says_why(store, other, spoil, message):
    pack = spoil(_pack(store))
    before = counts(other)
    with pytest.raises(PackError, match=message):
        import_pack(other, load_pack(pack if isinstance(pack, str) else json.dumps(pack)))
    assert counts(other) == before


def test_parent_cycles_and_foreign_nodes_are_rejected(store, other):
    pack = _pack(store)
    a, b = pack["nodes"][1], pack["nodes"][2]
    a["parent_id"], b["parent_id"] = b["id"], a["id"]
    with pytest.raises(PackError, match="cycle"):
        import_pack(other, load_pack(json.dumps(pack)))
    mine = build(other)
    stolen = _pack(store)
    theirs = other.root(mine.id)
    old_id, stolen["nodes"][1]["id"] = stolen["nodes"][1]["id"], theirs.id  # claims a node of another tree
    for n in stolen["nodes"]:
        n["parent_id"] = theirs.id if n["parent_id"] == old_id else n["parent_id"]
    stolen["tallies"] = []
    report = import_pack(other, load_pack(json.dumps(stolen)))
    assert report.nodes_added == 4  # the claimed id got a fresh one: the other tree is untouched
    assert other.node(theirs.id) == theirs and other.node(theirs.id).tree_id == mine.id


def test_oversized_packs_are_refused_before_parsing(store, monkeypatch):
    monkeypatch.setattr(tree_packs, "MAX_PACK_BYTES", 100)
    with pytest.raises(PackError, match="limit"):
        load_pack(dump_pack(_pack(store)))


def test_private_trees_are_never_exported(store):
    tree = Tree("Secret", visibility="private", owner="ada")
    store.create(tree, "Hidden.")
    with pytest.raises(PackError, match="Private"):
        export_pack(store, tree.id)
    with pytest.raises(PackError, match="Private"):
        export_twee(store, tree.id)


def test_twee_export_parses_back_into_the_same_tree(store, other):
    tree = build(store)
    twee = export_twee(store, tree.id)
    assert twee.startswith(":: StoryTitle\nThe Castle\n")
    title, start, bodies = parse_twee(twee)
    assert (title, start) == ("The Castle", "Start")
    assert "[[Open the door.->n" in bodies["Start"]
    assert "\\::" not in "".join(bodies.values()) and "It creaks open. :: not a header" in twee
    report = import_twee(other, twee)
    root = other.root(report.tree_id)
    assert root.outcome == "You stand at the gate."  # the scenario is the tree's, not folded into the opening
    assert other.tree(report.tree_id).scenario == "Dark fantasy."
    kids = {k.action: k for k in other.children(root.id)}
    assert set(kids) == {"Open the door.", "Walk away."}
    assert kids["Open the door."].outcome == "It creaks open. :: not a header"
    back = other.children(kids["Open the door."].id)[0]
    assert back.action == "Go back to the gate." and back.link_to == root.id


def test_twee_from_twine_with_all_link_styles(other):
    source = """:: StoryTitle
Lost

:: StoryData
{"ifid": "D674C58C-DEFA-4F70-B7A2-27742230C0FC", "start": "Woods"}

:: Woods [dark] {"position":"100,100"}
You are lost in the woods.
[[Go north->North]] [[South<-Go south]] [[Wait|Woods]] [[Cabin]]

:: North
A river.

:: Cabin
\\:: a line that starts with two colons
"""
    report = import_twee(other, source, visibility="private", owner="ada")
    tree = other.tree(report.tree_id)
    assert (tree.title, tree.visibility) == ("Lost", "private")
    root = other.root(tree.id)
    assert root.outcome == "You are lost in the woods."
    kids = {k.action: k for k in other.children(root.id)}
    assert set(kids) == {"Go north", "Go south", "Wait", "Cabin"}
    assert kids["Go north"].outcome == "A river." and kids["Go south"].outcome == ""  # no such passage
    assert kids["Wait"].link_to == root.id
    assert kids["Cabin"].outcome == ":: a line that starts with two colons"
    with pytest.raises(PackError, match="start passage"):
        import_twee(other, ":: StoryData\n{\"start\": \"Nowhere\"}\n\n:: Here\nText.")


def test_cli_lists_exports_and_imports_trees(tmp_path, capsys):
    from storyloom.cli import main

    store = TreeStore(open_db())
    tree = build(store)
    assert main(["tree", "list"]) == 0
    assert tree.id in capsys.readouterr().out
    out = tmp_path / "castle.json"
    assert main(["tree", "export", tree.id, "-o", str(out)]) == 0
    assert main(["tree", "export", tree.id, "--format", "twee"]) == 0
    assert ":: StoryTitle\nThe Castle" in capsys.readouterr().out
    assert main(["tree", "import", str(out)]) == 0
    assert "0 passages added" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    assert main(["tree", "import", str(tmp_path / "bad.json")]) == 2
    assert "does not match the tree pack schema" in capsys.readouterr().err
    assert main(["tree", "export", "f" * 24]) == 2


def test_bench_tree_runs_on_a_small_tree(capsys):
    from storyloom.cli import main

    assert main(["bench", "tree", "--nodes", "300", "--no-model"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nodes"] == 300 and result["serve_ms_p99"] > 0 and result["votes_per_s"] > 0
    assert result["cache_hit_ratio"] == 1.0


def passages(twee: str) -> dict[str, str]:
    title, start, bodies = parse_twee(twee)
    return {"title": title, "start": start, **bodies}


def test_twee_round_trip_is_lossless_and_importing_twice_merges(store, other, tmp_path):
    """Before: unplayed branches came back as the placeholder text, the scenario was folded into
    the opening, and each import made another tree with the same title."""
    tree = build(store)
    kid = store.children(store.root(tree.id).id)[0]
    store.add_child(kid, "Climb the stairs.", "A long climb.")
    first = export_twee(store, tree.id)
    report = import_twee(other, first)
    again = export_twee(other, report.tree_id)
    assert again == first  # the same passages, in the same order, the same IFID
    kids = {k.action: k for k in other.children(other.root(report.tree_id).id)}
    assert kids["Walk away."].outcome == ""  # unplayed: still unplayed, not the placeholder
    assert other.tree(report.tree_id).scenario == "Dark fantasy."
    assert import_twee(other, first).nodes_added == 0  # the same story again: merged by IFID
    assert len(other.trees()) == 1 and export_twee(other, report.tree_id) == first
    assert import_twee(store, first).nodes_added == 0 and len(store.trees()) == 1  # into its own tree too


def test_a_twine_story_imported_twice_merges_and_keeps_its_ifid(other):
    source = """:: StoryData
{"ifid": "D674C58C-DEFA-4F70-B7A2-27742230C0FC", "start": "Woods"}

:: Woods
Lost. [[North]] [[Back|Woods]]

:: North
A river.
"""
    first = import_twee(other, source)
    assert first.nodes_added == 3
    assert import_twee(other, source).nodes_added == 0 and len(other.trees()) == 1
    out = export_twee(other, first.tree_id)
    assert '"ifid": "D674C58C-DEFA-4F70-B7A2-27742230C0FC"' in out
    assert import_twee(other, out).nodes_added == 0


def test_your_own_pack_imported_back_counts_none_of_your_votes_again(store, other):
    """Found in tmux play: vote -, export, import the same file: "1 votes counted" and the
    option showed "-1 (you: -) · +0/-1 from packs", the one vote counted twice."""
    tree = build(store)  # ada +1 and bo -1 on the door, cast here
    door = next(n for n in store.children(store.root(tree.id).id) if n.action == "Open the door.")
    pack = load_pack(dump_pack(export_pack(store, tree.id)))
    for _ in range(2):  # and a second time
        report = import_pack(store, pack)
        assert (report.votes_added, report.own_votes) == (0, 2)
        assert store.node(door.id).pack_ups == store.node(door.id).pack_downs == 0
    named = load_pack(dump_pack(export_pack(store, tree.id, voters=True)))
    store.vote(door.id, "bo", 0)  # bo takes her vote back: an old pack of ours must not restore it
    assert import_pack(store, named, trust=True).votes_added == 0 and store.my_vote(door.id, "bo") == 0
    # other people's packs still count, once however often they come
    import_pack(other, pack)
    other.vote(door.id, "cy", 1)
    theirs = load_pack(dump_pack(export_pack(other, tree.id)))
    for _ in range(2):
        report = import_pack(store, theirs)
        assert store.node(door.id).pack_ups == 1 and store.node(door.id).pack_downs == 0  # cy's, not ours back
    assert (store.node(door.id).ups, store.node(door.id).downs) == (1, 0)  # local votes as they were


def test_your_own_pack_restores_its_votes_to_a_tree_deleted_here_since(store):
    tree = build(store)
    pack = load_pack(dump_pack(export_pack(store, tree.id)))
    store.delete_tree(tree.id)
    report = import_pack(store, pack)
    door = next(n for n in store.children(store.root(tree.id).id) if n.action == "Open the door.")
    assert report.own_votes == 0 and (door.pack_ups, door.pack_downs) == (1, 1)

"""`storyloom tree import` says why votes were not counted, in the words the TUI's toast uses."""
from __future__ import annotations

from storyloom.store.db import open_db
from storyloom.store.tree_packs import dump_pack, export_pack, import_pack, load_pack
from storyloom.store.trees import TreeStore

from tests.unit.test_tree_packs import build


def test_the_cli_says_why_an_import_counted_no_votes(tmp_path, capsys):
    """It printed '0 votes merged' and nothing more, where the TUI said why."""
    from storyloom.cli import main

    cli_db = TreeStore(open_db())  # the CLI's own database (STORYLOOM_HOME)
    tree = build(cli_db)  # two votes cast here
    mine = tmp_path / "mine.json"
    assert main(["tree", "export", tree.id, "-o", str(mine)]) == 0
    capsys.readouterr()
    assert main(["tree", "import", str(mine)]) == 0
    assert "0 votes counted (2 of its votes were cast here and are counted already)" in capsys.readouterr().out

    theirs = TreeStore(open_db(tmp_path / "theirs.db"))  # someone else's database votes too
    import_pack(theirs, load_pack(mine.read_text()))
    door = next(n for n in theirs.children(theirs.root(tree.id).id) if n.action == "Open the door.")
    theirs.vote(door.id, "cy", 1)
    pack = tmp_path / "theirs.json"
    pack.write_text(dump_pack(export_pack(theirs, tree.id)))
    assert main(["tree", "import", str(pack)]) == 0
    assert "1 passages added" not in (first := capsys.readouterr().out) and first.rstrip().endswith(
        "0 passages added, 0 filled in, 1 vote counted")  # cy's vote, one, in the singular
    assert main(["tree", "import", str(pack)]) == 0  # the same pack again
    assert "0 votes counted (1 was counted when it was imported before)" in capsys.readouterr().out


def test_a_pack_without_votes_says_it_holds_none(tmp_path):
    store, other = TreeStore(open_db(tmp_path / "a.db")), TreeStore(open_db(tmp_path / "b.db"))
    tree = build(store)
    for voter in ("ada", "bo"):
        store.vote(next(n for n in store.children(store.root(tree.id).id) if n.action == "Open the door.").id,
                   voter, 0)
    report = import_pack(other, load_pack(dump_pack(export_pack(store, tree.id))))
    assert report.summary().endswith("0 votes counted (it holds no votes)")

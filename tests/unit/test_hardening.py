"""Issue 14, hardening: concurrent writers, hostile files, terminal output, privacy, bad state."""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import threading

import pytest

from storyloom.store import tree_packs
from storyloom.store.db import DatabaseBusy, StoreError, open_db
from storyloom.store.tree_packs import PackError, dump_pack, export_pack, export_twee, import_pack, import_twee, load_pack
from storyloom.store.trees import Tree, TreeNotFound, TreeStore


@pytest.fixture
def store(tmp_path) -> TreeStore:
    return TreeStore(open_db(tmp_path / "a.db"))


def castle(store: TreeStore) -> Tree:
    tree = Tree("The Castle", scenario="Dark fantasy.")
    root = store.create(tree, "You stand at the gate.")
    door = store.add_child(root, "Open the door.", "It creaks open.", author="m")
    store.add_child(root, "Walk away.")
    store.vote(door.id, "alice", 1)
    return tree


def pack_of(nodes: int = 3, **extra) -> dict:
    ids = [f"node{i:08d}" for i in range(nodes)]
    return {"format": tree_packs.PACK_FORMAT, "version": 1, "tree": {"id": "tree00000001", "title": "T"},
            "nodes": [{"id": i, "parent_id": None if n == 0 else ids[0], "action": f"A{n}", "outcome": f"O{n}"}
                      for n, i in enumerate(ids)], **extra}


# -- concurrent writers ---------------------------------------------------------------------
def test_voters_in_several_processes_during_an_import_all_land(tmp_path):
    """Before: 2 voters lost 46% of their votes to "database is locked" at once."""
    from storyloom.store.vote_bench import votes

    result = votes(processes=3, votes=150, import_nodes=3000, tree_nodes=60)
    assert (result["failed"], result["lost"], result["counts_match_votes"]) == (0, 0, True), result
    assert result["import"] == "3000 nodes added"


def test_a_write_that_cannot_get_the_lock_says_so_in_a_sentence(tmp_path):
    path = tmp_path / "busy.db"
    store = TreeStore(open_db(path, busy_timeout=0.05))
    tree = castle(store)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusy, match="another StoryLoom is writing"):
            store.vote(store.root(tree.id).id, "bo", 1)
    finally:
        holder.rollback()
    store.vote(store.root(tree.id).id, "bo", 1)  # and works once the other writer is done


def test_a_vote_waits_for_another_writer_instead_of_failing(tmp_path):
    path = tmp_path / "wait.db"
    store = TreeStore(open_db(path))
    tree = castle(store)
    root = store.root(tree.id)
    holder = sqlite3.connect(path, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("update nodes set choices = 7 where id = ?", [root.id])
    threading.Timer(0.3, holder.commit).start()
    store.vote(root.id, "bo", 1)  # reads, then writes: waits for the lock instead of "database is locked"
    assert store.node(root.id).ups == 1 and store.node(root.id).choices == 7


def test_two_imports_of_one_pack_at_once_one_merges_one_finds_nothing_new(tmp_path):
    path = tmp_path / "two.db"
    open_db(path)
    pack_file = tmp_path / "p.json"
    pack_file.write_text(json.dumps(pack_of(2000)))
    results, start = [], threading.Barrier(2)

    def run():
        store = TreeStore(open_db(path))
        start.wait()
        try:
            results.append(tree_packs.import_path(store, pack_file).nodes_added)
        except Exception as exc:  # noqa: BLE001 - the test says which
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == [0, 2000], results


# -- hostile files --------------------------------------------------------------------------
def test_twee_headers_and_links_parse_in_linear_time(store):
    """Before: the 1 KB header never finished; 40 KB of "[[" took 33 s."""
    with pytest.raises(PackError, match="not closed"):
        tree_packs.parse_twee(":: x" + " " * 1000 + "[")
    title, start, bodies = tree_packs.parse_twee(":: Start\n" + "[[" * 20_000 + "\n" + "[[" * 20_000 + "]]")
    assert bodies["Start"].startswith("[[[[")
    report = import_twee(store, ":: Start\n" + "[[" * 5_000)
    assert report.nodes_added == 1 and store.node(store.root(report.tree_id).id).outcome == "[[" * 5_000


def test_twee_import_keeps_the_pack_limits(store, monkeypatch):
    """Before: 300,000 nodes from a 3.6 MB file, and a 30 MB outcome, were accepted."""
    links = " ".join(f"[[a->p{i % 10}]]" for i in range(300_000))
    with pytest.raises(PackError, match="250,000"):
        import_twee(store, ":: Start\n" + links)
    with pytest.raises(PackError, match="limit is 20,000"):
        import_twee(store, ":: Start\n" + "x" * 20_001)
    with pytest.raises(PackError, match="limit is 500"):
        import_twee(store, ":: Start\n[[" + "y" * 501 + "->B]]\n:: B\nb")
    assert store.db.execute("select count(*) from nodes").fetchone()[0] == 0


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000, "nested too deeply"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "nested too deeply"),
    (json.dumps(pack_of(tree={"id": "tree00000001", "title": "\ud800"})), "lone surrogate"),
    (json.dumps(pack_of()).replace('"A1"', '"A1", "choices": 1234567890123456789012345678901234567890'), "schema"),
    ("[]", "JSON object"),
])
def test_hostile_packs_are_a_sentence_not_a_traceback(store, text, message):
    """Before: RecursionError, UnicodeEncodeError, OverflowError."""
    with pytest.raises(PackError, match=message):
        import_pack(store, load_pack(text))


@pytest.mark.parametrize("data", ['[1, 2]', '{"start": 5}', '"Start"', '{"start": []}'])
def test_storydata_of_the_wrong_type_is_a_sentence(store, data):
    with pytest.raises(PackError, match="StoryData"):
        import_twee(store, f":: StoryData\n{data}\n\n:: Start\nHi.")


def test_files_that_are_not_regular_are_refused_before_reading(store, tmp_path):
    """Before: a symlink to /dev/zero was read whole (MemoryError); a FIFO blocked forever."""
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(PackError, match="not a regular file"):
        tree_packs.import_path(store, zero)
    fifo = tmp_path / "pipe.twee"
    os.mkfifo(fifo)
    with pytest.raises(PackError, match="not a regular file"):
        tree_packs.import_path(store, fifo)
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(PackError, match="folder"):
        tree_packs.import_path(store, folder)


def test_pack_votes_cannot_impersonate_or_outweigh_local_voters(store, tmp_path):
    """Before: 1,000 fake voters topped the ranking, "alice" in a pack became alice's vote,
    100,000 votes in one pack were accepted."""
    tree = castle(store)
    root = store.root(tree.id)
    walk = next(k for k in store.children(root.id) if k.action == "Walk away.")
    pack = export_pack(store, tree.id)
    pack["origin"] = "someone-elses-db"  # a pack from elsewhere (one of our own brings no votes back)
    pack["votes"] = [{"node_id": walk.id, "voter": f"sock{i}", "value": 1} for i in range(1000)]
    pack["votes"].append({"node_id": walk.id, "voter": "bob", "value": -1})
    bob_store = store
    report = import_pack(store, load_pack(json.dumps(pack)))
    walked = store.node(walk.id)
    assert (walked.ups, walked.downs) == (0, 0)  # local votes only: ranking untouched
    assert (walked.pack_ups, walked.pack_downs) == (tree_packs.PACK_VOTE_CAP, 1)  # kept apart, capped
    assert report.votes_capped == 1000 - tree_packs.PACK_VOTE_CAP
    assert bob_store.my_vote(walk.id, "bob") == 0  # not stored as a local voter's
    again = import_pack(store, load_pack(json.dumps(pack)))
    assert again.votes_added == 0 and store.node(walk.id).pack_ups == tree_packs.PACK_VOTE_CAP
    # with --trust the names merge, but a vote a local voter already cast stays hers
    door = next(k for k in store.children(root.id) if k.action == "Open the door.")
    pack["votes"] = [{"node_id": door.id, "voter": "alice", "value": -1}, {"node_id": door.id, "voter": "cy", "value": 1}]
    import_pack(store, load_pack(json.dumps(pack)), trust=True)
    assert store.my_vote(door.id, "alice") == 1 and store.my_vote(door.id, "cy") == 1
    huge = {**pack, "votes": [{"node_id": door.id, "voter": f"v{i}", "value": 1} for i in range(100_000)]}
    with pytest.raises(PackError, match="100,000 votes; the limit is 20,000"):
        load_pack(json.dumps(huge))


def test_packs_carry_vote_counts_not_voters_names(store):
    tree = castle(store)
    text = dump_pack(export_pack(store, tree.id))
    assert "alice" not in text and '"ups": 1' in text
    assert "alice" in dump_pack(export_pack(store, tree.id, voters=True))  # only when the owner asks


@pytest.mark.parametrize("where", ["tree", "node", "parent"])
def test_ids_with_a_trailing_newline_are_refused(store, where):
    pack = pack_of()
    if where == "tree":
        pack["tree"]["id"] += "\n"
    elif where == "node":
        pack["nodes"][1]["id"] += "\n"
    else:
        pack["nodes"][1]["parent_id"] += "\n"
    with pytest.raises(PackError, match="schema"):
        load_pack(json.dumps(pack))
    with pytest.raises(PackError, match="not a valid id"):
        import_pack(store, pack)  # checked in code as well, not only by the schema


def test_twee_export_escapes_what_twine_reads_as_structure(store, tmp_path):
    """Before: a newline in a title or action wrote extra passage headers; our re-import failed."""
    tree = Tree("Title\n:: Evil [tag]")
    root = store.create(tree, "Line one\n:: Start\n[[Injected->Start]] <script>x</script> (set: $gold to 5) \\")
    store.add_child(root, "Go\n:: Start\n[[x]] -> | <-", "A & B {c} _temp $var")
    twee = export_twee(store, tree.id)
    headers = [line for line in twee.split("\n") if line.startswith("::")]
    assert len(headers) == 4  # StoryTitle, StoryData, Start, the option's passage: nothing injected
    assert "<script>" not in twee and "(set:" not in twee and "$gold" not in twee and "[[Injected" not in twee
    other = TreeStore(open_db(tmp_path / "b.db"))
    report = import_twee(other, twee)
    back = other.root(report.tree_id)
    assert other.tree(report.tree_id).title == "Title :: Evil [tag]"
    assert back.outcome == store.root(tree.id).outcome  # the text comes back exactly
    kid = other.children(back.id)[0]
    assert kid.action == "Go :: Start [[x]] → | ←" and kid.outcome == "A & B {c} _temp $var"


def test_error_messages_quote_at_most_about_80_characters(store):
    """Before: a 10 MB outcome made a 10 MB message; a 1M-node pack a 75 MB one."""
    big = pack_of()
    big["nodes"][1]["outcome"] = "x" * 10_000_000
    with pytest.raises(PackError) as caught:
        load_pack(json.dumps(big))
    assert len(str(caught.value)) < 300
    many = pack_of()
    many["nodes"] = many["nodes"] * 90_000
    with pytest.raises(PackError) as caught:
        load_pack(json.dumps(many))
    assert len(str(caught.value)) < 300
    with pytest.raises(PackError) as caught:
        tree_packs.parse_twee(":: A\n:: " + "n" * 100_000 + " junk } {")
    assert len(str(caught.value)) < 300


# -- terminal and output --------------------------------------------------------------------
def test_cli_strips_control_characters_from_what_it_prints(tmp_path, capsys):
    """Before: ESC sequences in a title cleared the screen and set the window title."""
    from storyloom.cli import main

    store = TreeStore(open_db())
    evil = "Nice\x1b[2J\x1b]0;pwned\x07\x9b31m\u202etitle\nstoryloom: fake"
    store.create(Tree(evil), "Hi.")
    assert main(["tree", "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert out.count("\n") == len(store.trees()) and "Nice[2J]0;pwned31mtitlestoryloom: fake" in out  # a line a tree
    pack = pack_of(tree={"id": "tree00000009", "title": "Bad\x1b[31m"})
    (tmp_path / "p.json").write_text(json.dumps(pack))
    assert main(["tree", "import", str(tmp_path / "p.json")]) == 0
    assert "\x1b" not in capsys.readouterr().out
    (tmp_path / "q\x1b[2J.json").write_text("{")
    assert main(["tree", "import", str(tmp_path / "q\x1b[2J.json")]) == 2
    assert "\x1b" not in capsys.readouterr().err


def test_export_to_a_file_is_whole_or_nothing_and_never_overwrites_unasked(tmp_path, capsys, monkeypatch):
    """Before: a missing folder, a directory or a full disk were tracebacks; a full disk truncated the file."""
    from storyloom.cli import main

    store = TreeStore(open_db())
    tree = castle(store)
    out = tmp_path / "castle.json"
    assert main(["tree", "export", tree.id, "-o", str(tmp_path / "nope" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["tree", "export", tree.id, "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    out.write_text("precious")
    assert main(["tree", "export", tree.id, "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "precious"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        assert main(["tree", "export", tree.id, "-o", str(out), "--force"]) == 2
    assert "disk is full" in capsys.readouterr().err and out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["castle.json", "home"]  # no temp file left
    assert main(["tree", "export", tree.id, "-o", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["tree"]["id"] == tree.id


# -- privacy --------------------------------------------------------------------------------
def test_database_its_journal_and_settings_are_private_files(storyloom_home):
    from storyloom.config import Config, save_config
    from storyloom.paths import config_file, database_file

    store = TreeStore(open_db())
    castle(store)
    save_config(Config(player="ada"))
    db = database_file()
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), config_file()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(storyloom_home.stat().st_mode) == 0o700


def test_an_old_world_readable_database_is_made_private(tmp_path):
    path = tmp_path / "old.db"
    open_db(path).db = None
    os.chmod(path, 0o644)
    open_db(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_private_ids_answer_like_unknown_ones(store, tmp_path):
    """Before: export and import told a private id (and a private node id) from an unknown one."""
    secret = Tree("Secret", visibility="private", owner="ada")
    root = store.create(secret, "Hidden.")
    unknown = "f" * 24
    messages = []
    for tree_id in (secret.id, unknown):
        with pytest.raises(TreeNotFound) as caught:
            export_pack(store, tree_id, viewer="mallory")
        messages.append(str(caught.value).replace(tree_id, "ID"))
    assert messages[0] == messages[1]
    with pytest.raises(PackError, match="Private"):  # its owner is told why
        export_pack(store, secret.id, viewer="ada")
    reports = []
    for tree_id, node_id in ((secret.id, root.id), ("e" * 24, "d" * 24)):
        pack = pack_of(tree={"id": tree_id, "title": "Probe"})
        pack["nodes"][0]["id"] = node_id
        for n in pack["nodes"][1:]:
            n["parent_id"] = node_id
        reports.append(import_pack(store, load_pack(json.dumps(pack)), owner="mallory"))
    assert [(r.nodes_added, r.outcomes_filled) for r in reports] == [(3, 0), (3, 0)]
    assert store.node(root.id).outcome == "Hidden." and store.tree(secret.id).visibility == "private"


def test_private_trees_open_and_take_votes_only_from_their_owner(store):
    secret = Tree("Secret", visibility="private", owner="ada")
    root = store.create(secret, "Hidden.")
    assert store.tree(secret.id, viewer="ada").title == "Secret"
    with pytest.raises(TreeNotFound):
        store.tree(secret.id, viewer="mallory")
    with pytest.raises(TreeNotFound):
        store.vote(root.id, "mallory", 1)
    store.vote(root.id, "ada", 1)
    assert store.node(root.id).ups == 1


# -- bad local state ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["garbage", "truncated", "directory", "readonly"])
def test_a_broken_database_is_a_sentence_and_is_left_as_it_was(tmp_path, kind, monkeypatch):
    path = tmp_path / "s.db"
    if kind == "garbage":
        path.write_bytes(b"this is not a database at all\n" * 200)
    elif kind == "truncated":
        store = TreeStore(open_db(path))
        for i in range(200):
            store.create(Tree(f"T{i}"), "x" * 2000)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.db.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        for extra in ("-wal", "-shm"):
            (tmp_path / f"s.db{extra}").unlink(missing_ok=True)
    elif kind == "directory":
        path.mkdir()
    else:
        open_db(path).db = None
        os.chmod(path, 0o400)
        if os.geteuid() == 0:  # root writes through chmod: simulate what others see
            monkeypatch.setattr(os, "access", lambda p, m, **k: m != os.W_OK)
    before = sorted(p.name for p in tmp_path.iterdir())
    snapshot = path.read_bytes() if path.is_file() else None
    with pytest.raises(StoreError) as caught:
        open_db(path)
    message = str(caught.value)
    assert {"garbage": "not a StoryLoom database", "truncated": "truncated", "directory": "folder",
            "readonly": "read-only"}[kind] in message
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if snapshot is not None:
        assert path.read_bytes() == snapshot


def test_a_full_disk_is_a_sentence(tmp_path):
    store = TreeStore(open_db(tmp_path / "f.db"))
    tree = castle(store)
    store.db.execute("PRAGMA max_page_count = 1")  # SQLite answers SQLITE_FULL, as on a full disk
    with pytest.raises(StoreError, match="disk is full"):
        store.create(Tree("More"), "y" * 100_000)
    assert [t.id for t in store.trees()] == [tree.id]


def test_a_database_from_a_newer_storyloom_is_not_written_into(tmp_path):
    """Before: import wrote into it and list crashed."""
    path = tmp_path / "new.db"
    db = open_db(path)
    db["_sqlite_migrations"].insert({"migration_set": "storyloom", "name": "099_from_the_future",
                                     "applied_at": "2030-01-01"})
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer StoryLoom"):
        open_db(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content,message", [
    (b"model = \"\xff\xfe\"\n", "not UTF-8"),
    (None, "not a regular file"),
    (b"player = {a=1}\n", "player must be a string"),
    (b'sampler = "hot"\n', "sampler must be a table"),
    (b"model = [1, 2]\n", "model must be a string"),
])
def test_a_bad_settings_file_is_one_sentence_defaults_used_and_nothing_overwritten(storyloom_home, content, message):
    from storyloom.config import Config, ConfigError, load_config, load_or_default
    from storyloom.paths import config_file

    path = config_file()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config()
    config, warning = load_or_default()
    assert config == Config() and message in warning and "\n" not in warning
    assert path.is_dir() if content is None else path.read_bytes() == content

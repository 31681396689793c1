"""Lorebooks: each tool's format in and out, round trips, hostile files, the store, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from storyloom.cli import main
from storyloom.store import lore_formats as lf
from storyloom.store.db import open_db
from storyloom.store.lorebooks import MAX_ENTRIES, LoreError, Lorebook, LoreStore
from storyloom.store.stories import Game, GameStore, Turn, WorldEntry

DATA = Path(__file__).parent.parent / "data" / "lore"


def by_label(report) -> dict[str, WorldEntry]:
    return {e.label(): e for e in report.book.entries}


def test_sillytavern_world_info():
    report = lf.import_path(DATA / "sillytavern_eldoria.json")
    assert report.format == "sillytavern" and report.book.name == "sillytavern_eldoria"
    assert (len(report.book.entries), report.kept, report.mapped, report.dropped) == (5, 4, 1, 0)
    e = by_label(report)
    assert e["Castle Varn"].keys == ["Castle Varn", "the castle"] and not e["Castle Varn"].whole_word  # ST default
    dragon = e["Sleeping dragon"]
    assert (dragon.secondary, dragon.logic, dragon.order, dragon.scan_depth, dragon.prevent_recursion,
            dragon.whole_word) == (["asleep", "sleeping"], "not_any", 200, 2, True, True)
    morrow = e["Morrow (regex)"]
    assert morrow.keys == ["/\\bMorrow(?:'s)?\\b/i"] and morrow.exclude_recursion
    assert e["Tone"].constant and not e["Unused"].enabled
    assert [x.label() for x in report.book.entries][:2] == ["Castle Varn", "Sleeping dragon"]  # displayIndex order
    line = report.line()
    assert line.startswith("Imported 5 entries into sillytavern_eldoria (kept 4, mapped 1, dropped 0: ")
    assert "insertion position" in line and "probability" in line


def test_kobold_lite_list_and_koboldai_save():
    lite = lf.import_path(DATA / "kobold_lite_worldinfo.json")
    e = by_label(lite)
    assert e["Ryn"].keys == ["Ryn", "the smuggler"] and not e["Ryn"].whole_word
    assert (e["Docks at night"].secondary, e["Docks at night"].logic) == (["night"], "and_any")
    assert (e["Guild"].secondary, e["Guild"].logic) == (["festival"], "not_any")  # Lite's anti-keys
    assert e["Setting"].constant and not e["Setting"].enabled
    assert lite.mapped == 1 and "probability" in lite.line()
    save = lf.import_path(DATA / "koboldai_story.json")
    assert [x.keys for x in save.book.entries] == [["lighthouse", "beacon"], ["keeper"]]  # the blank row skipped
    assert save.book.entries[1].secondary == ["lighthouse"]


def test_novelai_lorebook():
    report = lf.import_path(DATA / "novelai_saltmarch.lorebook")
    e = by_label(report)
    assert e["Saltmarch"].order == 400 and e["Iselde"].order == 500
    assert e["Iselde"].keys == ["/\\b(captain|Iselde)\\b/i"]
    assert e["Style"].constant
    assert (report.kept, report.mapped) == (2, 1)
    assert "search range" in report.line() and "phrase biases" in report.line()


def _rich_book() -> Lorebook:
    return Lorebook("Round", [
        WorldEntry(["dragon", "/wyrm/i"], "Dragons.", secondary=["cave", "lair"], logic="and_all", whole_word=False,
                   case_sensitive=True, order=250, scan_depth=3, exclude_recursion=True, comment="Dragon"),
        WorldEntry(["king"], "The king.", secondary=["dead"], logic="not_any", prevent_recursion=True, enabled=False),
        WorldEntry([], "Always rain.", constant=True, order=-5, secondary=["x"], logic="not_all"),
    ])


@pytest.mark.parametrize("fmt", lf.FORMATS)
def test_round_trip_keeps_keys_text_order_and_flags(fmt):
    book = _rich_book()
    text = lf.export(book, fmt)
    back = lf.import_bytes(text.encode(), name="Back")
    assert back.format == fmt
    fields = ("keys", "text", "secondary", "logic", "whole_word", "case_sensitive", "constant", "order", "scan_depth",
              "exclude_recursion", "prevent_recursion", "enabled")
    for mine, theirs in zip(book.entries, back.book.entries, strict=True):
        assert {f: getattr(mine, f) for f in fields} == {f: getattr(theirs, f) for f in fields}
    assert back.dropped == 0


def test_exports_have_each_tools_shape():
    book = _rich_book()
    st = json.loads(lf.export(book, "sillytavern"))
    first = st["entries"]["0"]
    assert first["key"] == ["dragon", "/wyrm/i"] and first["selectiveLogic"] == 3 and first["order"] == 250
    assert first["excludeRecursion"] is True and st["entries"]["1"]["disable"] is True
    nai = json.loads(lf.export(book, "novelai"))
    assert nai["lorebookVersion"] == 5 and nai["entries"][2]["forceActivation"] is True
    assert nai["entries"][0]["contextConfig"]["budgetPriority"] == 250
    kobold = json.loads(lf.export(book, "kobold"))
    assert kobold[0]["key"] == "dragon,/wyrm/i" and kobold[0]["selective"] is True
    assert kobold[1]["keyanti"] == "dead" and kobold[1]["widisabled"] is True


@pytest.mark.parametrize("data, says", [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "binary file"),
    (b"\xff\xfe\x00garbage", "binary file"),
    (b"\xc3\x28 not utf8", "not UTF-8"),
    (b"[" * 200_000, "nests too deeply"),
    (b'{"entries": {"0": ', "not valid JSON"),
    (b'{"hello": "world"}', "not a lorebook StoryLoom knows"),
    (b'{"entries": {"0": {"key": 5, "content": ["x"]}}}', "Nothing to import"),
    (b'{"lorebookVersion": 5, "entries": [1, "two", null]}', "Nothing to import"),
    (b'{"entries": []}', "not a lorebook StoryLoom knows"),
    (b"[]", "not a lorebook StoryLoom knows"),
])
def test_hostile_files_get_one_sentence(data, says):
    with pytest.raises(LoreError, match=says) as caught:
        lf.import_bytes(data)
    assert "\n" not in str(caught.value)


def test_wrong_types_in_some_entries_drop_only_those():
    data = {"entries": {"0": {"key": ["ok"], "content": "Fine."}, "1": {"key": "k", "content": {"x": 1}},
                        "2": {"key": ["k"], "content": "x", "order": "high"}, "3": "not an object",
                        "4": {"key": [["nested"]], "content": "x"}, "5": {"key": ["k"], "content": "x" * 30_000}}}
    report = lf.import_bytes(json.dumps(data).encode())
    assert [e.text for e in report.book.entries] == ["Fine."]
    assert report.dropped == 5
    assert "dropped" in report.line() and "not objects" in report.line()


def test_too_many_entries_and_too_big_files(tmp_path, monkeypatch):
    entries = {str(i): {"key": ["k"], "content": "x"} for i in range(MAX_ENTRIES + 1)}
    with pytest.raises(LoreError, match="the limit is 5,000"):
        lf.import_bytes(json.dumps({"entries": entries}).encode())
    monkeypatch.setattr(lf, "MAX_FILE_BYTES", 100)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"entries": {"0": {"key": ["k"], "content": "x" * 200}}}))
    with pytest.raises(LoreError, match="may be at most"):
        lf.import_path(big)
    with pytest.raises(LoreError, match="is a folder"):
        lf.import_path(tmp_path)
    with pytest.raises(LoreError, match="Cannot read"):
        lf.import_path(tmp_path / "missing.json")


def test_store_books_attach_to_games_and_go_with_them(tmp_path):
    db = open_db(tmp_path / "s.db")
    lore, games = LoreStore(db), GameStore(db)
    book = lore.create(lf.import_path(DATA / "sillytavern_eldoria.json").book)
    twin = lore.create(lf.import_path(DATA / "sillytavern_eldoria.json").book, unique_name=True)
    assert twin.name == "sillytavern_eldoria (2)"
    with pytest.raises(LoreError, match="already exists"):
        lore.create(Lorebook("SILLYTAVERN_eldoria"))
    game = Game(title="g", turns=[Turn("start", "Go.", "")], world_info=[WorldEntry(["a"], "b")])
    games.create(game)
    lore.attach(game.id, book.id)
    lore.attach(game.id, book.id)  # twice is once
    loaded = games.load(game.id)
    assert [b.name for b in loaded.lorebooks] == ["sillytavern_eldoria"]
    assert loaded.lorebooks[0].entries == book.entries and loaded.world_info == [WorldEntry(["a"], "b")]
    book.entries[0].text = "Edited."
    lore.save(book)
    assert lore.get("SillyTavern_Eldoria").entries[0].text == "Edited."
    assert [(s.name, s.entries, s.games) for s in lore.list()] == [("sillytavern_eldoria", 5, 1),
                                                                   ("sillytavern_eldoria (2)", 5, 0)]
    games.delete(game.id)  # the attachment goes with the game; the book stays
    assert lore.list()[0].games == 0
    lore.delete(book.id)
    with pytest.raises(LoreError, match="No lorebook named"):
        lore.get(book.id)
    bad = Lorebook("Bad", [WorldEntry(["k"] * 101, "x")])
    with pytest.raises(LoreError, match="101 keys"):
        lore.create(bad)
    assert [s.name for s in lore.list()] == ["sillytavern_eldoria (2)"]  # nothing half-written


def test_old_game_rows_still_load(tmp_path):
    db = open_db(tmp_path / "old.db")
    game = Game(title="old", turns=[Turn("start", "Go.", "")])
    GameStore(db).create(game)
    db["games"].update(game.id, {"world_info": json.dumps([{"keys": ["gate"], "text": "Iron."}])})
    assert GameStore(db).load(game.id).world_info == [WorldEntry(["gate"], "Iron.")]


def test_cli_import_list_export_attach(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STORYLOOM_HOME", str(tmp_path))
    assert main(["lore", "import", str(DATA / "novelai_saltmarch.lorebook"), "--name", "Saltmarch"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Imported 3 entries into Saltmarch (kept 2, mapped 1, dropped 0: ")
    assert out.count("\n") == 1
    assert main(["lore", "list"]) == 0
    assert "Saltmarch  3 entries  0 games  novelai" in capsys.readouterr().out
    target = tmp_path / "out.json"
    assert main(["lore", "export", "Saltmarch", "--format", "sillytavern", "-o", str(target)]) == 0
    assert json.loads(target.read_text())["entries"]["1"]["order"] == 500
    assert main(["lore", "export", "Saltmarch", "--format", "sillytavern", "-o", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    game = Game(title="Harbour", turns=[Turn("start", "Go.", "")])
    GameStore(open_db(tmp_path / "storyloom.db")).create(game)
    assert main(["lore", "attach", "Saltmarch", "--game", "Harbour"]) == 0
    assert "attached to Harbour" in capsys.readouterr().out
    assert [b.name for b in GameStore(open_db(tmp_path / "storyloom.db")).load(game.id).lorebooks] == ["Saltmarch"]
    assert main(["lore", "detach", "Saltmarch", "--game", game.id[:8]]) == 0
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\x00\x01binary")
    assert main(["lore", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("storyloom: This is a binary file") and err.count("\n") == 1


def test_koboldai_united_v2_and_ai_dungeon_lists():
    united = {"gamestarted": True, "worldinfo_v2": {"entries": {"0": {
        "uid": 0, "title": "Lighthouse", "key": ["lighthouse", "beacon"], "keysecondary": [], "folder": "root",
        "constant": False, "content": "Dark for ten years.", "manual_text": "Dark for ten years.", "comment": "",
        "token_length": 6, "selective": False, "wpp": {}, "use_wpp": False, "object_type": None}},
        "folders": {"root": [0]}}}
    report = lf.import_bytes(json.dumps(united).encode())
    assert report.format == "kobold"
    assert (report.book.entries[0].keys, report.book.entries[0].comment) == (["lighthouse", "beacon"], "Lighthouse")
    aid = [{"keys": "tavern, inn", "entry": "The Prancing Goat serves sour ale."}]
    assert lf.import_bytes(json.dumps(aid).encode()).book.entries[0].keys == ["tavern", "inn"]


def test_character_card_books():
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Seraphina", "character_book": {
        "name": "Seraphina's glade", "entries": [
            {"keys": ["glade"], "secondary_keys": ["night"], "content": "The glade glows at night.", "enabled": True,
             "insertion_order": 120, "case_sensitive": False, "constant": False, "selective": True, "name": "Glade",
             "extensions": {"selectiveLogic": 3, "exclude_recursion": True, "match_whole_words": True,
                            "scan_depth": 2, "position": 0}},
            {"keys": ["w(o|i)lf"], "content": "Wolves guard it.", "enabled": False, "insertion_order": 10,
             "use_regex": True, "extensions": {}}]}}}
    report = lf.import_bytes(json.dumps(card).encode())
    glade, wolf = report.book.entries
    assert report.book.name == "Seraphina's glade"
    assert (glade.secondary, glade.logic, glade.order, glade.exclude_recursion, glade.whole_word, glade.scan_depth,
            glade.comment) == (["night"], "and_all", 120, True, True, 2, "Glade")
    assert wolf.keys == ["/w(o|i)lf/"] and not wolf.enabled

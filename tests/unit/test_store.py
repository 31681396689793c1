"""The database: migrations from empty, idempotent reopen, foreign keys, WAL."""
from __future__ import annotations

import pytest

import sqlite_utils

from storyloom.store.cowrite import Candidate, CoStory, CoTurn, CowriteStore
from storyloom.store.db import StoreError, migrations, open_db
from storyloom.store.stories import Game, GameStore, Turn


def test_empty_database_is_migrated_and_reopen_changes_nothing(tmp_path):
    path = tmp_path / "fresh.db"
    db = open_db(path)
    assert {"games", "turns"} <= set(db.table_names())
    applied = [m.name for m in migrations.applied(db)]
    assert applied == ["001_adventure_games", "002_cowrite_stories", "003_story_trees", "004_poems", "005_pack_votes",
                       "006_link_index", "007_lorebooks", "008_game_summary",
                       "009_turn_earlier_outputs", "010_game_draft", "011_tree_drafts"]
    again = open_db(path)
    assert [m.name for m in migrations.applied(again)] == applied
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_turns_need_their_game(tmp_path):
    db = open_db(tmp_path / "fk.db")
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        db["turns"].insert({"game_id": "missing", "position": 0, "kind": "do", "action": "a",
                            "output": "b", "active": 1, "created": "now"})


def test_games_list_newest_first_and_delete(tmp_path):
    store = GameStore(open_db(tmp_path / "g.db"))
    a = Game(title="A", turns=[Turn("start", "a", "x")], updated="2026-01-01T00:00:00+00:00")
    b = Game(title="B", turns=[Turn("start", "b", "y")], updated="2026-02-01T00:00:00+00:00")
    store.create(a)
    store.create(b)
    assert [g.title for g in store.list()] == ["B", "A"]
    assert len(a.id) == 32 and a.id != b.id  # random ids, never row numbers
    store.delete(b.id)
    assert [g.title for g in store.list()] == ["A"]


def test_previous_release_database_gains_cowrite_tables_and_keeps_its_games(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="002_cowrite_stories")  # the schema stop 8 shipped
    old["games"].insert({"id": "g0", "title": "Old game", "scenario": "custom", "context": "", "memory": "",
                         "authors_note": "", "world_info": "[]", "created": "now", "updated": "now"})
    old.conn.close()
    db = open_db(path)
    assert {"co_stories", "co_turns"} <= set(db.table_names())
    assert [g.title for g in GameStore(db).list()] == ["Old game"]


def test_previous_release_games_gain_an_empty_summary_and_keep_it_once_written(tmp_path):
    path = tmp_path / "before-summary.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="008_game_summary")
    old["games"].insert({"id": "g1", "title": "Old", "scenario": "custom", "context": "", "memory": "m",
                         "authors_note": "", "world_info": "[]", "created": "now", "updated": "now"})
    old.conn.close()
    store = GameStore(open_db(path))
    game = store.load("g1")
    assert (game.summary, game.summary_upto, game.summary_mode, game.memory) == ("", 0, "auto", "m")
    game.summary, game.summary_upto, game.summary_mode = "You met Voss.\nYou took the compass.", 12, "pinned"
    store.save_meta(game)
    again = store.load("g1")
    assert (again.summary, again.summary_upto, again.summary_mode) == ("You met Voss.\nYou took the compass.", 12,
                                                                       "pinned")


def test_cowrite_story_round_trip_edit_remove(tmp_path):
    store = CowriteStore(open_db(tmp_path / "c.db"))
    story = CoStory(title="Lighthouse", premise="Quiet, salt-stained.", length="sentence", candidates_n=3,
                    turns=[CoTurn("human", "The boat came at dusk.")])
    store.create(story)
    story.turns.append(CoTurn("model", "Its sail was torn.", edited=True))
    story.pending = [Candidate("A gull cried.", -1.5, -1.2, 0.1)]
    store.add_turn(story)
    loaded = store.load(story.id)
    assert loaded.turns == story.turns and loaded.pending == story.pending
    assert (loaded.title, loaded.premise, loaded.length, loaded.candidates_n) == ("Lighthouse", "Quiet, salt-stained.", "sentence", 3)
    story.turns[0].text = "The boat came at dawn."
    store.update_turn(story, 0)
    del story.turns[1]
    story.pending = []
    store.replace_turns(story)
    loaded = store.load(story.id)
    assert [t.text for t in loaded.turns] == ["The boat came at dawn."] and loaded.pending == []
    assert [s.title for s in store.list()] == ["Lighthouse"] and store.list()[0].turns == 1
    store.delete(story.id)
    assert store.list() == []


def test_deleting_a_node_finds_links_into_it_by_index(tmp_path):
    """The foreign-key check behind every deleted node looks links up by index, not by a scan."""
    db = open_db(tmp_path / "links.db")
    plan = " ".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN select id from nodes where link_to = 'x'"))
    assert "USING" in plan and "INDEX" in plan and "SCAN nodes" not in plan, plan

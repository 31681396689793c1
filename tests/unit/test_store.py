"""The database: migrations from empty, idempotent reopen, foreign keys, WAL."""
from __future__ import annotations

import pytest

from storyloom.store.db import migrations, open_db
from storyloom.store.stories import Game, GameStore, Turn


def test_empty_database_is_migrated_and_reopen_changes_nothing(tmp_path):
    path = tmp_path / "fresh.db"
    db = open_db(path)
    assert {"games", "turns"} <= set(db.table_names())
    applied = [m.name for m in migrations.applied(db)]
    assert applied == ["001_adventure_games"]
    again = open_db(path)
    assert [m.name for m in migrations.applied(again)] == applied
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_turns_need_their_game(tmp_path):
    db = open_db(tmp_path / "fk.db")
    with pytest.raises(Exception):
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

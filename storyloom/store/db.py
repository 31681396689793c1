"""Open the StoryLoom database: WAL journal, foreign keys, named migrations (sqlite-utils)."""
from __future__ import annotations

from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from storyloom.paths import database_file

migrations = Migrations("storyloom")


@migrations(name="001_adventure_games")
def _adventure_games(db: sqlite_utils.Database) -> None:
    db["games"].create(
        {"id": str, "title": str, "scenario": str, "context": str, "memory": str,
         "authors_note": str, "world_info": str, "created": str, "updated": str},
        pk="id",
    )
    db["turns"].create(
        {"id": int, "game_id": str, "position": int, "kind": str, "action": str, "output": str,
         "active": int, "created": str},
        pk="id", foreign_keys=[("game_id", "games", "id")],
    )
    db["turns"].create_index(["game_id", "position"], unique=True)
    db["games"].create_index(["updated"])


@migrations(name="002_cowrite_stories")
def _cowrite_stories(db: sqlite_utils.Database) -> None:
    db["co_stories"].create(
        {"id": str, "title": str, "premise": str, "candidates_n": int, "length": str,
         "pending": str, "created": str, "updated": str},
        pk="id",
    )
    db["co_turns"].create(
        {"id": int, "story_id": str, "position": int, "author": str, "text": str, "edited": int,
         "created": str},
        pk="id", foreign_keys=[("story_id", "co_stories", "id")],
    )
    db["co_turns"].create_index(["story_id", "position"])
    db["co_stories"].create_index(["updated"])


@migrations(name="003_story_trees")
def _story_trees(db: sqlite_utils.Database) -> None:
    db["trees"].create(
        {"id": str, "title": str, "scenario": str, "visibility": str, "owner": str, "created": str},
        pk="id",
    )
    db.execute(
        """create table nodes (
            id text primary key,
            tree_id text not null references trees(id),
            parent_id text references nodes(id),
            action text not null default '',
            outcome text not null default '',
            author text not null default '',
            depth integer not null default 0,
            link_to text references nodes(id),
            ups integer not null default 0,
            downs integer not null default 0,
            choices integer not null default 0,
            created text not null
        )"""
    )
    db["nodes"].create_index(["parent_id"])  # children of X (ranked in Python: a handful of rows)
    db["nodes"].create_index(["tree_id", "parent_id"])  # a tree's root
    db.execute(
        """create table votes (
            node_id text not null references nodes(id),
            voter text not null,
            value integer not null check (value in (-1, 1)),
            created text not null,
            primary key (node_id, voter)
        ) without rowid"""
    )
    db["bookmarks"].create(
        {"player": str, "node_id": str, "label": str, "created": str},
        pk=("player", "node_id"), foreign_keys=[("node_id", "nodes", "id")],
    )
    db["trees"].create_index(["visibility", "created"])


@migrations(name="004_poems")
def _poems(db: sqlite_utils.Database) -> None:
    db["poems"].create(
        {"id": str, "topic": str, "form": str, "text": str, "created": str, "updated": str},
        pk="id",
    )
    db["poems"].create_index(["updated"])


def open_db(path: Path | str | None = None) -> sqlite_utils.Database:
    """Open (creating and migrating as needed). Every write the app makes is one transaction."""
    path = Path(path) if path is not None else database_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across app crashes and kills
    migrations.apply(db)
    return db

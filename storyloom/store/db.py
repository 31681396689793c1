"""Open the StoryLoom database: WAL journal, foreign keys, named migrations (sqlite-utils).

Several processes may share one database (two terminals, a bench, an import). Every write
transaction takes the write lock up front (BEGIN IMMEDIATE) and waits for it with a busy
timeout: a deferred BEGIN that reads first cannot wait for the lock later (SQLite answers
"database is locked" at once to avoid a deadlock). SQLite's own errors become StoreErrors
with a sentence saying what is wrong and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from pathlib import Path
from typing import Iterator

import sqlite_utils
from sqlite_utils.migrations import Migrations

from storyloom import StoryloomError
from storyloom.paths import database_file, private_file

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction (a big import)
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(StoryloomError):
    """The database could not be read or written; the message says why and what to do."""


class DatabaseBusy(StoreError):
    pass


class DiskFull(StoreError):
    pass


def describe(exc: BaseException, path: Path | str | None = None) -> StoreError:
    """SQLite's error (or an OSError) as a StoreError a person can act on."""
    where = f" ({path})" if path else ""
    text = str(exc).lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "disk is full" in text or code == 13:
        return DiskFull(f"The disk is full{where}: this change was not saved. Free some space and try again.")
    if "locked" in text or "busy" in text:
        return DatabaseBusy("The database is busy (another StoryLoom is writing to it): this change was not "
                            "saved. Try again in a moment.")
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        return StoreError(f"The database{where} is read-only: nothing can be saved. Check its permissions "
                          "(and its folder's), or set STORYLOOM_HOME to a folder you can write to.")
    if "not a database" in text or "malformed" in text or "disk i/o" in text:
        return StoreError(f"The database{where} is damaged ({exc}). It was left as it is: move it aside "
                          "(StoryLoom then starts a new one) or restore a backup.")
    if "unable to open" in text:
        return StoreError(f"The database{where} cannot be opened ({exc}). Check that the path is a file "
                          "you can read and write, or set STORYLOOM_HOME to another folder.")
    return StoreError(f"The database{where} failed: {exc}")


class Database(sqlite_utils.Database):
    """sqlite-utils' Database whose transactions take the write lock up front."""

    @contextlib.contextmanager
    def atomic(self) -> Iterator["Database"]:
        if self.conn.in_transaction:  # nested: a savepoint in the outer transaction
            with super().atomic():
                yield self
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise describe(exc, self.path) from None
        try:
            yield self
        except sqlite3.Error as exc:
            self.rollback()
            raise describe(exc, self.path) from None
        except BaseException:
            self.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback()
            raise describe(exc, self.path) from None

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.rollback()

    path: str | None = None

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


@migrations(name="005_pack_votes")
def _pack_votes(db: sqlite_utils.Database) -> None:
    """Votes that arrive in packs are tallies kept apart from local voters (see tree_packs)."""
    db.execute("alter table nodes add column pack_ups integer not null default 0")
    db.execute("alter table nodes add column pack_downs integer not null default 0")
    db.execute(
        """create table pack_votes (
            node_id text not null references nodes(id),
            source text not null,
            ups integer not null default 0,
            downs integer not null default 0,
            created text not null,
            primary key (node_id, source)
        ) without rowid"""
    )
    db.execute("create table meta (key text primary key, value text not null)")  # e.g. this database's origin id


@migrations(name="006_link_index")
def _link_index(db: sqlite_utils.Database) -> None:
    """Deleting a node checks every link into it (the foreign key): without this index SQLite read
    the whole nodes table once per deleted node (a 2,000-passage tree beside a 300k one: > 20 s)."""
    db["nodes"].create_index(["link_to"], if_not_exists=True)


@migrations(name="007_lorebooks")
def _lorebooks(db: sqlite_utils.Database) -> None:
    """Lorebooks live apart from games (one book can serve many); a game lists the books it uses."""
    db.execute(
        """create table lorebooks (
            id text primary key,
            name text not null unique collate nocase,
            description text not null default '',
            source text not null default '',
            created text not null,
            updated text not null
        )"""
    )
    db.execute(
        """create table lore_entries (
            id integer primary key,
            lorebook_id text not null references lorebooks(id) on delete cascade,
            position integer not null,
            data text not null
        )"""
    )
    db.execute("create index lore_entries_book on lore_entries (lorebook_id, position)")
    db.execute(
        """create table game_lorebooks (
            game_id text not null references games(id) on delete cascade,
            lorebook_id text not null references lorebooks(id) on delete cascade,
            position integer not null default 0,
            primary key (game_id, lorebook_id)
        ) without rowid"""
    )
    db.execute("create index game_lorebooks_book on game_lorebooks (lorebook_id)")


@migrations(name="008_game_summary")
def _game_summary(db: sqlite_utils.Database) -> None:
    """The running summary kept beside memory (modes/summary.py): its text, how many turns it
    covers, and whether the model keeps it up to date, it is pinned, or it is off."""
    db.execute("alter table games add column summary text not null default ''")
    db.execute("alter table games add column summary_upto integer not null default 0")
    db.execute("alter table games add column summary_mode text not null default 'auto'")


@migrations(name="009_turn_earlier_outputs")
def _turn_earlier_outputs(db: sqlite_utils.Database) -> None:
    """The texts a turn had before each branch from a token alternative, so undo can go back to
    them after the game is closed and opened again."""
    db.execute("alter table turns add column earlier_outputs text not null default '[]'")


@migrations(name="010_game_draft")
def _game_draft(db: sqlite_utils.Database) -> None:
    """What the player had typed and not sent yet: an adventure's action box (and as what: do,
    say, story) and a co-written story's writing box, so quitting, a kill or a crash between
    keystrokes and Enter does not lose it."""
    db.execute("alter table games add column draft text not null default ''")
    db.execute("alter table games add column draft_kind text not null default ''")
    db.execute("alter table co_stories add column draft text not null default ''")


@migrations(name="011_tree_drafts")
def _tree_drafts(db: sqlite_utils.Database) -> None:
    """The own action a player had typed at a passage of a tree and not sent: a quit, a kill or
    a crash before Enter keeps it, and coming back to that passage puts it back in the box."""
    db["tree_drafts"].create(
        {"player": str, "node_id": str, "text": str, "updated": str},
        pk=("player", "node_id"), foreign_keys=[("node_id", "nodes", "id")],
    )


def known_migrations() -> list[str]:
    return [m.name for m in migrations._migrations]


def check_file(path: Path) -> None:
    """Refuse, with a sentence and without touching it, a database path that is not one."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise describe(exc, path) from None
    if stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path} is a folder, not a database. Move it aside or set STORYLOOM_HOME "
                         "to another folder.")
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{path} is not a regular file. Move it aside or set STORYLOOM_HOME to another folder.")
    if st.st_size == 0:
        return  # SQLite treats an empty file as a new database
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise describe(exc, path) from None
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path} is not a StoryLoom database (it is not SQLite). It was left as it is: "
                         "move it aside (StoryLoom then starts a new one) or restore a backup.")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_valid = header[24:28] == header[92:96]  # the page count is only kept when these agree
    if header_valid and pages and st.st_size < page_size * pages:
        raise StoreError(f"{path} is truncated ({st.st_size:,} of {page_size * pages:,} bytes). It was left "
                         "as it is: restore a backup, or move it aside to start a new one.")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise describe(PermissionError("read-only"), path)


def open_db(path: Path | str | None = None, busy_timeout: float = BUSY_TIMEOUT_S) -> Database:
    """Open (creating and migrating as needed). Every write the app makes is one transaction.

    Raises StoreError (nothing written) for a file that is not a database, is truncated, is
    read-only, or was written by a newer StoryLoom.
    """
    path = Path(path) if path is not None else database_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe(exc, path.parent) from None
    check_file(path)
    try:
        private_file(path)  # 0600 before SQLite creates it: its -wal and -shm copy the mode
    except OSError as exc:
        raise describe(exc, path) from None
    try:
        db = Database(sqlite3.connect(str(path), timeout=busy_timeout, check_same_thread=True))
        db.path = str(path)
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across app crashes and kills
        _refuse_newer(db, path)
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        if migrations.pending(db):
            with db.atomic():  # one process migrates; another waits, then finds nothing pending
                migrations.apply(db)
    except sqlite3.Error as exc:
        raise describe(exc, path) from None
    return db


def open_memory_db() -> Database:
    """A throwaway database (nothing persists) for when the real one cannot be opened."""
    db = Database(sqlite3.connect(":memory:", check_same_thread=True))
    db.execute("PRAGMA foreign_keys=ON")
    migrations.apply(db)
    return db


def _refuse_newer(db: Database, path: Path) -> None:
    if not db["_sqlite_migrations"].exists():
        return
    unknown = [m.name for m in migrations.applied(db) if m.name not in known_migrations()]
    if unknown:
        raise StoreError(f"{path} was written by a newer StoryLoom (schema {unknown[-1]}); this version will "
                         "not write into it. Update StoryLoom, or set STORYLOOM_HOME to use another database.")

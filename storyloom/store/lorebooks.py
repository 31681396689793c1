"""Lorebooks: named sets of world-info entries kept apart from games, attached to any number of
them (as SillyTavern's World Info files are). Every change is one transaction.

Limits hold for every way in (import, editor, CLI): a book's name, its number of entries, and
each entry's keys and text. `check_entry` says in one sentence what is over a limit.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import sqlite_utils

from storyloom import StoryloomError
from storyloom.store.stories import LOGICS, WorldEntry, now

MAX_NAME = 100
MAX_DESCRIPTION = 2_000
MAX_ENTRIES = 5_000  # per book; SillyTavern's big community books have a few hundred
MAX_TEXT = 20_000  # an entry's text, in characters
MAX_KEYS = 100  # primary or secondary keys of one entry
MAX_KEY = 500  # one key (a regex key is the longest kind)
MAX_COMMENT = 500
MAX_ORDER = 1_000_000
MAX_SCAN_DEPTH = 1_000
MAX_ATTACHED = 20  # books on one game
MAX_BIAS = 10.0  # an entry's phrase bias, in logits either way (10 already makes a name near certain)


class LoreError(StoryloomError):
    """A lorebook could not be read, saved or found; the message says why."""


@dataclass
class Lorebook:
    name: str
    entries: list[WorldEntry] = field(default_factory=list)
    description: str = ""
    source: str = ""  # the format it was imported from ("sillytavern", "novelai", "kobold", "")
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)


@dataclass
class LorebookSummary:
    id: str
    name: str
    entries: int
    games: int
    source: str
    updated: str


def check_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise LoreError("A lorebook needs a name.")
    if len(name) > MAX_NAME:
        raise LoreError(f"The lorebook name is {len(name):,} characters; the limit is {MAX_NAME}.")
    return name


def check_entry(entry: WorldEntry, where: str = "The entry") -> None:
    """Raise LoreError when an entry is over a limit or holds a value of the wrong kind."""
    for label, keys in (("keys", entry.keys), ("secondary keys", entry.secondary)):
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise LoreError(f"{where} has {label} that are not a list of text.")
        if len(keys) > MAX_KEYS:
            raise LoreError(f"{where} has {len(keys):,} {label}; the limit is {MAX_KEYS}.")
        if any(len(k) > MAX_KEY for k in keys):
            raise LoreError(f"{where} has a key over {MAX_KEY} characters.")
    if not isinstance(entry.text, str) or len(entry.text) > MAX_TEXT:
        raise LoreError(f"{where}'s text is over {MAX_TEXT:,} characters." if isinstance(entry.text, str)
                        else f"{where}'s text is not text.")
    if entry.logic not in LOGICS:
        raise LoreError(f"{where} has an unknown secondary-key logic {entry.logic!r:.40}.")
    if not isinstance(entry.order, int) or isinstance(entry.order, bool) or abs(entry.order) > MAX_ORDER:
        raise LoreError(f"{where}'s order must be a whole number within ±{MAX_ORDER:,}.")
    if entry.scan_depth is not None and (not isinstance(entry.scan_depth, int) or isinstance(entry.scan_depth, bool)
                                         or not 0 <= entry.scan_depth <= MAX_SCAN_DEPTH):
        raise LoreError(f"{where}'s scan depth must be empty or a whole number from 0 to {MAX_SCAN_DEPTH}.")
    if not isinstance(entry.comment, str) or len(entry.comment) > MAX_COMMENT:
        raise LoreError(f"{where}'s title is over {MAX_COMMENT} characters.")
    if entry.bias is not None and (isinstance(entry.bias, bool) or not isinstance(entry.bias, (int, float))
                                   or not -MAX_BIAS <= entry.bias <= MAX_BIAS):
        raise LoreError(f"{where}'s bias must be empty (the default) or a number from -{MAX_BIAS:g} to {MAX_BIAS:g}.")
    for flag in ("whole_word", "case_sensitive", "constant", "exclude_recursion", "prevent_recursion", "enabled"):
        if not isinstance(getattr(entry, flag), bool):
            raise LoreError(f"{where}'s {flag.replace('_', ' ')} must be true or false.")


def check_book(book: Lorebook) -> None:
    book.name = check_name(book.name)
    if len(book.description) > MAX_DESCRIPTION:
        raise LoreError(f"The description is over {MAX_DESCRIPTION:,} characters.")
    if len(book.entries) > MAX_ENTRIES:
        raise LoreError(f"The lorebook has {len(book.entries):,} entries; the limit is {MAX_ENTRIES:,}.")
    for i, entry in enumerate(book.entries, 1):
        check_entry(entry, f"Entry {i}")


class LoreStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    # -- books ------------------------------------------------------------------------
    def create(self, book: Lorebook, unique_name: bool = False) -> Lorebook:
        """Store a new book. With `unique_name` a taken name becomes 'Name (2)' and so on."""
        check_book(book)
        with self.db.atomic():
            if unique_name:
                book.name = self._free_name(book.name)
            elif self._find(book.name):
                raise LoreError(f"A lorebook named {book.name!r} already exists; choose another name.")
            self.db["lorebooks"].insert({"id": book.id, "name": book.name, "description": book.description,
                                         "source": book.source, "created": book.created, "updated": book.updated})
            self._write_entries(book)
        return book

    def save(self, book: Lorebook) -> None:
        """The book's name, description and entries as they are now (the editor saves them all)."""
        check_book(book)
        book.updated = now()
        with self.db.atomic():
            other = self._find(book.name)
            if other and other["id"] != book.id:
                raise LoreError(f"A lorebook named {book.name!r} already exists; choose another name.")
            self.db["lorebooks"].update(book.id, {"name": book.name, "description": book.description,
                                                  "updated": book.updated})
            self.db["lore_entries"].delete_where("lorebook_id = ?", [book.id])
            self._write_entries(book)

    def delete(self, book_id: str) -> None:
        with self.db.atomic():  # entries and attachments go with it (on delete cascade)
            self.db["lorebooks"].delete(book_id)

    def list(self) -> list[LorebookSummary]:
        rows = self.db.query(
            "select b.id, b.name, b.source, b.updated, "
            "(select count(*) from lore_entries e where e.lorebook_id = b.id) as n, "
            "(select count(*) from game_lorebooks g where g.lorebook_id = b.id) as games "
            "from lorebooks b order by b.name collate nocase"
        )
        return [LorebookSummary(r["id"], r["name"], r["n"], r["games"], r["source"], r["updated"]) for r in rows]

    def get(self, name_or_id: str) -> Lorebook:
        row = self._find(name_or_id) or next(self.db["lorebooks"].rows_where("id = ?", [name_or_id]), None)
        if row is None:
            known = ", ".join(s.name for s in self.list()[:10]) or "none yet (storyloom lore import FILE)"
            raise LoreError(f"No lorebook named {name_or_id!r:.80}; lorebooks: {known}.")
        return self._book(row)

    # -- attachments ------------------------------------------------------------------
    def attach(self, game_id: str, book_id: str) -> None:
        with self.db.atomic():
            if not self.db["games"].count_where("id = ?", [game_id]):
                raise LoreError("That game is not saved (or was deleted).")
            rows = list(self.db.query("select lorebook_id from game_lorebooks where game_id = ?", [game_id]))
            if any(r["lorebook_id"] == book_id for r in rows):
                return
            if len(rows) >= MAX_ATTACHED:
                raise LoreError(f"A game can use at most {MAX_ATTACHED} lorebooks; detach one first.")
            self.db.execute("insert into game_lorebooks (game_id, lorebook_id, position) values (?, ?, ?)",
                            [game_id, book_id, len(rows)])

    def detach(self, game_id: str, book_id: str) -> None:
        with self.db.atomic():
            self.db.execute("delete from game_lorebooks where game_id = ? and lorebook_id = ?", [game_id, book_id])

    def attached(self, game_id: str) -> list[Lorebook]:
        rows = self.db.query("select b.* from lorebooks b join game_lorebooks g on g.lorebook_id = b.id "
                             "where g.game_id = ? order by g.position, b.name", [game_id])
        return [self._book(r) for r in rows]

    # -- helpers ----------------------------------------------------------------------
    def _find(self, name: str) -> dict | None:
        return next(iter(self.db.query("select * from lorebooks where name = ? collate nocase", [name])), None)

    def _free_name(self, name: str) -> str:
        candidate, n = name, 1
        while self._find(candidate):
            n += 1
            suffix = f" ({n})"
            candidate = name[: MAX_NAME - len(suffix)] + suffix
        return candidate

    def _write_entries(self, book: Lorebook) -> None:
        self.db["lore_entries"].insert_all(
            ({"lorebook_id": book.id, "position": i, "data": json.dumps(e.__dict__, ensure_ascii=False)}
             for i, e in enumerate(book.entries)),
            alter=False,
        )

    def _book(self, row: dict) -> Lorebook:
        entries = [WorldEntry.from_dict(json.loads(r["data"])) for r in
                   self.db["lore_entries"].rows_where("lorebook_id = ?", [row["id"]], order_by="position")]
        return Lorebook(row["name"], entries, row["description"], row["source"], row["id"], row["created"],
                        row["updated"])

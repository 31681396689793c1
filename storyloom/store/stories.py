"""Adventure games and their turns. Every change is one transaction, written as it happens."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlite_utils


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


LOGICS = ("and_any", "not_all", "not_any", "and_all")  # how secondary keys combine (SillyTavern's four)


@dataclass
class WorldEntry:
    """A piece of lore and when it enters the prompt (modes/worldinfo.py decides).

    Games saved before these fields existed stored only keys and text: the defaults behave as
    those games always did (whole words, any case, scanned at the game's depth)."""

    keys: list[str]
    text: str
    secondary: list[str] = field(default_factory=list)
    logic: str = "and_any"  # one of LOGICS; ignored while `secondary` is empty
    whole_word: bool = True
    case_sensitive: bool = False
    constant: bool = False  # always in the prompt (budget permitting)
    order: int = 100  # higher: kept first when over budget, and placed nearer the action
    scan_depth: int | None = None  # recent turns scanned; None: the game's default
    exclude_recursion: bool = False  # other entries' text never triggers this one
    prevent_recursion: bool = False  # this entry's text triggers no other entry
    enabled: bool = True
    comment: str = ""  # a title for the player; never sent to the model
    # While the entry is in the prompt, its names (keys, proper names in its text) are raised
    # by this many logits as the model writes (modes/worldinfo.py); None: the configured
    # default, 0: off.
    bias: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "WorldEntry":
        """From stored JSON, ignoring fields this version does not know (a newer StoryLoom's)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self) -> str:
        name = self.comment.strip() or next((k for k in self.keys if k.strip()), "") or self.text[:30]
        return name.strip() or "(untitled)"


@dataclass
class Turn:
    kind: str  # "start" (the opening), "do", "say" or "story"
    action: str  # the player's text as it goes into the story ("> You open the door.")
    output: str  # what the model (or an alter) wrote after it
    # the texts it had before each branch from a token alternative, oldest first: undo goes back
    earlier: list[str] = field(default_factory=list)


@dataclass
class Game:
    title: str
    context: str = ""  # the sentence that always stays in the prompt
    scenario: str = "custom"
    memory: str = ""
    authors_note: str = ""
    world_info: list[WorldEntry] = field(default_factory=list)
    lorebooks: list = field(default_factory=list)  # attached Lorebooks (store/lorebooks.py), in order
    # The running summary of turns that fell out of the prompt (modes/summary.py), one line per
    # fold; summary_upto: how many of the first turns it covers; summary_mode: "auto" (the model
    # keeps it up to date), "pinned" (kept as it is, still in the prompt) or "off" (left out).
    summary: str = ""
    summary_upto: int = 0
    summary_mode: str = "auto"
    turns: list[Turn] = field(default_factory=list)
    undone: list[Turn] = field(default_factory=list)  # redo stack, most recent last
    draft: str = ""  # the action typed and not sent yet (GameStore.save_draft)
    draft_kind: str = ""  # what it was typed as ("do", "say", "story"; "" for the default)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)


@dataclass
class GameSummary:
    id: str
    title: str
    scenario: str
    turns: int
    updated: str


class GameStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    # -- games ------------------------------------------------------------------------
    def create(self, game: Game) -> None:
        with self.db.atomic():
            self.db["games"].insert(self._game_row(game))
            for position, turn in enumerate(game.turns):
                self._insert_turn(game.id, position, turn, active=True)

    def save_meta(self, game: Game) -> None:
        stamp = now()  # the game's own time changes only once the row is written
        with self.db.atomic():
            self.db["games"].update(game.id, {**self._game_row(game), "updated": stamp})
        game.updated = stamp

    def save_draft(self, game: Game) -> None:
        """The action box as it stands. Not a change to the story: the game keeps its place in
        the list (updated stays)."""
        with self.db.atomic():
            self.db.execute("update games set draft = ?, draft_kind = ? where id = ?",
                            [game.draft, game.draft_kind, game.id])

    def delete(self, game_id: str) -> None:
        with self.db.atomic():
            self.db["turns"].delete_where("game_id = ?", [game_id])
            self.db["games"].delete(game_id)

    def list(self) -> list[GameSummary]:
        rows = self.db.query(
            "select g.id, g.title, g.scenario, g.updated, "
            "(select count(*) from turns t where t.game_id = g.id and t.active) as n "
            "from games g order by g.updated desc, g.rowid desc"
        )
        return [GameSummary(r["id"], r["title"], r["scenario"], r["n"], r["updated"]) for r in rows]

    def latest(self) -> Game | None:
        games = self.list()
        return self.load(games[0].id) if games else None

    def load(self, game_id: str) -> Game:
        from storyloom.store.lorebooks import LoreStore  # it imports WorldEntry from here

        row = self.db["games"].get(game_id)
        turns, undone = [], []
        for t in self.db["turns"].rows_where("game_id = ?", [game_id], order_by="position"):
            (turns if t["active"] else undone).append(Turn(t["kind"], t["action"], t["output"],
                                                           _earlier(t.get("earlier_outputs"))))
        return Game(
            id=row["id"], title=row["title"], scenario=row["scenario"], context=row["context"],
            memory=row["memory"], authors_note=row["authors_note"],
            world_info=[WorldEntry.from_dict(w) for w in json.loads(row["world_info"] or "[]")],
            lorebooks=LoreStore(self.db).attached(game_id),
            summary=row.get("summary") or "", summary_upto=row.get("summary_upto") or 0,
            summary_mode=row.get("summary_mode") or "auto",
            draft=row.get("draft") or "", draft_kind=row.get("draft_kind") or "",
            turns=turns, undone=list(reversed(undone)), created=row["created"], updated=row["updated"],
        )

    # -- turns ------------------------------------------------------------------------
    def add_turn(self, game: Game) -> None:
        """game.turns[-1] is new: store it and forget the redo stack (a new branch)."""
        position = len(game.turns) - 1
        with self.db.atomic():
            self.db["turns"].delete_where("game_id = ? and position >= ?", [game.id, position])
            self._insert_turn(game.id, position, game.turns[-1], active=True)
            self._touch(game)

    def update_turn(self, game: Game, position: int) -> None:
        """game.turns[position]'s text changed (retry, alter, a regenerated opening)."""
        turn = game.turns[position]
        with self.db.atomic():
            self.db.execute(
                "update turns set action = ?, output = ?, kind = ?, earlier_outputs = ? "
                "where game_id = ? and position = ?",
                [turn.action, turn.output, turn.kind, json.dumps(turn.earlier), game.id, position],
            )
            self._touch(game)

    def set_active(self, game: Game) -> None:
        """After undo/redo: the first len(turns) positions are active, the rest are redo."""
        with self.db.atomic():
            self.db.execute(
                "update turns set active = (position < ?) where game_id = ?", [len(game.turns), game.id]
            )
            self._touch(game)

    def _insert_turn(self, game_id: str, position: int, turn: Turn, active: bool) -> None:
        self.db["turns"].insert(
            {"game_id": game_id, "position": position, "kind": turn.kind, "action": turn.action,
             "output": turn.output, "earlier_outputs": json.dumps(turn.earlier), "active": int(active),
             "created": now()},
            alter=False,
        )

    def _touch(self, game: Game) -> None:
        game.updated = now()
        self.db["games"].update(game.id, {"updated": game.updated})

    @staticmethod
    def _game_row(game: Game) -> dict:
        return {
            "id": game.id, "title": game.title, "scenario": game.scenario, "context": game.context,
            "memory": game.memory, "authors_note": game.authors_note,
            "summary": game.summary, "summary_upto": game.summary_upto, "summary_mode": game.summary_mode,
            "draft": game.draft, "draft_kind": game.draft_kind,
            "world_info": json.dumps([w.__dict__ for w in game.world_info]),
            "created": game.created, "updated": game.updated,
        }


def _earlier(stored: str | None) -> list[str]:
    """A turn's earlier texts as stored (JSON); anything else reads as none (never a crash)."""
    try:
        value = json.loads(stored or "[]")
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

"""Co-written stories: turns marked human or model, and the candidates on offer.

Every change is one transaction. The candidates the model offered are saved too, so closing
the app while choosing loses nothing.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field

import sqlite_utils

from storyloom.store.stories import now

AUTHORS = ("human", "model")
LENGTHS = ("sentence", "paragraph", "free")


@dataclass
class CoTurn:
    author: str  # "human" or "model"
    text: str
    edited: bool = False  # a model turn the writer changed


@dataclass
class Candidate:
    text: str
    score: float  # what the ranker sorted on (higher is better)
    logprob: float | None = None  # mean token log-prob under the model, when scored by one
    repetition: float = 0.0  # share of its word n-grams already in the story or itself


@dataclass
class CoStory:
    title: str
    premise: str = ""  # an optional premise or style note, always at the top of the prompt
    turns: list[CoTurn] = field(default_factory=list)
    candidates_n: int = 4
    length: str = "paragraph"
    pending: list[Candidate] = field(default_factory=list)  # offered, not yet chosen, best first
    draft: str = ""  # the writer's turn typed and not sent yet (CowriteStore.save_draft)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)


@dataclass
class CoStorySummary:
    id: str
    title: str
    turns: int
    updated: str


class CowriteStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def create(self, story: CoStory) -> None:
        with self.db.atomic():
            self.db["co_stories"].insert(self._row(story))
            self._insert_turns(story, 0)

    def save_meta(self, story: CoStory) -> None:
        """Title, premise, candidate count, length and the candidates on offer."""
        with self.db.atomic():
            story.updated = now()
            self.db["co_stories"].update(story.id, self._row(story))

    def save_draft(self, story: CoStory) -> None:
        """The writing box as it stands; not a change to the story (updated stays)."""
        with self.db.atomic():
            self.db.execute("update co_stories set draft = ? where id = ?", [story.draft, story.id])

    def delete(self, story_id: str) -> None:
        with self.db.atomic():
            self.db["co_turns"].delete_where("story_id = ?", [story_id])
            self.db["co_stories"].delete(story_id)

    def list(self) -> list[CoStorySummary]:
        rows = self.db.query(
            "select s.id, s.title, s.updated, "
            "(select count(*) from co_turns t where t.story_id = s.id) as n "
            "from co_stories s order by s.updated desc, s.rowid desc"
        )
        return [CoStorySummary(r["id"], r["title"], r["n"], r["updated"]) for r in rows]

    def load(self, story_id: str) -> CoStory:
        row = self.db["co_stories"].get(story_id)
        turns = [CoTurn(t["author"], t["text"], bool(t["edited"]))
                 for t in self.db["co_turns"].rows_where("story_id = ?", [story_id], order_by="position")]
        return CoStory(
            id=row["id"], title=row["title"], premise=row["premise"], turns=turns,
            candidates_n=row["candidates_n"], length=row["length"],
            pending=[Candidate(**c) for c in json.loads(row["pending"] or "[]")],
            draft=row.get("draft") or "",
            created=row["created"], updated=row["updated"],
        )

    def add_turn(self, story: CoStory) -> None:
        """story.turns[-1] is new; the offer it answered (if any) is gone."""
        with self.db.atomic():
            self._insert_turns(story, len(story.turns) - 1)
            self._save_row(story)

    def update_turn(self, story: CoStory, position: int) -> None:
        turn = story.turns[position]
        with self.db.atomic():
            self.db.execute(
                "update co_turns set text = ?, author = ?, edited = ? where story_id = ? and position = ?",
                [turn.text, turn.author, int(turn.edited), story.id, position],
            )
            self._save_row(story)

    def replace_turns(self, story: CoStory) -> None:
        """After a removal or an undo: rewrite the turn list in one transaction."""
        with self.db.atomic():
            self.db["co_turns"].delete_where("story_id = ?", [story.id])
            self._insert_turns(story, 0)
            self._save_row(story)

    def _insert_turns(self, story: CoStory, start: int) -> None:
        self.db["co_turns"].insert_all(
            ({"story_id": story.id, "position": position, "author": turn.author, "text": turn.text,
              "edited": int(turn.edited), "created": now()}
             for position, turn in enumerate(story.turns[start:], start)),
            alter=False,
        )

    def _save_row(self, story: CoStory) -> None:
        story.updated = now()
        self.db["co_stories"].update(story.id, self._row(story))

    @staticmethod
    def _row(story: CoStory) -> dict:
        return {
            "id": story.id, "title": story.title, "premise": story.premise,
            "candidates_n": story.candidates_n, "length": story.length,
            "pending": json.dumps([asdict(c) for c in story.pending]), "draft": story.draft,
            "created": story.created, "updated": story.updated,
        }

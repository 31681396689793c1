"""Saved poems: the text, its topic, and the form it was written in (so it can be scanned again)."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import sqlite_utils

from storyloom.store.stories import now


@dataclass
class SavedPoem:
    topic: str
    form: dict  # key, name, scheme, meter, feet, feminine
    text: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)

    @property
    def title(self) -> str:
        return f"{self.form.get('name', 'Poem')}: {self.topic}"


class PoemStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def save(self, poem: SavedPoem) -> None:
        poem.updated = now()
        with self.db.atomic():
            self.db["poems"].upsert({"id": poem.id, "topic": poem.topic, "form": json.dumps(poem.form),
                                     "text": poem.text, "created": poem.created, "updated": poem.updated}, pk="id")

    def list(self) -> list[SavedPoem]:
        return [self._poem(r) for r in self.db.query("select * from poems order by updated desc, rowid desc")]

    def load(self, poem_id: str) -> SavedPoem:
        return self._poem(self.db["poems"].get(poem_id))

    def delete(self, poem_id: str) -> None:
        with self.db.atomic():
            self.db["poems"].delete(poem_id)

    @staticmethod
    def _poem(row) -> SavedPoem:
        return SavedPoem(row["topic"], json.loads(row["form"]), row["text"], row["id"], row["created"], row["updated"])

"""Heavy database work (counting a big tree, packs in and out) off the UI thread.

SQLite connections stay in the thread that opened them, so a worker opens its own connection
to the app's database file. The in-memory fallback database (used when the file could not be
opened) has no file to reopen; it holds only this session's few rows, so its work runs on the
UI thread, where its connection lives.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from storyloom.store.db import open_db
from storyloom.store.trees import TreeStore

T = TypeVar("T")


def with_own_store(app, work: Callable[[TreeStore], T]) -> T:
    """From a worker thread: `work(store)` on a TreeStore of this thread's own connection."""
    path = getattr(app.trees.db, "path", None)
    if not path:
        return app.call_from_thread(work, app.trees)
    db = open_db(path, busy_timeout=app.DB_BUSY_TIMEOUT_S)
    try:
        return work(TreeStore(db))
    finally:
        db.close()

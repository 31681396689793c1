"""Starter trees: the stories StoryLoom ships (assets/trees/*.twee), imported into a database once.

They are Twee 3 files, the format `storyloom tree export --format twee` writes, and go through
the same import as any Twine story (tree_packs.import_twee: its limits and checks), so a
starter is a tree like any other: played from the cache, voted on, grown by the model, deleted.

Each starter is imported once per database: the meta table keeps `starter:<IFID>` (the tree's
id) from then on, so one a player deleted does not come back on the next launch; a starter
that ships in a later release is imported then. A file that cannot be read or imported is
logged and skipped (and tried again next time); it never stops the app from starting.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from storyloom import StoryloomError
from storyloom.paths import assets_dir
from storyloom.store import tree_packs
from storyloom.store.db import DatabaseBusy
from storyloom.store.tree_packs import ImportReport, PackError
from storyloom.store.trees import TreeStore

log = logging.getLogger(__name__)

FOLDER = "trees"  # under assets/
AUTHOR = "StoryLoom"  # the author of every starter passage and option ("by StoryLoom" in the browser)
_KEY = "starter:"


@dataclass
class StarterReport:
    imported: list[ImportReport] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file name, why), each logged
    known: int = 0  # starters this database took in before (kept, or deleted by the player)


def starters_folder() -> Path:
    return assets_dir() / FOLDER


def starter_files(folder: Path | None = None) -> list[Path]:
    """The shipped starter stories, by name; none (logged) when the folder is missing."""
    folder = folder if folder is not None else starters_folder()
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".twee")
    except OSError as exc:
        log.warning("No starter trees: %s cannot be read (%s)", folder, exc.strerror or exc)
        return []


def read_starter(path: Path) -> tuple[str, str]:
    """(the story's text, its IFID); PackError when the file is not a Twee story with an IFID."""
    data = tree_packs.read_bounded(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"{path.name} is not UTF-8 text.") from None
    ifid = tree_packs.twee_ifid(text)
    if ifid is None:
        raise PackError(f"{path.name} has no IFID in its StoryData passage: a starter needs one to be known by.")
    return text, ifid


def import_starters(store: TreeStore, folder: Path | None = None) -> StarterReport:
    """Import each starter this database has not had yet (quick: no model, a few dozen rows)."""
    report = StarterReport()
    files = starter_files(folder)
    for at, path in enumerate(files):
        try:
            text, ifid = read_starter(path)
            key = _KEY + ifid
            if _known(store, key):  # a plain read: a later launch never waits for another writer
                report.known += 1
                continue
            with store.db.atomic():  # the check, the import and the flag: one process does it, once
                if _known(store, key):
                    report.known += 1
                    continue
                done = tree_packs.import_twee(store, text, author=AUTHOR)
                store.db.execute("insert into meta (key, value) values (?, ?)", [key, done.tree_id])
        except DatabaseBusy as exc:  # the rest would wait as long again (the app's start, 3 s each): next launch
            report.failed += [(p.name, str(exc)) for p in files[at:]]
            log.error("Starter trees %s were not imported: %s", ", ".join(p.name for p in files[at:]), exc)
            break
        except (StoryloomError, OSError) as exc:  # PackError, a read-only or full database, an unreadable file
            report.failed.append((path.name, str(exc)))
            log.error("Starter tree %s was not imported: %s", path.name, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a starter is a nicety: the app starts without it
            report.failed.append((path.name, f"{type(exc).__name__}: {exc}"))
            log.exception("Starter tree %s was not imported", path.name)
            continue
        report.imported.append(done)
        log.info("Starter tree %s imported from %s: %s", done.title, path.name, done.summary())
    return report


def _known(store: TreeStore, key: str) -> bool:
    return next(store.db.query("select 1 from meta where key = ?", [key]), None) is not None


def starter_ids(store: TreeStore) -> set[str]:
    """The ids of the trees that came in as starters (deleted ones too: they match no tree)."""
    return {r["value"] for r in store.db.query("select value from meta where key like ?", [_KEY + "%"])}

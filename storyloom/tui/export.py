"""Write a story to saved/exports and tell the user where it went."""
from __future__ import annotations

import os
import re
from pathlib import Path

from storyloom.modes.adventure import Adventure
from storyloom.paths import home
from storyloom.store.stories import Game


def write_exports(app, title: str, story_id: str, texts: dict[str, str], fallback: str) -> list[Path]:
    """Write each {suffix: text} atomically as <title-slug>-<id8><suffix>; notify the paths."""
    folder = home() / "exports"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:60] or fallback
    paths = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, text in texts.items():
            path = folder / f"{slug}-{story_id[:8]}{suffix}"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)  # a full disk leaves the old export whole, never half a file
            paths.append(path)
    except OSError as exc:
        app.notify(f"Could not export: {exc}", severity="error", markup=False)
        return paths
    app.notify("Exported to " + " and ".join(str(p) for p in paths), title="Export", markup=False)
    return paths


def export_game(app, game: Game) -> Path | None:
    paths = write_exports(app, game.title, game.id, {".md": Adventure(game).to_markdown()}, "adventure")
    return paths[0] if paths else None

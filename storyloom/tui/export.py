"""Write a game to saved/exports as Markdown and tell the user where it went."""
from __future__ import annotations

import re

from storyloom.modes.adventure import Adventure
from storyloom.paths import home
from storyloom.store.stories import Game


def export_game(app, game: Game):
    folder = home() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", game.title).strip("-").lower() or "adventure"
    path = folder / f"{slug}-{game.id[:8]}.md"
    try:
        path.write_text(Adventure(game).to_markdown(), encoding="utf-8")
    except OSError as exc:
        app.notify(f"Could not export: {exc}", severity="error")
        return None
    app.notify(f"Exported to {path}", title="Export")
    return path

"""Keys and how to play."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import ModalScreen
from textual.containers import VerticalScroll
from textual.widgets import Markdown

HELP = """\
# StoryLoom help

**Everywhere**: `F1` help · `Ctrl+P` command palette (every action) · `Ctrl+Q` quit · `Esc` back.

## Adventure
Type an action and press `Enter`. `Ctrl+T` (or the button) switches what you type:

- **Do**: `open the door` becomes `> You open the door.`
- **Say**: `hello` becomes `> You say "hello."`
- **Story**: your words go into the story as they are.

| key | action |
| --- | --- |
| `Esc` | stop the writing (your action comes back to the box), or go back |
| `Ctrl+Z` / `Ctrl+Y` | undo / redo a turn |
| `Ctrl+R` | retry: a new continuation for the last action |
| `Ctrl+E` | alter: edit the last output |
| `Ctrl+O` | memory, author's note and world info |
| `Ctrl+S` | export the game as Markdown (saved/exports) |

Every turn is saved as it happens; the home screen offers to continue your last game.

## Settings
Model (`default`, a model folder, a `.gguf` file or a Hugging Face id) and sampler settings.
They are saved to `config.toml` and applied at once.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [("escape", "dismiss", "Close"), ("f1", "dismiss", "Close"), ("q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Markdown(HELP)

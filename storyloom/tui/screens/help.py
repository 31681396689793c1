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
| `Esc` | stop the writing (what was written is kept; `Ctrl+Z` takes it back), or go back |
| `Enter` alone | continue the story (nothing typed in the box) |
| `Ctrl+Z` / `Ctrl+Y` | undo / redo a turn |
| `Ctrl+R` | retry: a new continuation for the last action |
| `Ctrl+E` | alter: edit the last output |
| `Ctrl+O` | memory, author's note and world info |
| `Ctrl+S` | export the game as Markdown (saved/exports) |
| `Ctrl+G` | token probabilities of the last output; pick an alternative to continue from it |
| `Ctrl+D` | why this text: the critic's verdict on each candidate of the last turn |
| `F2` | context viewer: the exact prompt of the next turn by part, with token counts; `e` / `p` / `o` edit, pin or turn off the summary |

Turns that fall out of the prompt are folded into a running summary (kept beside memory) in the background.
Every turn is saved as it happens; the home screen offers to continue your last game.

## Co-write
You and the model take turns on one story. On the model's turn it writes several candidates at
once and ranks them (a critic first, then the model; not repeating the story); the best comes first.
Each says whether the critic passed it.

| key | action |
| --- | --- |
| `1`-`9`, `0` / `Enter` | pick a candidate (in the candidate list; `0` is the tenth) |
| `e` | edit the highlighted candidate, then accept it; in the story, edit that turn |
| `p` | token probabilities of the highlighted candidate; an alternative makes a new one |
| `Delete` | remove the highlighted turn of the story |
| `Ctrl+R` / `Ctrl+N` | reroll the candidates / add more, ranked together |
| `Ctrl+B` | the candidates a reroll replaced (again for older ones) |
| `Ctrl+D` | why: the critic's verdict on each candidate on offer |
| `Ctrl+T` | switch who goes next: set the candidates aside and write, or let the model write now |
| `Ctrl+Z` | undo the last add, edit or removal (a pick undone offers its candidates again) |
| `Ctrl+L` / `Ctrl+K` | turn length (sentence, paragraph, free) / candidates per turn |
| `Ctrl+S` | export Markdown (model passages in italics) and plain text |
| `Esc` | stop the model, or go back |

Type your own turn in the box at the bottom and press `Enter`; the model answers.

## Story trees
A shared choose-your-own-adventure. Choosing an option someone already played shows its
outcome at once; only a new branch runs the model, and what it writes is kept for everyone.
While you read, the top options' outcomes are written ahead.

| key | action |
| --- | --- |
| `1`-`9`, `0` / `Enter` | choose an option (`0` is the tenth) |
| `+` / `-` | vote the highlighted option up / down (again: take the vote back) |
| `a` | type your own action (the model writes what happens) |
| `w` | write the highlighted option's outcome yourself |
| `h` | show or hide heavily downvoted options |
| `b` / `Ctrl+B` | back to the previous passage |
| `Ctrl+N` | more options from the model |
| `Ctrl+K` | bookmark this passage |
| `Ctrl+T` | browse the whole tree; `Enter` plays from the highlighted passage, `l` links to it from here |
| `Esc` | stop the model, or leave |

In the tree list, `n` starts a tree, `i` imports a JSON pack or a Twine `.twee` file, `x` exports
(pack and Twee, public trees only) and `Delete` removes a tree you own.

## Poetry
Pick a form (sonnet, limerick, ballad, heroic couplets, haiku, or a custom scheme such as
`ABAB CDCD iambic 4`) and a topic, press `Enter`.
Every token is steered through the CMU pronouncing dictionary so each line scans and rhymes;
a line that paints itself into a corner is written again (and, if need be, the line that chose
its rhyme). Each line shows the scanner's verdict.

| key | action |
| --- | --- |
| `Enter` / `Ctrl+G` | write the poem |
| `r` | rewrite the highlighted line (it still scans and rhymes) |
| `Ctrl+S` / `Ctrl+X` | save to the library / export Markdown and text |
| `Esc` | stop writing, or go back |

## Settings
Model (`default`, a model folder, a `.gguf` file or a Hugging Face id) and sampler settings.
They are saved to `config.toml` and applied at once.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [("escape", "dismiss", "Close"), ("f1", "dismiss", "Close"), ("q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Markdown(HELP)

"""Token probabilities of one text: each token with the model's probability, and its top
alternatives; choosing one dismisses with (token index, alternative) for the caller to continue
the story from there. The screen only shows and picks: the mode does the writing."""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option


class TokensReady(Message):
    """A worker read a text's token probabilities (for the screen that asked)."""

    def __init__(self, choices: list, index: int = 0) -> None:
        super().__init__()
        self.choices = choices
        self.index = index


def shade(probability: float) -> str:
    """Likely tokens read calm, unlikely ones stand out (as koboldcpp and SillyTavern colour them)."""
    if probability >= 0.5:
        return "green"
    if probability >= 0.2:
        return "yellow"
    return "red"


def percent(probability: float) -> str:
    return f"{probability * 100:5.1f}%" if probability >= 0.001 else " <0.1%"


def visible(piece: str) -> str:
    """A token as a reader can see it: spaces and line breaks shown, never interpreted."""
    piece = piece.replace("\n", "⏎").replace("\t", "⇥")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in piece) or "∅"


class TokenProbsScreen(ModalScreen["tuple[int, str] | None"]):
    """Dismisses with (token index, alternative text), or None."""

    DEFAULT_CSS = """
    TokenProbsScreen { align: center middle; }
    #token-probs { width: 90%; height: 90%; background: $surface; border: thick $accent; padding: 0 1; }
    #token-help { width: 100%; color: $text-muted; margin-bottom: 1; }  /* wraps: cut, it hid Esc */
    #token-text { height: auto; max-height: 40%; overflow-y: auto; margin-bottom: 1; }
    #token-lists { height: 1fr; }
    #tokens { width: 1fr; }
    #alternatives { width: 1fr; }
    """

    BINDINGS = [Binding("escape,q", "close", "Close"),
                Binding("left", "focus_tokens", "Tokens", show=False),
                Binding("right", "focus_alternatives", "Alternatives", show=False)]

    def __init__(self, choices: list, title: str = "Last output", can_pick: bool = True) -> None:
        super().__init__()
        self.choices = choices
        self.title_text = title
        self.can_pick = can_pick
        self.current = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="token-probs"):
            how = ("Enter on an alternative continues the story from it (Ctrl+Z goes back)."
                   if self.can_pick else "")
            yield Label(Text(f"{self.title_text}: {len(self.choices)} tokens, the model's own probabilities "
                             f"(before the sampler). ↑↓ a token, → its alternatives. {how} Esc closes."),
                        id="token-help")
            yield Static(self._text(), id="token-text")
            with Horizontal(id="token-lists"):
                yield OptionList(*[self._token_option(i, c) for i, c in enumerate(self.choices)], id="tokens")
                yield OptionList(id="alternatives")

    def on_mount(self) -> None:
        tokens = self.query_one("#tokens", OptionList)
        if self.choices:
            tokens.highlighted = 0
            self._show(0)
        tokens.focus()

    def _token_option(self, index: int, choice) -> Option:
        text = Text(f"{percent(choice.probability)}  ", style=shade(choice.probability))
        text.append(visible(choice.text))
        return Option(text, id=f"t{index}")

    def _text(self) -> Text:
        text = Text()
        for i, choice in enumerate(self.choices):
            style = shade(choice.probability) + (" reverse" if i == self.current else "")
            text.append("".join(ch if ch.isprintable() or ch == "\n" else repr(ch)[1:-1] for ch in choice.text),
                        style=style)
        return text

    def _show(self, index: int) -> None:
        self.current = index
        self.query_one("#token-text", Static).update(self._text())
        alternatives = self.query_one("#alternatives", OptionList)
        alternatives.clear_options()
        chosen = self.choices[index]
        for k, (piece, probability) in enumerate(chosen.alternatives):
            line = Text(f"{percent(probability)}  ", style=shade(probability))
            line.append(visible(piece), style="bold" if piece == chosen.text else "")
            if piece == chosen.text:
                line.append("  (in the text)", style="dim")
            alternatives.add_option(Option(line, id=f"a{k}"))

    @on(OptionList.OptionHighlighted, "#tokens")
    def _token_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_index is not None and 0 <= event.option_index < len(self.choices):
            self._show(event.option_index)

    @on(OptionList.OptionSelected, "#tokens")
    def _token_selected(self) -> None:
        self.action_focus_alternatives()

    @on(OptionList.OptionSelected, "#alternatives")
    def _alternative_selected(self, event: OptionList.OptionSelected) -> None:
        piece, _ = self.choices[self.current].alternatives[event.option_index]
        if not self.can_pick:
            return
        if piece == self.choices[self.current].text:
            self.notify("That is the token already in the text; pick another.", markup=False)
            return
        self.dismiss((self.current, piece))

    def action_focus_tokens(self) -> None:
        self.query_one("#tokens", OptionList).focus()

    def action_focus_alternatives(self) -> None:
        alternatives = self.query_one("#alternatives", OptionList)
        if alternatives.option_count:
            alternatives.focus()
            if alternatives.highlighted is None:
                alternatives.highlighted = 0

    def action_close(self) -> None:
        self.dismiss(None)

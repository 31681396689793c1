"""Adventure play: transcript, action input (Do / Say / Story), undo, redo, retry, alter.

With several candidates per turn (the default where the backend batches) the live block shows
the batch's progress and then the critic's pick, instead of streaming text that could be
swapped for another candidate under the reader's eyes; with one candidate it streams.
"""
from __future__ import annotations

import threading

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Header, Input, Static
from rich.text import Text

from storyloom import StoryloomError
from storyloom.modes.adventure import (
    DEFAULT_CANDIDATES, Adventure, Chunk, Picked, Restart, default_candidates, run,
)
from storyloom.store.stories import Game, Turn
from storyloom.tui.export import export_game
from storyloom.tui.messages import (
    CandidatesProgress,
    GenerationChunk,
    GenerationFailed,
    GenerationFinished,
    GenerationRestarted,
    GenerationStarted,
    error_text,
)
from storyloom.tui.draft_keeper import DraftKeeper
from storyloom.tui.saving import saving, try_saving
from storyloom.tui.screens.adventure_tokens import AdventureTokens
from storyloom.tui.screens.context_view import ContextViewScreen
from storyloom.tui.screens.editors import AlterScreen, MemoryScreen
from storyloom.tui.screens.generating import GeneratingScreen, Stopped
from storyloom.tui.summary_keeper import SummaryKeeper
from storyloom.tui.widgets.status_bar import StatusBar
from storyloom.tui.widgets.transcript import Transcript

KINDS = ("do", "say", "story")
KIND_LABEL = {"do": "Do", "say": "Say", "story": "Story"}
PLACEHOLDER = {"do": "What do you do? (e.g. open the door)", "say": "What do you say?",
               "story": "Write what happens next"}
CHARS_PER_TOKEN = 4  # English prose, roughly: enough to see that an action would crowd out the story
CANDIDATE_CHOICES = (1, 2, DEFAULT_CANDIDATES, 8)


class TurnPicked(Message):
    """The critic's pick among the candidates (for the quiet note and the debug view)."""

    def __init__(self, pick: Picked) -> None:
        super().__init__()
        self.pick = pick


class LoreFired(Message):
    """Which world-info entries the prompt of this turn holds, and why (the lore line, Ctrl+L)."""

    def __init__(self, selection) -> None:
        super().__init__()
        self.selection = selection


class VerdictScreen(ModalScreen[None]):
    """The debug view: every candidate of the last turn with the critic's verdict (Ctrl+D), or
    the world info of the last prompt (Ctrl+L). In a box that scrolls: bare on the transcript it
    read as part of the story, and eight candidates ran off the bottom of 24 rows."""

    BINDINGS = [Binding("escape,ctrl+d,ctrl+l,q", "dismiss", "Close")]

    def __init__(self, explanation: str) -> None:
        super().__init__()
        self.explanation = explanation

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="verdict-box"):
            yield Static(Text("Esc closes; ↑↓ scroll", style="dim"))
            yield Static(Text(self.explanation), id="verdicts")  # model text, shown literally

    def on_mount(self) -> None:
        self.query_one("#verdict-box").focus()  # the arrow keys scroll it


class AdventureScreen(AdventureTokens, GeneratingScreen):
    # priority: these win over the action box's own editing keys (Ctrl+E = end of line etc.)
    # Short labels: all of them fit the footer of an 80-column terminal.
    BINDINGS = [
        Binding("escape", "stop_or_back", "Back"),  # while writing it stops (the status bar says so)
        Binding("ctrl+t", "cycle_kind", "Kind", priority=True),
        Binding("ctrl+z", "undo", "Undo", priority=True),
        Binding("ctrl+y", "redo", "Redo", priority=True, show=False),  # as everywhere; Help lists it
        Binding("ctrl+r", "retry", "Retry", priority=True),
        Binding("ctrl+e", "alter", "Alter", priority=True),
        Binding("ctrl+o", "memory", "Memory", priority=True),
        Binding("ctrl+s", "export", "Export", priority=True),
        Binding("ctrl+k", "cycle_candidates", "Candidates", priority=True, show=False),
        Binding("ctrl+d", "verdicts", "Why", priority=True, show=False),
        Binding("ctrl+l", "lore_why", "Lore", priority=True, show=False),
        Binding("ctrl+g", "token_probs", "Tokens", priority=True, show=False),  # adventure_tokens.py
        Binding("f2", "context", "Context", show=False),
    ]
    COMMANDS_HERE = [
        ("Undo", "Take back the last turn", "undo"), ("Redo", "Bring back an undone turn", "redo"),
        ("Retry", "A new continuation for the last action", "retry"),
        ("Alter", "Edit the last output", "alter"),
        ("Memory, author's note, world info", "Edit what the model always keeps in mind", "memory"),
        ("Export as Markdown", "Write this game to saved/exports", "export"),
        ("Candidates per turn", "Cycle how many candidates the critic chooses from (1 streams)",
         "cycle_candidates"),
        ("Why this text", "The critic's verdict on each candidate of the last turn", "verdicts"),
        ("Lorebooks and world info", "Attach lorebooks, import them, edit entries' keys and flags", "lore"),
        ("Why this world info", "Which entries the last prompt held, why each fired, what the budget dropped",
         "lore_why"),
        ("Token probabilities", "The last output token by token; continue from an alternative (Ctrl+G)",
         "token_probs"),
        ("Context viewer", "The exact prompt of the next turn by part, and the summary's controls", "context"),
    ]

    def __init__(self, game: Game) -> None:
        super().__init__()
        self.play = Adventure(game, None)
        self.kind = "do"
        self.long_ok = ""  # a very long action the player chose to send anyway (Enter twice)
        self.pending: tuple[str, Turn] | None = None  # ("new"|"retry"|"opening", turn)
        self.typed = ""  # the player's words for the pending action, given back if it fails
        self.candidates: int | None = None  # None: the backend's default (batching backends: 4)
        self.last_pick: Picked | None = None
        self.drawing = 1  # candidates in the batch now being drawn (for the progress line)
        self.last_lore = None  # worldinfo.Selection of the last prompt
        self.summary = SummaryKeeper(self)  # folds turns that fell out of the prompt, in the background
        self.quit_asked = False  # Ctrl+Q pressed once while the model wrote a turn
        self.draft = DraftKeeper(self, self._draft_now, lambda text, kind: self.play.keep_draft(text, kind))

    def compose(self) -> ComposeResult:
        yield Header()
        yield Transcript(id="transcript")
        yield Static("", id="lore-line", markup=False)  # shown once world info fires
        with Horizontal(id="action-row"):
            yield Button(KIND_LABEL[self.kind], id="kind", compact=True)
            yield Input(placeholder=PLACEHOLDER[self.kind], id="action")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.play.store = self.app.games
        self.sub_title = self.play.game.title
        self._shown()
        self._restore_draft()
        self.query_one("#action", Input).focus()
        lore_line = self.query_one("#lore-line", Static)
        lore_line.display, lore_line.styles.text_wrap, lore_line.styles.text_overflow = False, "nowrap", "ellipsis"
        if not self.play.game.turns[0].output:
            self._retry_opening()

    @property
    def busy(self) -> bool:
        return self.pending is not None

    def may_quit(self) -> bool:
        """Ctrl+Q while the model writes the player's turn stops it first, as Esc does, so the
        action and what was written are saved; quitting at once lost the action just typed.
        Whatever is in the action box then is the game's draft, back when it is opened again."""
        if self.pending is None or self.pending[0] != "new" or self.quit_asked:
            self.draft.keep()
            return True
        self.quit_asked = True
        self.cancel.set()
        self.notify("Stopping the model first, so your turn is not lost. Ctrl+Q again quits.", timeout=8)
        return False

    # -- the unsent action, kept with the game ---------------------------------------------------
    def _restore_draft(self) -> None:
        game = self.play.game
        if not game.draft:
            return
        if game.draft_kind in KINDS:
            self._set_kind(game.draft_kind)
        self.draft.restore(self.query_one("#action", Input), game.draft)

    @on(Input.Changed, "#action")
    def _typing(self) -> None:
        self.draft.changed()

    def _draft_now(self) -> tuple[str, str]:
        """The action box as the game's draft. While the model writes the player's turn, the draft
        is that action (and anything typed meanwhile after it), as a stopped turn gives it back:
        the turn is saved only once written, so a kill then must not lose the action."""
        text = self.query_one("#action", Input).value
        if self.pending is not None and self.pending[0] == "new" and self.typed:
            return self._typed_then(text), self.pending[1].kind
        return text, self.kind

    def _typed_then(self, box_text: str) -> str:
        """The pending action's words, then what the player typed in the box meanwhile (if any)."""
        ahead = box_text.strip()
        return f"{self.typed} {ahead}" if ahead and self.typed else (self.typed or box_text)

    # -- input ---------------------------------------------------------------------------------
    def action_cycle_kind(self) -> None:
        self._set_kind(KINDS[(KINDS.index(self.kind) + 1) % len(KINDS)])
        if self.query_one("#action", Input).value.strip():
            self.draft.changed()  # what the draft was typed as changed

    def _set_kind(self, kind: str) -> None:
        self.kind = kind
        self.query_one("#kind", Button).label = KIND_LABEL[self.kind]
        self.query_one("#action", Input).placeholder = PLACEHOLDER[self.kind]

    @on(Button.Pressed, "#kind")
    def _kind_pressed(self) -> None:
        self.action_cycle_kind()

    @on(Input.Submitted, "#action")
    def _submitted(self, event: Input.Submitted) -> None:
        if self.busy:
            self.notify("Still writing; press Esc to stop it.", severity="warning")
            return
        if not event.value.strip():  # an empty Enter continues the story (as in KoboldAI)
            self.typed = ""
            self._run("new", Turn("story", "", ""), "", self.play.game.turns)
            return
        if self._too_long(event.value):
            return
        try:
            turn = self.play.begin(self.kind, event.value)
        except StoryloomError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self.typed, event.input.value = event.value, ""
        self._run("new", turn, turn.action, self.play.game.turns)
        self.draft.keep()  # the action, until its turn is saved

    def _too_long(self, text: str) -> bool:
        """Warn once about an action that would push the story out of what the model reads."""
        generator = self.app.generator
        budget = self.play.budget(generator.context_length if generator else 2048, self.app.config.sampler)
        tokens = len(text) // CHARS_PER_TOKEN
        if tokens <= budget // 2 or self.long_ok == text:
            return False
        self.long_ok = text
        self.notify(f"That action is about {tokens:,} tokens; the model reads {budget:,}. Only its end would fit "
                    "and the earlier story would drop out (memory and the context stay). Shorten it, or press "
                    "Enter again to send it anyway.", title="Very long action", severity="warning", timeout=15, markup=False)
        return True

    # -- generation ----------------------------------------------------------------------------
    def _run(self, what: str, turn: Turn, action: str, history: list[Turn]) -> None:
        self.pending = (what, turn)
        self.quit_asked = False
        self.summary.stop()  # the player's turn first: a running fold gives way (and runs again later)
        self.cancel = threading.Event()
        transcript = self.query_one(Transcript)
        shown = transcript.query(".turn")
        if what in ("retry", "opening") and shown:
            shown.last().remove()  # the live block takes its place
        transcript.start_live(Turn(turn.kind, turn.action, ""))
        self._generate(action, history)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, action: str, history: list[Turn]) -> None:
        app = self.app
        try:
            with self.model_turn() as generator:  # one generation per model at a time (app.gate)
                settings = app.config.sampler
                self.play.lore_bias = app.config.lore_bias  # world info's phrase bias, from the settings file
                built = self.play.prompt_for(action, generator, settings, history)
                self.post_message(LoreFired(built.lore))
                self.post_message(GenerationStarted(built.tokens, self.play.budget(generator.context_length, settings)))
                k = self.drawing = self.candidates or default_candidates(generator)
                total = settings.max_new_tokens
                stream = self.play.generate(built.text, action, generator, settings, self.cancel, candidates=k,
                                            brief=self.play.brief_for(action, history, built),
                                            on_step=lambda step: self._progress(step, total))
                _, output = run(stream, on_event=self._post_event)
        except Stopped:
            self.post_message(GenerationFinished("", True, 0.0))
            return
        except Exception as exc:  # noqa: BLE001 - any failure is shown, the game is kept
            self.post_message(GenerationFailed(error_text(exc)))
            return
        self.post_message(GenerationFinished(output, self.cancel.is_set(),
                                             generator.last_stats.tokens_per_second))

    def _progress(self, step: int, total: int) -> None:
        if step == 1 or step % 4 == 0:  # a few updates a second are plenty
            self.post_message(CandidatesProgress(step, total))

    def _post_event(self, event) -> None:
        if isinstance(event, Chunk):
            self.post_message(GenerationChunk(event.text))
        elif isinstance(event, Restart):
            self.post_message(GenerationRestarted(event.reason))
        elif isinstance(event, Picked):
            self.post_message(TurnPicked(event))

    def on_candidates_progress(self, message: CandidatesProgress) -> None:
        if self.busy:
            self.query_one(Transcript).reset_live(
                f"(writing {self.drawing} candidates… {message.step}/{message.total} tokens)")

    def on_lore_fired(self, message: LoreFired) -> None:
        self.last_lore = message.selection
        line = self.query_one("#lore-line", Static)
        fired = bool(message.selection and (message.selection.kept or message.selection.dropped))
        line.display = fired
        if fired:
            line.update(Text(message.selection.summary().replace("World info:", "World info (Ctrl+L: why):", 1)))

    def action_lore_why(self) -> None:
        if self.last_lore is None:
            self.notify("No prompt built yet in this session.")
            return
        self.app.push_screen(VerdictScreen(self.last_lore.explain()))

    def action_lore(self) -> None:
        if not self._idle():
            return
        from storyloom.store.lorebooks import LoreStore
        from storyloom.tui.screens.lore import LoreScreen

        self.app.push_screen(LoreScreen(self.play.game, LoreStore(self.app.games.db), self.app.games))

    def on_turn_picked(self, message: TurnPicked) -> None:
        self.last_pick = message.pick
        if message.pick.note and message.pick.text:  # nothing at all: the one notice is the turn's end
            self.notify(message.pick.note + " (Ctrl+D shows why)", timeout=6, markup=False)

    def on_generation_started(self, message: GenerationStarted) -> None:
        self.app.context_usage = f"{message.prompt_tokens}/{message.budget}"
        self.writing_started()

    def on_generation_chunk(self, message: GenerationChunk) -> None:
        self.query_one(Transcript).append_live(message.text)
        self.writing_progress()

    def on_generation_restarted(self, message: GenerationRestarted) -> None:
        self.query_one(Transcript).reset_live(f"(trying again: {message.reason})")

    def on_generation_finished(self, message: GenerationFinished) -> None:
        what, turn = self.pending or ("", None)
        self.pending = None
        self.writing_done(message.tokens_per_second)
        if not message.output or (message.cancelled and what in ("retry", "branch")):
            if what == "new":  # nothing typed is lost: the action goes back in the box
                self._give_back_action()
            if not message.cancelled:
                # what clean-up leaves empty: nothing, or only the player's next move (cut)
                self.notify("The model wrote nothing usable this time (nothing, or only your next move, "
                            "which is cut). Press Enter to try again, or rephrase; Ctrl+D shows why.",
                            severity="warning", timeout=8)
            elif what in ("retry", "branch"):
                self.notify("Stopped: the earlier text is back.", timeout=4)
            elif what == "new":
                self.notify("Stopped before the model wrote anything; your action is back in the box.", timeout=4)
        elif what == "new":
            if message.cancelled:  # Esc keeps what was written, as AI Dungeon and KoboldAI do
                self.notify("Stopped: what was written is kept (Ctrl+Z takes it back).", timeout=5)
            turn.output = message.output
            try:
                self.play.commit(turn)
            except StoryloomError as exc:  # not saved (a full disk): the game is as it was, the action back
                self._give_back_action()
                self.notify(str(exc), title="Not saved", severity="error", timeout=10, markup=False)
            else:
                self.summary.after_commit()
        elif what == "branch":
            if try_saving(self, lambda: self.play.branch(message.output)):
                self.notify("A new branch from the alternative (Ctrl+Z returns to the text before).", timeout=5)
        elif what == "opening":
            try_saving(self, lambda: self.play.commit_opening(message.output))
        elif what == "retry":
            try_saving(self, lambda: self.play.replace_last_output(message.output))
        self._shown()
        self.draft.keep()

    def on_generation_failed(self, message: GenerationFailed) -> None:
        what, turn = self.pending or ("", None)
        self.pending = None
        self.writing_done()
        if what == "new":
            self._give_back_action()
        self._shown()
        self.draft.keep()
        self.show_error(message.error)

    # -- the status bar's "Context: N/budget": the prompt the next turn will use ----------------
    def _shown(self) -> None:
        """The game as it now stands on screen, and the size of the prompt its next turn reads."""
        self.query_one(Transcript).show(self.play.game.turns)
        self.size_next_prompt()

    def next_prompt_counter(self):
        """The next turn's prompt (an empty action: what Enter alone would send), of the game now."""
        turns, settings = list(self.play.game.turns), self.app.config.sampler

        def count(generator) -> str:
            built = self.play.prompt_for("", generator, settings, turns)
            return f"{built.tokens}/{self.play.budget(generator.context_length, settings)}"

        return count

    def _give_back_action(self) -> None:
        """The player's words back in the box, the cursor after them (Input keeps the cursor where
        the emptied box had it, at 0, so what the player typed next went in front of the action),
        and anything typed meanwhile after them (it was written over)."""
        box = self.query_one("#action", Input)
        box.value = self._typed_then(box.value)
        box.cursor_position = len(box.value)

    # -- history -------------------------------------------------------------------------------

    @saving
    def action_undo(self) -> None:
        if self._idle():
            if self.play.undo() is None:
                self.notify("Nothing to undo.")
            self._shown()

    @saving
    def action_redo(self) -> None:
        if self._idle():
            if self.play.redo() is None:
                self.notify("Nothing to redo.")
            self._shown()

    def action_retry(self) -> None:
        if self._idle():
            turns = self.play.game.turns
            if len(turns) == 1:
                self._retry_opening()
            else:
                self._run("retry", turns[-1], turns[-1].action, turns[:-1])

    def _retry_opening(self) -> None:
        opening = self.play.game.turns[0]
        self._run("opening", opening, "", [Turn(opening.kind, opening.action, "")])

    def action_alter(self) -> None:
        if not self._idle():
            return

        def done(text: str | None) -> None:
            if text is not None:
                saved = try_saving(self, lambda: self.play.replace_last_output(text.strip()))
                self._shown()
                if not saved:  # refused: the dialog comes back with what was typed, not lost with the write
                    self.app.push_screen(AlterScreen(text), done)

        self.app.push_screen(AlterScreen(self.play.game.turns[-1].output), done)

    def action_memory(self) -> None:
        if not self._idle():  # the running generation reads memory, note and world info
            return

        def done(changed: bool | None) -> None:
            if not changed:
                return
            game = self.play.game
            typed = {"memory": game.memory, "authors_note": game.authors_note, "world_info": list(game.world_info)}
            if try_saving(self, self.play.save_meta):
                self.notify("Saved.")
            else:  # the game went back to what is saved: the dialog comes back with what was typed
                self.app.push_screen(MemoryScreen(game, typed), done)

        self.app.push_screen(MemoryScreen(self.play.game), done)

    def action_export(self) -> None:
        export_game(self.app, self.play.game)

    def action_cycle_candidates(self) -> None:
        now = self.candidates or (default_candidates(self.app.generator) if self.app.generator else DEFAULT_CANDIDATES)
        nxt = CANDIDATE_CHOICES[(CANDIDATE_CHOICES.index(now) + 1) % len(CANDIDATE_CHOICES)] \
            if now in CANDIDATE_CHOICES else DEFAULT_CANDIDATES
        self.candidates = nxt
        self.notify(f"{nxt} candidate(s) per turn" + (" (streams as it writes)" if nxt == 1 else
                                                      ", the critic keeps the best"), markup=False)

    def action_verdicts(self) -> None:
        if self.last_pick is None:
            self.notify("No turn generated yet in this session.")
            return
        self.app.push_screen(VerdictScreen(self.last_pick.explain()))

    def action_context(self) -> None:
        text = self.query_one("#action", Input).value
        try:
            action = self.play.begin(self.kind, text).action if text.strip() else ""
        except StoryloomError:
            action = ""
        self.app.push_screen(ContextViewScreen(self.play, action))

"""Co-write: the story with authorship, ranked candidates to pick from, and the writer's turn."""
from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Input, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from storyloom import StoryloomError
from storyloom.modes.cowrite import CoWrite, RepetitionRanker, default_ranker
from storyloom.modes.critic import Verdict
from storyloom.store.cowrite import LENGTHS, Candidate, CoStory, CoTurn
from storyloom.tui.export import write_exports
from storyloom.tui.messages import (
    CandidatesProgress,
    CandidatesReady,
    GenerationFailed,
    GenerationStarted,
    error_text,
)
from storyloom.tui.draft_keeper import DraftKeeper
from storyloom.tui.saving import saving, try_saving
from storyloom.tui.screens.adventure import VerdictScreen
from storyloom.tui.screens.cowrite_tokens import CowriteTokens
from storyloom.tui.screens.editors import AlterScreen
from storyloom.tui.screens.generating import GeneratingScreen, Stopped
from storyloom.tui.widgets.menus import TypeToWrite, number_bindings, number_keys
from storyloom.tui.widgets.status_bar import StatusBar

CANDIDATE_COUNTS = (1, 2, 3, 4, 6, 8)


def turn_prompt(turn: CoTurn) -> Text:
    """One turn with its author in the margin line above it; model text in italics."""
    text = Text()
    if turn.author == "model":
        text.append("model" + (" (edited by you)" if turn.edited else "") + "\n", style="dim magenta")
        text.append(turn.text, style="italic")
    else:
        text.append("you\n", style="dim cyan")
        text.append(turn.text)
    return text


def candidate_prompt(number: int, candidate: Candidate, verdict: Verdict | None = None) -> Text:
    text = Text()
    text.append(f"{number}. ", style="bold")
    text.append(candidate.text)
    facts = [f"score {candidate.score:.2f}"]
    if candidate.logprob is not None:
        facts.append(f"log-prob {candidate.logprob:.2f}")
    facts.append(f"repeats {candidate.repetition:.0%}")
    if verdict is not None:  # what failed, in the critic's own codes (Ctrl+D says why)
        facts.append("critic: pass" if verdict.passed else
                     "critic: fails (" + ", ".join(dict.fromkeys(f.code for f in verdict.findings)) + ")")
    text.append("\n   " + " · ".join(facts), style="dim")
    return text


def export_story(app, story: CoStory) -> None:
    play = CoWrite(story)
    model = app.generator.name if app.generator is not None else "the model"
    write_exports(app, story.title, story.id, {".md": play.to_markdown(model), ".txt": play.to_text()}, "story")


class StoryTurns(TypeToWrite):
    WRITE_BOX = "#cowrite-write"
    BINDINGS = [Binding("e", "screen.edit_turn", "Edit"),
                Binding("delete", "screen.remove_turn", "Remove")]

    def on_resize(self) -> None:
        # The candidates below take the room of the story's end: the list had scrolled there
        # while tall, and kept that offset as it shrank (the turn they continue went out of sight)
        if self.highlighted is None or self.highlighted == self.option_count - 1:
            self.scroll_end(animate=False)
        else:
            self.scroll_to_highlight()


class CandidateList(TypeToWrite):
    WRITE_BOX = "#cowrite-write"
    BINDINGS = number_bindings("screen.pick", "Pick") + [
        Binding("e", "screen.edit_candidate", "Edit"),
        Binding("p", "screen.candidate_tokens", "Probabilities", show=False)]  # cowrite_tokens.py


class CowriteScreen(CowriteTokens, GeneratingScreen):
    PROGRESS = "cowrite-progress"
    # priority: these win over the writing box's own editing keys
    BINDINGS = [
        Binding("escape", "stop_or_back", "Stop/Back"),
        Binding("ctrl+r", "reroll", "Reroll", priority=True),
        Binding("ctrl+n", "more", "More", priority=True),
        Binding("ctrl+b", "earlier", "Earlier", priority=True, show=False),  # named in the candidates label
        Binding("ctrl+d", "verdicts", "Why", priority=True, show=False),  # as in an adventure
        Binding("ctrl+t", "switch", "Swap", priority=True),  # who writes next
        Binding("ctrl+z", "undo", "Undo", priority=True),
        Binding("ctrl+l", "cycle_length", "Length", priority=True, show=False),  # named in the info line
        Binding("ctrl+k", "cycle_candidates", "How many", priority=True, show=False),
        Binding("ctrl+s", "export", "Export", priority=True, show=False),  # in the palette
    ]
    COMMANDS_HERE = [
        ("Reroll candidates", "Replace the candidates with new ones", "reroll"),
        ("More candidates", "Add more candidates, ranked with those on offer", "more"),
        ("Earlier candidates", "Bring back the candidates a reroll replaced", "earlier"),
        ("Why these candidates", "The critic's verdict on each candidate on offer", "verdicts"),
        ("Switch who goes next", "Let the model write now, or take this turn yourself", "switch"),
        ("Undo", "Take back the last added, edited or removed turn", "undo"),
        ("Turn length", "Cycle sentence / paragraph / free", "cycle_length"),
        ("Candidates per turn", "Cycle how many candidates the model offers", "cycle_candidates"),
        ("Export story", "Write Markdown (authorship shown) and plain text to saved/exports", "export"),
        ("Token probabilities", "The highlighted candidate token by token (P); a new one from an alternative",
         "candidate_tokens"),
    ]

    def __init__(self, story: CoStory) -> None:
        super().__init__()
        self.play = CoWrite(story)
        self.draft = DraftKeeper(self, lambda: (self.query_one("#cowrite-write", Input).value, ""),
                                 lambda text, _kind: self.play.keep_draft(text))

    def compose(self) -> ComposeResult:
        yield Header()
        yield StoryTurns(id="cowrite-story")
        yield Static(id="cowrite-info")
        yield ProgressBar(id="cowrite-progress", show_eta=False)
        yield Label("Best first", id="cowrite-candidates-label")
        yield CandidateList(id="cowrite-candidates")
        # select_on_focus off: coming back to a draft, the next key would replace all of it
        yield Input(placeholder="Write your turn and press Enter (the model answers)", id="cowrite-write",
                    select_on_focus=False)
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.play.store = self.app.cowrites
        self.sub_title = self.play.story.title
        self.query_one("#cowrite-progress", ProgressBar).display = False
        self._show_story()
        self._show_candidates()
        self.draft.restore(self.query_one("#cowrite-write", Input), self.play.story.draft)
        if self.play.story.pending:
            self.query_one(CandidateList).focus()
        elif self.play.next_author == "model":
            self._propose(more=False)
        else:
            self.query_one("#cowrite-write", Input).focus()

    # -- showing ---------------------------------------------------------------------------------
    def _show_story(self, highlight: int | None = None) -> None:
        turns = self.query_one(StoryTurns)
        turns.clear_options()
        turns.add_options([Option(turn_prompt(t), id=str(i)) for i, t in enumerate(self.play.story.turns)])
        if turns.option_count:
            turns.highlighted = turns.option_count - 1 if highlight is None else min(highlight, turns.option_count - 1)
        turns.scroll_end(animate=False)
        self._show_info()
        self.size_next_prompt()

    def next_prompt_counter(self):
        """The model's next turn's prompt, of the story as it now stands."""
        story, settings = replace(self.play.story, turns=list(self.play.story.turns)), self.app.config.sampler

        def count(generator) -> str:
            built = self.play.prompt_for(generator, settings, story)
            return f"{built.tokens}/{self.play.budget(generator.context_length, settings)}"

        return count

    def _show_candidates(self) -> list[Verdict]:
        """Show the offer, each candidate with the critic's verdict; returns the verdicts."""
        pending = self.play.story.pending
        menu = self.query_one(CandidateList)
        menu.clear_options()
        verdicts = self.play.verdicts()
        menu.add_options([Option(candidate_prompt(i + 1, c, v), id=str(i))
                          for i, (c, v) in enumerate(zip(pending, verdicts))])
        menu.display = bool(pending)
        label = self.query_one("#cowrite-candidates-label", Label)
        label.display = bool(pending)
        ranker = default_ranker(self.app.generator) if self.app.generator is not None else None
        # a ranker that only spots repeats: say so, the order means less than usual
        order = f"Candidates {ranker.label}" if isinstance(ranker, RepetitionRanker) else "Best first"
        label.update(Text(f"{order}: {number_keys(len(pending))} picks · e edits · ^R reroll · ^B earlier · ^N more"))
        if pending:
            menu.highlighted = 0
        self._show_info()
        return verdicts

    def _show_info(self) -> None:
        story = self.play.story
        if self.busy:
            who = "The model is writing (Esc stops)"
        elif story.pending:
            who = "Your pick: choose, edit, more, or write your own"
        elif self.play.next_author == "model":
            who = "Next: the model (Ctrl+R asks it)"
        else:
            who = "Next: you"
        turns = f"{len(story.turns)} turn" + ("" if len(story.turns) == 1 else "s")
        self.query_one("#cowrite-info", Static).update(
            Text(f"{who} · {story.candidates_n} × {story.length} (^K/^L) · {turns}"))

    # -- the model's turn -----------------------------------------------------------------------
    def _propose(self, more: bool) -> None:
        if not self._idle():
            return
        self.start_work()
        self._show_info()
        self._generate(more)

    @work(thread=True, exclusive=True, group="cowrite", exit_on_error=False)
    def _generate(self, more: bool) -> None:
        app = self.app
        try:
            with self.model_turn() as generator:
                settings = app.config.sampler
                total = self.play.settings_for(settings).max_new_tokens
                built = self.play.prompt_for(generator, settings)
                self.post_message(GenerationStarted(built.tokens, self.play.budget(generator.context_length, settings)))
                ranked = self.play.propose(generator, settings, more=more, cancel=self.cancel,
                                           on_step=lambda k: self.post_message(CandidatesProgress(k, total)))
        except Stopped:
            self.post_message(CandidatesReady([], True, more, 0.0))
            return
        except Exception as exc:  # noqa: BLE001 - any failure is shown, the story is kept
            self.post_message(GenerationFailed(error_text(exc)))
            return
        self.post_message(CandidatesReady(ranked, self.cancel.is_set(), more,
                                          generator.last_stats.tokens_per_second))

    def on_generation_started(self, message: GenerationStarted) -> None:
        self.app.context_usage = f"{message.prompt_tokens}/{message.budget}"

    def on_candidates_progress(self, message: CandidatesProgress) -> None:
        self.query_one("#cowrite-progress", ProgressBar).update(total=message.total, progress=message.step)
        self.app.activity = (f"writing {self.play.story.candidates_n} candidates: "
                             f"token {message.step} of {message.total}")

    def on_candidates_ready(self, message: CandidatesReady) -> None:
        self._done(message.tokens_per_second)
        if message.cancelled:
            self.notify("Stopped. Ctrl+R asks again, or write the turn yourself.")
            self.query_one("#cowrite-write", Input).focus()
            return
        if try_saving(self, lambda: self.play.offer(message.candidates, replaces=not message.more)):
            verdicts = self._show_candidates()
            self.query_one(CandidateList).focus()
            # a reroll that came out worse must not hide that the batch it replaced was better
            if not message.more and not any(v.passed for v in verdicts) and self.play.earlier_offer_passes():
                self.notify("None of these pass the critic (Ctrl+D says why). Ctrl+B brings back "
                            "the candidates they replaced: one of them did.", severity="warning", timeout=6)

    def on_generation_failed(self, message: GenerationFailed) -> None:
        self._done()
        self.show_error(message.error)
        self.query_one("#cowrite-write", Input).focus()

    def _done(self, tokens_per_second: float | None = None) -> None:
        self.end_work(tokens_per_second)
        self._show_info()

    # -- choosing and writing --------------------------------------------------------------------
    def action_pick(self, number: int) -> None:
        if not self._idle():
            return
        if number <= len(self.play.story.pending):
            self._accept(number - 1, None)
        else:
            self.notify(f"There is no candidate {number}: {number_keys(len(self.play.story.pending))} picks.",
                        severity="warning", markup=False)

    @on(OptionList.OptionSelected, "#cowrite-candidates")
    def _candidate_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_pick(event.option_index + 1)

    def action_edit_candidate(self) -> None:
        menu = self.query_one(CandidateList)
        if not self._idle() or menu.highlighted is None or not self.play.story.pending:
            return
        index = menu.highlighted

        def done(text: str | None) -> None:
            if text is not None:
                self._accept(index, text)

        self.app.push_screen(AlterScreen(self.play.story.pending[index].text, "Edit this candidate, then accept it"), done)

    def _accept(self, index: int, text: str | None) -> None:
        try:
            self.play.pick(index, text)
        except StoryloomError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self._show_candidates()
        self._show_story()
        self.query_one("#cowrite-write", Input).focus()

    @on(Input.Submitted, "#cowrite-write")
    def _written(self, event: Input.Submitted) -> None:
        if not self._idle():
            return
        try:
            self.play.write(event.value)
        except StoryloomError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        event.input.value = ""
        self.draft.keep()  # the turn is saved: the box is empty
        self._show_candidates()
        self._show_story()
        self._propose(more=False)

    @on(Input.Changed, "#cowrite-write")
    def _typing(self) -> None:
        self.draft.changed()

    def action_reroll(self) -> None:
        self._propose(more=False)

    @saving
    def action_earlier(self) -> None:
        if not self._idle():
            return
        if self.play.earlier_offer():
            self._show_candidates()
            self.notify("The candidates before the reroll (Ctrl+B again for older ones).", timeout=3)
        else:
            self.notify("No earlier candidates for this turn.", timeout=3)

    def action_verdicts(self) -> None:
        self.app.push_screen(VerdictScreen(self.play.explain_offer()))

    def action_more(self) -> None:
        self._propose(more=bool(self.play.story.pending))

    @saving
    def action_switch(self) -> None:
        """Candidates on offer: set them aside and write this turn yourself; else the model writes now."""
        if not self._idle():
            return
        if self.play.story.pending:
            self.play.dismiss()
            self._show_candidates()
            self.query_one("#cowrite-write", Input).focus()
            self.notify("Your turn: write it below.")
        else:
            self._propose(more=False)

    # -- changing the story ----------------------------------------------------------------------
    def _highlighted_turn(self) -> int | None:
        turns = self.query_one(StoryTurns)
        return turns.highlighted if turns.option_count else None

    def action_edit_turn(self) -> None:
        position = self._highlighted_turn()
        if not self._idle() or position is None:
            return

        def done(text: str | None) -> None:
            if text is None:
                return
            try:
                self.play.edit(position, text)
            except StoryloomError as exc:
                self.notify(str(exc), severity="warning", markup=False)
                return
            self._show_story(highlight=position)

        self.app.push_screen(AlterScreen(self.play.story.turns[position].text, "Edit this turn"), done)

    @on(OptionList.OptionSelected, "#cowrite-story")
    def _turn_selected(self) -> None:
        self.action_edit_turn()

    @saving
    def action_remove_turn(self) -> None:
        position = self._highlighted_turn()
        if self._idle() and position is not None:
            self.play.remove(position)
            self._show_story(highlight=position)
            self.notify("Turn removed (Ctrl+Z brings it back).")

    @saving
    def action_undo(self) -> None:
        if self._idle():
            if self.play.undo():
                self._show_story()
                self._show_candidates()  # a pick taken back offers its candidates again
                if self.play.story.pending:
                    self.query_one(CandidateList).focus()
            else:
                self.notify("Nothing to undo.")

    # The worker reads the length and the count: they change only while nothing is generating.
    @saving
    def action_cycle_length(self) -> None:
        if not self._idle():
            return
        story = self.play.story
        self.play.set_length(LENGTHS[(LENGTHS.index(story.length) + 1) % len(LENGTHS)])
        self._show_candidates()  # the critic's verdicts are for the length asked now

    @saving
    def action_cycle_candidates(self) -> None:
        if not self._idle():
            return
        n = self.play.story.candidates_n
        self.play.set_candidates(next((c for c in CANDIDATE_COUNTS if c > n), CANDIDATE_COUNTS[0]))
        self._show_info()

    def action_export(self) -> None:
        export_story(self.app, self.play.story)


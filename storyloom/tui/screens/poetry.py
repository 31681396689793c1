"""Poetry: pick a form and a topic; lines appear as they are made, each with the scanner's mark."""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, Label, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option

from storyloom.modes.poetry.compose import Poem, PoemLine, compose, rewrite_line
from storyloom import StoryloomError
from storyloom.modes.poetry.forms import CUSTOM_EXAMPLE, Form, load_forms, parse_custom
from storyloom.modes.poetry.prosody import words_of
from storyloom.modes.poetry.scan import scan_poem
from storyloom.store.poems import SavedPoem
from storyloom.tui.export import write_exports
from storyloom.tui.messages import PoemDone, PoemLineMade, PoemLineRevised, error_text
from storyloom.tui.saving import confirm_delete, try_saving
from storyloom.tui.screens.generating import GeneratingScreen, Stopped
from storyloom.tui.widgets.menus import refill
from storyloom.tui.widgets.status_bar import StatusBar


def line_prompt(number: int, text: str, verdict, form: Form) -> Text:
    out = Text()
    if verdict is None:
        out.append(f"{number:>2} … ", style="dim")
        out.append(text or "writing", style="dim italic")
        return out
    out.append(f"{number:>2} ")
    out.append("✓ " if verdict.ok else "✗ ", style="green" if verdict.ok else "red")
    out.append(text)
    facts = [form.describe(number - 1) if verdict.meter_ok else
             (f"unknown: {', '.join(verdict.unknown)}" if verdict.unknown else "does not scan")]
    if verdict.rhyme_ok is not None:
        facts.append(f"rhymes with {verdict.rhyme_with + 1}" if verdict.rhyme_ok else f"no rhyme with {verdict.rhyme_with + 1}")
    out.append("   " + " · ".join(facts), style="dim")
    return out


def verdict_summary(verdict, lines: int) -> str:
    """'14/14 lines scan, 7/7 rhymes'; a form without rhymes (haiku) says nothing of them."""
    text = f"{verdict.meter_ok}/{lines} lines scan"
    return text + (f", {verdict.rhyme_pairs_ok}/{verdict.rhyme_pairs} rhymes" if verdict.rhyme_pairs else "")


CUSTOM = "custom"  # the form list's last entry: a scheme of the player's own


class PoemLines(OptionList):
    BINDINGS = [Binding("r", "screen.rewrite", "Rewrite line")]


class PoetryScreen(GeneratingScreen):
    PROGRESS = "poetry-progress"
    BUSY_TEXT = "Still writing; press Esc to stop."
    BINDINGS = [
        Binding("escape", "stop_or_back", "Stop/Back"),
        Binding("ctrl+g", "write", "Write", priority=True),
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+x", "export", "Export", priority=True),
        Binding("delete", "delete_saved", "Delete saved", show=False),
    ]
    COMMANDS_HERE = [
        ("Write the poem", "Compose a new poem in the chosen form", "write"),
        ("Rewrite this line", "A new version of the highlighted line that still scans and rhymes", "rewrite"),
        ("Save the poem", "Keep it in the library", "save"),
        ("Export the poem", "Write Markdown and plain text to saved/exports", "export"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.forms = load_forms()
        self.poem: Poem | None = None
        self.saved_id: str | None = None
        self.unsaved = False  # the poem shown has lines or changes the store does not have
        self.warned = ""  # the warning about an unsaved poem just given (Write/open, or Esc): again goes on

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="poetry"):
            with Vertical(id="poetry-side"):
                yield Label("Saved poems")
                yield OptionList(id="poetry-saved")
            with Vertical(id="poetry-main"):
                with Horizontal(id="poetry-controls"):
                    yield Select([(f.name, k) for k, f in self.forms.items()] + [("Custom scheme", CUSTOM)],
                                 value="sonnet", allow_blank=False, id="poetry-form")
                    # short: at 80 columns the box is 24 wide (the example is in the status line)
                    yield Input(placeholder="Topic (Enter writes)", id="poetry-topic")
                    yield Button("Write", id="poetry-write", variant="primary")
                # shown for "Custom scheme" (the command line's --scheme, --meter and --feet in one box)
                yield Input(placeholder=f"Rhyme scheme, meter, feet, e.g. {CUSTOM_EXAMPLE}",
                            id="poetry-scheme")
                yield PoemLines(id="poem-lines")
                yield ProgressBar(id="poetry-progress", show_eta=False)
                yield Static(id="poetry-status")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#poetry-progress", ProgressBar).display = False
        self.query_one("#poetry-scheme", Input).display = False
        self._fill_saved()
        self.query_one("#poetry-topic", Input).focus()
        self._status("Choose a form, type a topic (e.g. the sea at night) and press Enter.")

    # -- showing ---------------------------------------------------------------------------------
    def _fill_saved(self) -> None:
        refill(self.query_one("#poetry-saved", OptionList),
               [Option(Text(p.title), id=p.id) for p in self.app.poems.list()]
               or [Option("(none yet: Ctrl+S saves a poem)", disabled=True)])
        self.query_one("#poetry-topic", Input).focus()

    def _show(self, writing: int | None = None) -> None:
        poem = self.poem
        menu = self.query_one(PoemLines)
        keep = menu.highlighted
        if poem is None:
            menu.clear_options()
            return
        # poem.text keeps a placeholder for a line that failed, so scan line i is poem line i
        # (its rhyme partners and meter stay those of its own position)
        verdicts = scan_poem(poem.text, poem.form).lines
        options = []
        for i, line in enumerate(poem.lines):
            if line.ok:
                options.append(Option(line_prompt(i + 1, line.text, verdicts[i], poem.form)))
            else:
                options.append(Option(Text(f"{i + 1:>2} ✗ (this line could not be completed: r tries again)",
                                           style="red")))
        if writing is not None and writing >= len(poem.lines):
            options.append(Option(line_prompt(writing + 1, "", None, poem.form)))
        menu.clear_options()
        menu.add_options(options)
        if menu.option_count:
            menu.highlighted = keep if keep is not None and keep < menu.option_count else 0

    def _status(self, text: str) -> None:
        self.query_one("#poetry-status", Static).update(Text(text))

    # -- writing ---------------------------------------------------------------------------------
    def _form(self) -> Form:
        """The chosen form; a custom one read from its box (a bad one raises, in one line)."""
        key = self.query_one("#poetry-form", Select).value
        return parse_custom(self.query_one("#poetry-scheme", Input).value) if key == CUSTOM else self.forms[key]

    @on(Select.Changed, "#poetry-form")
    def _form_chosen(self, event: Select.Changed) -> None:
        scheme = self.query_one("#poetry-scheme", Input)
        scheme.display = event.value == CUSTOM
        if scheme.display:
            scheme.focus()

    @on(Input.Submitted, "#poetry-topic")
    @on(Input.Submitted, "#poetry-scheme")
    @on(Button.Pressed, "#poetry-write")
    def action_write(self) -> None:
        if self._busy():
            return
        try:
            form = self._form()
        except StoryloomError as exc:  # what was typed stays in its box
            self.notify(str(exc), title="Custom scheme", severity="warning", markup=False)
            self.query_one("#poetry-scheme", Input).focus()
            return
        if not self._may_replace():
            return
        topic = self.query_one("#poetry-topic", Input).value.strip() or "the sea"
        self.poem = Poem(form, topic)
        self.saved_id = None
        self._start(form.lines)
        self._status(f"Writing {form.request} about {topic}… (Esc stops)")
        self._show(writing=0)
        self._write_poem(form, topic)

    def _may_replace(self, again: str = "Do it again to replace it anyway.") -> bool:
        """A new or opened poem replaces the one shown, and leaving drops it: an unsaved one is
        named first, once."""
        if not self.unsaved or self.poem is None or not self.poem.lines or self.warned == again:
            self.warned = ""
            return True
        self.warned = again
        self.notify(f"This poem is not saved: Ctrl+S saves it. {again}",
                    title="Not saved", severity="warning", timeout=8, markup=False)
        return False

    def may_quit(self) -> bool:  # the app asks before Ctrl+Q
        return self._may_replace("Ctrl+Q again quits without it.")

    def action_stop_or_back(self) -> None:
        if self.busy or self._may_replace("Esc again leaves without it."):
            super().action_stop_or_back()

    def _start(self, total: int) -> None:
        self.start_work(total)
        self.app.activity = "writing a poem…"

    def _busy(self) -> bool:
        return not self._idle()

    @work(thread=True, exclusive=True, group="poetry", exit_on_error=False)
    def _write_poem(self, form: Form, topic: str) -> None:
        app = self.app
        try:
            with self.model_turn() as generator:
                poem = compose(generator, form, topic, seed=app.config.sampler.seed, cancel=self.cancel,
                               on_line=lambda i, line: self.post_message(PoemLineMade(i, line)),
                               on_revise=lambda i, line: self.post_message(PoemLineRevised(i, line)))
        except Stopped:
            self.post_message(PoemDone())
            return
        except Exception as exc:  # noqa: BLE001 - shown, never a crash
            self.post_message(PoemDone(error=error_text(exc)))
            return
        self.post_message(PoemDone(poem))

    def on_poem_line_made(self, message: PoemLineMade) -> None:
        poem = self.poem
        if poem is None:
            return
        del poem.lines[message.index:]
        if message.line is not None:
            poem.lines.append(message.line)
            self._show(writing=message.index + 1 if message.index + 1 < poem.form.lines else None)
        else:
            self._status(f"Taking line {message.index + 1} back to find a rhyme that works…")
            self._show(writing=message.index)
        self.query_one("#poetry-progress", ProgressBar).update(progress=len(poem.lines))

    def on_poem_line_revised(self, message: PoemLineRevised) -> None:
        poem = self.poem
        if poem is None or message.index >= len(poem.lines):
            return
        if message.line is None:
            self._status(f"Revising: writing line {message.index + 1} again (kept only if it reads better)…")
            return
        poem.lines[message.index] = message.line
        self._show()
        self._status(f"Revising: line {message.index + 1} rewritten.")

    def on_poem_done(self, message: PoemDone) -> None:
        self.end_work()
        if message.error:
            self.show_error(message.error, title="Poetry")
            self._status("")
            return
        if message.rewritten is not None:
            if message.line is None:  # stopped (Esc) or nothing found: the line stays as it was
                if not self.cancel.is_set():
                    self.notify("No other version of that line was found in time.", severity="warning")
                self._show()
                self._status("Stopped." if self.cancel.is_set() else "")
                return
            if self.poem is not None:
                self.poem.lines[message.rewritten] = message.line
                self.unsaved = True
                verdict = scan_poem(self.poem.text, self.poem.form)
                self._status(f"Line {message.rewritten + 1} rewritten: "
                             f"{verdict_summary(verdict, self.poem.form.lines)}. Ctrl+S saves.")
            self._show()
            return
        if message.poem is not None:
            self.poem = message.poem
        poem = self.poem
        self.unsaved = poem is not None and bool(poem.lines)
        self._show()
        if poem is None:
            return
        stopped = self.cancel.is_set()
        if poem.complete:  # stopped while revising (or as the last line ended), the poem is whole too
            verdict = scan_poem(poem.text, poem.form)
            head = "Stopped: the poem as it stands, " if stopped else f"Done in {poem.seconds:.1f} s: "
            revised = (f", {poem.revisions} {'line' if poem.revisions == 1 else 'lines'} revised"
                       if poem.revisions and not stopped else "")
            self._status(f"{head}{verdict_summary(verdict, poem.form.lines)}{revised}. r rewrites a line, Ctrl+S saves.")
        elif stopped:
            self._status("Stopped.")
        else:
            failed = ", ".join(str(i + 1) for i in poem.failed)
            self._status(f"Line(s) {failed} could not be completed (no line that scans and rhymes was found): highlight one and press r.")
        self.query_one(PoemLines).focus()

    def action_rewrite(self) -> None:
        menu = self.query_one(PoemLines)
        poem = self.poem
        if self._busy() or poem is None or menu.highlighted is None or menu.highlighted >= len(poem.lines):
            return
        index = menu.highlighted
        self._start(1)
        self._status(f"Rewriting line {index + 1}…")
        self._rewrite(index)

    @work(thread=True, exclusive=True, group="poetry", exit_on_error=False)
    def _rewrite(self, index: int) -> None:
        app = self.app
        try:
            seed = app.config.sampler.seed
            with self.model_turn() as generator:
                line = rewrite_line(generator, self.poem, index, cancel=self.cancel,
                                    seed=None if seed is None else seed + 1000 * (index + 1))
        except Stopped:
            self.post_message(PoemDone(rewritten=index, line=None))
            return
        except Exception as exc:  # noqa: BLE001 - shown, never a crash
            self.post_message(PoemDone(error=error_text(exc)))
            return
        self.post_message(PoemDone(rewritten=index, line=line))

    # -- keeping ---------------------------------------------------------------------------------
    def _saved(self) -> SavedPoem | None:
        poem = self.poem
        if poem is None or not poem.lines:
            self.notify("Write a poem first.", severity="warning")
            return None
        return SavedPoem(poem.topic, poem.form.to_dict(), poem.text, **({"id": self.saved_id} if self.saved_id else {}))

    def action_save(self) -> None:
        if self.busy or (saved := self._saved()) is None:
            return
        if not try_saving(self, lambda: self.app.poems.save(saved)):
            return
        self.saved_id = saved.id
        self.unsaved = False
        self.notify("Saved.")
        self._fill_saved()

    def action_export(self) -> None:
        if (saved := self._saved()) is None:
            return
        md = f"# {saved.title}\n\n" + "\n".join(line + "  " if line else "" for line in saved.text.splitlines()) + "\n"
        write_exports(self.app, saved.title, saved.id, {".md": md, ".txt": saved.text}, "poem")

    @on(OptionList.OptionSelected, "#poetry-saved")
    def _open_saved(self, event: OptionList.OptionSelected) -> None:
        if self._busy() or not self._may_replace():
            return
        saved = self.app.poems.load(event.option.id)
        form = Form.from_dict(saved.form)
        lines = [ln for ln in saved.text.splitlines() if ln.strip()]
        self.poem = Poem(form, saved.topic, [PoemLine(ln, True, (words_of(ln) or [None])[-1]) for ln in lines])
        self.saved_id = saved.id
        self.unsaved = False
        self._show()
        verdict = scan_poem(saved.text, form)
        self._status(f"{saved.title}: {verdict_summary(verdict, len(lines))}.")
        self.query_one(PoemLines).focus()

    def action_delete_saved(self) -> None:
        menu = self.query_one("#poetry-saved", OptionList)
        if self.focused is not menu or menu.highlighted is None or not menu.option_count:
            return
        option = menu.get_option_at_index(menu.highlighted)
        if option.disabled:  # the "(none yet)" row
            self.notify("No saved poem to delete yet.")
            return
        confirm_delete(self, f"Delete the poem “{option.prompt}”? This cannot be undone.",
                       lambda: self.app.poems.delete(option.id), "Poem deleted.", self._fill_saved)

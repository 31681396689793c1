"""Play a story tree: the outcome, ranked options with votes, and the model only on a miss."""
from __future__ import annotations

import logging
import threading

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Input, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from storyloom import StoryloomError
from storyloom.modes.tree import TreePlay, expand, expand_many, is_hidden
from storyloom.store.trees import Node, TreeNotFound
from storyloom.tui.background import with_own_store
from storyloom.tui.draft_keeper import DraftKeeper
from storyloom.tui.messages import TreeExpanded, TreeWorkDone, error_text
from storyloom.tui.saving import saving
from storyloom.tui.screens.editors import AlterScreen
from storyloom.tui.screens.generating import GeneratingScreen, Stopped
from storyloom.tui.widgets.menus import TypeToWrite, number_bindings, number_keys
from storyloom.tui.widgets.status_bar import StatusBar

log = logging.getLogger(__name__)


def pack_votes(node: Node) -> str:
    """Votes imported in packs, shown apart from the votes cast here (they never rank options)."""
    return f"+{node.pack_ups}/-{node.pack_downs} from packs" if node.pack_ups or node.pack_downs else ""


def option_prompt(number: int, node: Node, my_vote: int) -> Text:
    text = Text()
    text.append(f"{number}. ", style="bold")
    text.append(node.action)
    facts = [f"votes +{node.ups} -{node.downs}" + {1: " (you: +)", -1: " (you: -)"}.get(my_vote, "")]
    if pack_votes(node):
        facts.append(pack_votes(node))
    facts.append(f"chosen {node.choices}")
    if node.link_to:
        facts.append("↪ leads back into the tree")
    elif not node.outcome:
        facts.append("new: the model writes it")
    if is_hidden(node):
        facts.append("hidden (downvoted)")
    text.append("   " + " · ".join(facts), style="dim")
    return text


def breadcrumbs(path: list[Node], keep: int = 4, width: int = 0) -> Text:
    """The way here, the step just taken last; within `width` (0: any) the oldest steps give way
    to "…" (cut at the right edge, the step just taken was the one lost at 80 columns)."""
    steps = [s if len(s) <= 40 else s[:39] + "…" for s in ["Start"] + [n.action for n in path[1:]]]
    shown = steps if len(steps) <= keep else ["…"] + steps[-keep:]
    while width and len(" › ".join(shown)) > width and len(shown) > 2:
        shown = ["…"] + shown[2:]
    line = " › ".join(shown)
    return Text(line if not width or len(line) <= width else "…" + line[len(line) - width + 1:])


class Crumbs(Static):
    """The breadcrumbs line, fitted to its width again when that changes."""

    path: list[Node] = []
    keep = 4  # steps shown at most, room or not

    def show(self, path: list[Node]) -> None:
        self.path = list(path)
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        self.update(breadcrumbs(self.path, self.keep, self.content_region.width))


class TreeOptions(TypeToWrite):
    WRITE_BOX = "#tree-action"  # typing an action that starts with no option key goes there
    BINDINGS = number_bindings("screen.choose_number", "Choose") + [
        # The line above the options names these keys, so the footer keeps room for the screen's.
        Binding("plus,equals_sign", "screen.vote(1)", "Vote up", show=False),
        Binding("minus", "screen.vote(-1)", "Vote down", show=False),
        Binding("w", "screen.write_outcome", "Write outcome", show=False),
        Binding("a", "screen.own_action", "Own action", show=False),
        Binding("h", "screen.toggle_hidden", "Hidden"),
        Binding("b", "screen.back", "Back", show=False),  # as Ctrl+B, which the footer shows
    ]


def keys_note(options: int) -> str:
    """What the keys on the options do; fits 80 columns with 'What do you do? (...)' around it."""
    keys = number_keys(options)
    # from ten on the keys say enough without "choose" (with it, ten options ran past 80 columns)
    pick = "" if not keys else f"{keys} · " if options >= 10 else f"{keys} choose · "
    return pick + "+/- vote · a own action · w write outcome"


class ActionInput(Input):
    """The player's own action; Esc (or an empty Enter) goes back to the options, so the
    option keys (w, +, -) act instead of typing."""

    BINDINGS = [Binding("escape", "screen.focus_options", "Back to the options", show=False)]


class TreePlayScreen(GeneratingScreen):
    PROGRESS = "tree-progress"
    BUSY_TEXT = "The model is still writing; press Esc to stop it."
    BINDINGS = [
        Binding("escape", "stop_or_back", "Stop/Leave"),
        Binding("ctrl+n", "more", "More", priority=True),
        Binding("ctrl+b", "back", "Back", priority=True),
        Binding("ctrl+k", "bookmark", "Bookmark", priority=True),
        Binding("ctrl+t", "browse", "Browse", priority=True),
    ]
    COMMANDS_HERE = [
        ("More options", "The model adds new options here", "more"),
        ("Back", "Return to the previous passage", "back"),
        ("Bookmark", "Remember this passage", "bookmark"),
        ("Browse the tree", "See every branch; jump anywhere", "browse"),
        ("Show hidden options", "Show or hide heavily downvoted options", "toggle_hidden"),
    ]

    def __init__(self, tree_id: str) -> None:
        super().__init__()
        self.tree_id = tree_id
        self.cancel_ahead = threading.Event()
        self.show_hidden = False
        self.ahead_done = 0
        self.more_here: set[str] = set()  # passages where the player asked for more: all options shown
        # Counting a tree's nodes reads the whole tree (~0.5 s at a million nodes): done off the UI
        # thread, again only when the tree grew here, not on every move or vote.
        self.tree_stats: dict | None = None
        self._stats_version = 0
        self._counting = False
        # The own-action box is kept per passage: typed at one and not sent, it is back there later
        # (after a quit, a kill or a crash too); `draft_node` is the passage the box's text is for.
        self.draft_node: str | None = None
        self.draft = DraftKeeper(self, lambda: (self.query_one("#tree-action", Input).value, self.draft_node or ""),
                                 lambda text, node_id: node_id and self.play.keep_draft(text, node_id))

    def compose(self) -> ComposeResult:
        yield Header()
        yield Crumbs(id="tree-crumbs")
        with VerticalScroll(id="tree-outcome-box"):
            yield Static(id="tree-outcome")
        yield Label("What do you do?", id="tree-options-label")
        yield TreeOptions(id="tree-options")
        yield ActionInput(placeholder="Your own action, e.g. climb the wall (Enter; Esc: back to the options)",
                          id="tree-action", select_on_focus=False)
        yield ProgressBar(id="tree-progress", show_eta=False)
        yield Static(id="tree-stats")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        try:  # someone else's private tree opens like an unknown one: not at all
            self.app.trees.tree(self.tree_id, viewer=self.app.config.player)
        except TreeNotFound as exc:
            self.notify(str(exc), severity="error", markup=False)
            self.app.pop_screen()
            return
        self.play = TreePlay(self.app.trees, self.tree_id, player=self.app.config.player)
        self.sub_title = self.play.tree.title
        self.query_one("#tree-progress", ProgressBar).display = False
        self._arrived()

    # -- showing ---------------------------------------------------------------------------------
    def _show(self, keep: str | None = None) -> None:
        play = self.play
        self.query_one(Crumbs).show(play.path())
        self.query_one("#tree-outcome", Static).update(Text(play.node.outcome or "…"))
        menu = self.query_one(TreeOptions)
        options = play.options(include_hidden=self.show_hidden)
        if play.node.id in self.more_here and not self.show_hidden:  # Ctrl+N: the new ones too, not just the top
            options = [o for o in play.options(include_hidden=True) if not is_hidden(o)]
        menu.clear_options()
        menu.add_options([Option(option_prompt(i + 1, o, self.app.trees.my_vote(o.id, play.player)), id=o.id)
                          for i, o in enumerate(options)])
        if options:
            ids = [o.id for o in options]
            menu.highlighted = ids.index(keep) if keep in ids else 0
        hidden = play.hidden_count()
        note = (f"{hidden} downvoted hidden: h shows them" if hidden and not self.show_hidden else
                keys_note(len(options)))
        self.query_one("#tree-options-label", Label).update(f"What do you do? ({note})")
        self._show_draft()
        self._show_stats()

    def _show_draft(self) -> None:
        """A new passage: what was typed at the last one is kept for it, and this one's draft (if
        any) comes back in the box."""
        if self.draft_node == self.play.node.id:
            return
        if self.draft_node is not None:
            self.draft.keep()
        box = self.query_one("#tree-action", Input)
        box.value = ""
        self.draft_node = self.play.node.id
        self.draft.restore(box, self.play.draft())

    def _show_stats(self) -> None:
        s = self.play.stats
        if self.tree_stats is None and not self._counting:
            self._counting = True
            self._count_passages(self._stats_version)
        tree = self.tree_stats
        size = f"{tree['nodes']} passages, depth {tree['depth']}" if tree else "counting passages…"
        self.query_one("#tree-stats", Static).update(Text(
            f"{size} · this session: {s.served} from cache, "
            f"{s.generated} generated ({s.hit_ratio:.0%} hits, {s.served} generation{'s' if s.served != 1 else ''} saved)"
            + (f" · {self.ahead_done} written ahead" if self.ahead_done else "")))

    def _stale_stats(self) -> None:
        """The tree grew: count it again (off the UI thread); the old count shows until then."""
        self._stats_version += 1
        if not self._counting:
            self._counting = True
            self._count_passages(self._stats_version)

    @work(thread=True, exclusive=True, group="tree-stats", exit_on_error=False)
    def _count_passages(self, version: int) -> None:
        try:
            stats = with_own_store(self.app, lambda store: store.stats(self.tree_id))
        except Exception:  # noqa: BLE001 - the count is a nicety; the tree still plays
            stats = None
        self.app.call_from_thread(self._counted, version, stats)

    def _counted(self, version: int, stats: dict | None) -> None:
        self._counting = False
        if stats is not None:
            self.tree_stats = stats
        if version != self._stats_version:  # it grew while we counted
            self._counting = True
            self._count_passages(self._stats_version)
        elif self.is_mounted:
            self._show_stats()

    def _arrived(self) -> None:
        """A new passage is on screen: fill in its options if it has none, else read ahead."""
        self.cancel_ahead.set()
        self._show()
        self.query_one(TreeOptions).focus()
        if self.play.needs_options():
            self._foreground(self.play.node, want_outcome=False, move=False)
        else:
            self._read_ahead()

    def _selected(self) -> Node | None:
        menu = self.query_one(TreeOptions)
        if menu.highlighted is None or not menu.option_count:
            return None
        return self.app.trees.node(menu.get_option_at_index(menu.highlighted).id)

    # -- choosing ---------------------------------------------------------------------------------
    def action_choose_number(self, number: int) -> None:
        menu = self.query_one(TreeOptions)
        if number <= menu.option_count:
            self._choose(self.app.trees.node(menu.get_option_at_index(number - 1).id))
        else:
            self.notify(f"There is no option {number} here: {number_keys(menu.option_count)} chooses.",
                        severity="warning", markup=False)

    @on(OptionList.OptionSelected, "#tree-options")
    def _option_selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(self.app.trees.node(event.option.id))

    @saving
    def _choose(self, option: Node) -> None:
        if self._busy():
            return
        if self.play.choose(option) is not None:
            self._arrived()  # cached: shown at once, no model call
        else:
            self._foreground(option, want_outcome=True, move=True)

    @on(Input.Submitted, "#tree-action")
    def _own_action(self, event: Input.Submitted) -> None:
        if self._busy():
            return
        try:
            option = self.play.add_action(event.value)
        except StoryloomError as exc:  # a busy database too: the action stays in the box
            if not event.value.strip():  # an empty Enter: back to the options
                self.action_focus_options()
                return
            self.notify(str(exc), severity="warning", markup=False)
            return
        self._stale_stats()
        event.input.value = ""
        self.draft.keep()  # sent: the passage keeps no draft
        self.action_focus_options()
        self._choose(option)

    @on(Input.Changed, "#tree-action")
    def _typing(self) -> None:
        self.draft.changed()

    def action_own_action(self) -> None:
        self.query_one("#tree-action", Input).focus()

    def action_focus_options(self) -> None:
        self.query_one(TreeOptions).focus()

    # -- the model, on a miss -----------------------------------------------------------------------
    def _busy(self) -> bool:
        return not self._idle()

    def _foreground(self, node: Node, want_outcome: bool, move: bool) -> None:
        self.cancel_ahead.set()
        self.start_work()
        if want_outcome:
            self.query_one("#tree-outcome", Static).update(Text(f"> {node.action}\n\n(the model is writing what happens…)"))
        path = self.play.path(node)
        existing = [k.action for k in self.app.trees.children(node.id)]
        self._expand(node, path, want_outcome, existing, move)

    @work(thread=True, exclusive=True, group="tree", exit_on_error=False)
    def _expand(self, node: Node, path: list[Node], want_outcome: bool, existing: list[str], move: bool) -> None:
        app = self.app
        try:
            with self.model_turn() as generator:  # waits for read-ahead's current item, if any
                expansion = expand(generator, self.play.tree, path, want_outcome=want_outcome, actions=self.play.top,
                                   settings=app.config.sampler, existing=existing, cancel=self.cancel)
        except Stopped:
            self.post_message(TreeWorkDone(cancelled=True))
            return
        except Exception as exc:  # noqa: BLE001 - shown to the player; the tree is untouched
            self.post_message(TreeWorkDone(error=error_text(exc)))
            return
        if self.cancel.is_set():
            self.post_message(TreeWorkDone(cancelled=True))
            return
        self.post_message(TreeExpanded(node.id, expansion, generator.name, move))
        self.post_message(TreeWorkDone())

    @saving
    def on_tree_expanded(self, message: TreeExpanded) -> None:
        node = self.app.trees.node(message.node_id)
        before = {k.id for k in self.app.trees.children(node.id)}
        self.play.apply(node, message.expansion, message.author, move=message.move)
        self._stale_stats()
        if message.ahead:
            self.ahead_done += 1
            self._show(keep=self._selected().id if self._selected() else None)
            return
        new = [k.id for k in self.app.trees.children(self.play.node.id) if k.id not in before]
        if new and not message.move and self.play.node.id in self.more_here:  # Ctrl+N: cursor on the first new one
            shown = [o.id for o in self.play.options(include_hidden=True) if o.id in new]
            self._show(keep=shown[0] if shown else None)
            self.notify(f"{len(new)} new option{'s' if len(new) != 1 else ''} added.", timeout=3, markup=False)
        else:
            self._show()

    def on_tree_work_done(self, message: TreeWorkDone) -> None:
        if message.ahead:
            if not self.busy:
                self.query_one("#tree-progress", ProgressBar).display = False
            return
        self.end_work()
        if message.error:
            self.show_error(message.error)
        elif message.cancelled:
            self.notify("Stopped. Nothing was stored for that branch.")
        self._show(keep=self._selected().id if self._selected() else None)
        self.query_one(TreeOptions).focus()
        if not message.error and not message.cancelled:
            self._read_ahead()

    # -- reading ahead ----------------------------------------------------------------------------
    def _read_ahead(self) -> None:
        if not getattr(self.app, "pregenerate", True):
            return
        targets = self.play.pregeneration_targets()
        if not targets:
            return
        self.cancel_ahead.set()  # an earlier read-ahead (other targets) stops
        self.cancel_ahead = threading.Event()
        here = self.play.path()
        bar = self.query_one("#tree-progress", ProgressBar)
        bar.update(total=len(targets), progress=0)
        bar.display = True
        self._ahead([(t, [*here, t]) for t in targets], self.cancel_ahead)

    @work(thread=True, exclusive=True, group="tree-ahead", exit_on_error=False)
    def _ahead(self, targets: list[tuple[Node, list[Node]]], cancel: threading.Event) -> None:
        app = self.app
        try:
            generator = app.loaded_generator()
        except StoryloomError as exc:
            log.info("not reading ahead: %s", exc)
            return  # reading ahead is a bonus: the player's own choice reports the problem
        # A server with several slots writes the targets at once, in one slot of the gate (the
        # player's request takes another); a local model writes them one by one, each in its own
        # turn at the gate, so a request of the player's goes first between two of them.
        parallel = generator.capabilities.parallel
        batches = [targets] if parallel > 1 else [[t] for t in targets]
        for batch in batches:
            with app.gate.hold(background=True, cancel=cancel) as ok:
                if not ok:
                    break
                for node, expansion, error in expand_many(generator, self.play.tree, batch,
                                                          settings=app.config.sampler, cancel=cancel):
                    if cancel.is_set():
                        break
                    if error is not None:  # reading ahead is a bonus; the player's own choice retries
                        log.warning("reading ahead from node %s failed", node.id, exc_info=error)
                        continue
                    self.post_message(TreeExpanded(node.id, expansion, generator.name, move=False, ahead=True))
                    self.app.call_from_thread(self._ahead_step)
            if cancel.is_set():
                break
        self.post_message(TreeWorkDone(ahead=True))

    def _ahead_step(self) -> None:
        bar = self.query_one("#tree-progress", ProgressBar)
        bar.advance(1)

    # -- votes, writing, moving ---------------------------------------------------------------------
    @saving
    def action_vote(self, value: int) -> None:
        option = self._selected()
        if option is not None:
            held = self.play.vote(option, value)
            self._show(keep=option.id)
            self.notify({1: "Voted up.", -1: "Voted down.", 0: "Vote taken back."}[held], timeout=2, markup=False)

    def action_write_outcome(self) -> None:
        option = self._selected()
        if option is None or self._busy():
            return

        def done(text: str | None) -> None:
            if text is not None:
                try:
                    self.play.write_outcome(option, text)
                except StoryloomError as exc:
                    self.notify(str(exc), severity="warning", markup=False)
                    return
                self._show(keep=option.id)

        self.app.push_screen(AlterScreen(option.outcome, f"Write what happens after: {option.action}"), done)

    def action_more(self) -> None:
        if not self._busy():
            self.more_here.add(self.play.node.id)  # from now on this passage shows all its options
            self._foreground(self.play.node, want_outcome=False, move=False)

    def action_back(self) -> None:
        if self._busy():
            return
        if self.play.back() is None:
            self.notify("This is where you started.")
            return
        self._arrived()

    @saving
    def action_bookmark(self) -> None:
        self.play.bookmark()
        self.notify("Bookmarked. Browse (Ctrl+T) lists bookmarks.")

    def action_toggle_hidden(self) -> None:
        self.show_hidden = not self.show_hidden
        self._show()

    def action_browse(self) -> None:
        from storyloom.tui.screens.tree_browse import TreeBrowseScreen

        def done(node_id: str | None) -> None:
            if not node_id:
                return
            if node_id.startswith("link:"):
                self._ask_link(node_id.removeprefix("link:"))
                return
            node = self.app.trees.node(node_id)
            if node.cached or node.parent_id is None:
                self.play.jump(node_id)
                self._arrived()
            else:  # not written yet: stand at its parent and choose it (the model writes it)
                self.play.jump(node.parent_id)
                self._show()
                self._choose(node)

        if not self._busy():
            self.app.push_screen(TreeBrowseScreen(self.tree_id, self.play.node.id, self.play.player), done)

    def _ask_link(self, target_id: str) -> None:
        target = self.app.trees.node(target_id)

        def done(text: str | None) -> None:
            if text is None:
                return
            if not text.strip():
                self.notify("A link needs the option's words.", severity="warning")
                return
            try:
                option = self.play.link(text.strip(), target_id)
            except StoryloomError as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
            self._stale_stats()
            self._show(keep=option.id)
            self.notify("Linked: choosing it leads to that passage.")

        self.app.push_screen(AlterScreen("", f"Words of the option that leads to: {target.action or 'Start'}"), done)

    def on_screen_suspend(self) -> None:
        """Another screen is in front: reading ahead stops (it starts again on the next passage)."""
        self.cancel_ahead.set()

    def action_stop_or_back(self) -> None:
        if not self.busy:
            self.cancel_ahead.set()
        super().action_stop_or_back()

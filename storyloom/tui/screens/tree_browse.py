"""Browse a whole story tree: expand branches, preview outcomes and votes, jump in anywhere."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, Tree
from textual.widgets.tree import TreeNode

from storyloom.modes.tree import is_hidden, rank
from storyloom.store.trees import Node
from storyloom.tui.screens.tree_play import Crumbs, pack_votes


def node_label(node: Node, bookmarked: bool) -> Text:
    text = Text("★ " if bookmarked else "")
    text.append(node.action or "Start", style="bold" if not node.action else "")
    facts = f"  +{node.ups} -{node.downs}" + (f" ({pack_votes(node)})" if pack_votes(node) else "")
    if node.link_to:
        facts += " ↪"
    elif not node.outcome:
        facts += " (not written)"
    text.append(facts, style="dim")
    if is_hidden(node):
        text.stylize("strike")
    return text


class TreeBrowseScreen(Screen[str | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Back"), Binding("p", "play_here", "Play from here"),
                Binding("l", "link_here", "Link to here")]

    def __init__(self, tree_id: str, current_id: str, player: str) -> None:
        super().__init__()
        self.tree_id = tree_id
        self.current_id = current_id
        self.player = player

    def compose(self) -> ComposeResult:
        yield Header()
        crumbs = Crumbs(id="browse-crumbs")
        crumbs.keep = 6
        yield crumbs
        with Horizontal(id="browse"):
            yield Tree(Text("Start"), id="browse-tree")
            with VerticalScroll(id="browse-preview-box"):
                yield Static(id="browse-preview")
        yield Footer()

    def on_mount(self) -> None:
        store = self.app.trees
        self.sub_title = store.tree(self.tree_id).title + " (browsing: Enter plays)"  # fits 80 columns
        self.marks = {n.id for n, _ in store.bookmarks(self.tree_id, self.player)}
        tree = self.query_one(Tree)
        tree.auto_expand = False
        root = store.root(self.tree_id)
        tree.root.data = root
        tree.root.set_label(node_label(root, root.id in self.marks))
        self._load(tree.root)
        tree.root.expand()
        # open the branches down to where the player is
        at: TreeNode = tree.root
        for step in store.path_to_root(self.current_id)[1:]:
            child = next((c for c in at.children if c.data.id == step.id), None)
            if child is None:
                break
            self._load(child)
            child.expand()
            at = child
        tree.focus()
        self.call_after_refresh(tree.move_cursor, at)  # lines exist only after the expansions render

    def _load(self, item: TreeNode) -> None:
        if getattr(item, "loaded", False):
            return
        item.loaded = True
        store = self.app.trees
        for kid in rank(store.children(item.data.id)):
            has_kids = bool(kid.outcome) and not kid.link_to and bool(store.children(kid.id))
            item.add(node_label(kid, kid.id in self.marks), data=kid, allow_expand=has_kids)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded) -> None:
        self._load(event.node)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        node: Node = event.node.data
        if node is None:
            return
        store = self.app.trees
        shown = store.node(node.link_to) if node.link_to else node
        text = Text()
        if node.action:
            text.append(f"> {node.action}\n\n", style="bold")
        text.append(shown.outcome or "(Nobody has gone this way yet: play it to write it.)")
        packs = f" · {pack_votes(node)}" if pack_votes(node) else ""
        text.append(f"\n\nvotes +{node.ups} -{node.downs}{packs} · chosen {node.choices} · by {node.author or 'unknown'}",
                    style="dim")
        self.query_one("#browse-preview", Static).update(text)
        self.query_one("#browse-crumbs", Crumbs).show(store.path_to_root(node.id))

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        self.dismiss(event.node.data.id)

    def action_play_here(self) -> None:
        node = self.query_one(Tree).cursor_node
        if node is not None:
            self.dismiss(node.data.id)

    def action_link_here(self) -> None:
        """Offer the highlighted passage as an option of the passage the player is at."""
        node = self.query_one(Tree).cursor_node
        if node is not None and node.data is not None:
            target = node.data.link_to or node.data.id
            self.dismiss(f"link:{target}")

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

"""Story trees: a shared choose-your-own-adventure graph cached in SQLite, ranked by votes.

A node is one option and what follows it: the action a player can take at its parent and the
outcome it leads to (empty until someone asks for it). A node may instead link to an existing
node (`link_to`): choosing it jumps there, so the tree can become a graph.

Ids are random (secrets), never row numbers: nobody can walk from a public tree to a private
one. Every change is one transaction; vote counts on a node are kept in step with the votes
table in the same transaction, so ranking children never has to count votes.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

import sqlite_utils

from storyloom import StoryloomError
from storyloom.store.stories import now

VISIBILITIES = ("public", "private")


def new_id() -> str:
    return secrets.token_hex(12)


@dataclass
class Tree:
    title: str
    scenario: str = ""  # the opening situation and context every prompt starts from
    visibility: str = "public"
    owner: str = ""
    id: str = field(default_factory=new_id)
    created: str = field(default_factory=now)


@dataclass
class Node:
    tree_id: str
    parent_id: str | None
    action: str  # the option as players see it ("Open the door"); empty for the root
    outcome: str = ""  # what happens; "" until generated or written
    author: str = ""  # model name, or "human"
    depth: int = 0
    link_to: str | None = None  # choosing this option jumps to that existing node
    ups: int = 0
    downs: int = 0
    choices: int = 0  # how often players chose it
    id: str = field(default_factory=new_id)
    created: str = field(default_factory=now)
    # Votes that came in packs from elsewhere: counted apart from local votes (ups/downs, which
    # rank options), each pack's share capped, never stored as a local voter's vote.
    pack_ups: int = 0
    pack_downs: int = 0

    @property
    def cached(self) -> bool:
        return bool(self.outcome) or self.link_to is not None


NODE_COLUMNS = ("id", "tree_id", "parent_id", "action", "outcome", "author", "depth", "link_to",
                "ups", "downs", "choices", "created", "pack_ups", "pack_downs")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")


class TreeNotFound(StoryloomError):
    """No such tree or node for this viewer: unknown and someone else's private one read the same."""


def valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def _node(row) -> Node:
    return Node(**{k: row[k] for k in NODE_COLUMNS})


class TreeStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    # -- trees ----------------------------------------------------------------------------
    def create(self, tree: Tree, opening: str, author: str = "human") -> Node:
        """A new tree with its root node (the opening)."""
        root = Node(tree.id, None, "", opening, author=author)
        with self.db.atomic():
            self.db["trees"].insert(tree.__dict__)
            self._insert(root)
        return root

    def tree(self, tree_id: str, viewer: str | None = None) -> Tree:
        """The tree; with `viewer`, someone else's private tree answers as an unknown id does."""
        row = next(self.db.query("select * from trees where id = ?", [tree_id]), None)
        if row is None or (viewer is not None and not can_see(row, viewer)):
            raise TreeNotFound(f"No tree {_short(tree_id)}; `storyloom tree list` shows their ids.")
        return Tree(**row)

    def trees(self, viewer: str | None = None) -> list[Tree]:
        """Public trees, plus the viewer's own private ones (never anyone else's)."""
        rows = self.db.query(
            "select * from trees where visibility = 'public' or (owner = ? and ? != '') "
            "order by created desc, rowid desc", [viewer or "", viewer or ""])
        return [Tree(**r) for r in rows]

    def public_trees(self) -> list[Tree]:
        return [Tree(**r) for r in self.db.query(
            "select * from trees where visibility = 'public' order by created desc, rowid desc")]

    def delete_tree(self, tree_id: str) -> None:
        with self.db.atomic():
            self.db.execute("delete from votes where node_id in (select id from nodes where tree_id = ?)", [tree_id])
            self.db.execute("delete from pack_votes where node_id in (select id from nodes where tree_id = ?)", [tree_id])
            self.db.execute("delete from bookmarks where node_id in (select id from nodes where tree_id = ?)", [tree_id])
            self.db.execute("delete from tree_drafts where node_id in (select id from nodes where tree_id = ?)", [tree_id])
            self.db.execute("update nodes set parent_id = null, link_to = null where tree_id = ?", [tree_id])
            self.db.execute("delete from nodes where tree_id = ?", [tree_id])
            self.db["trees"].delete(tree_id)

    def root(self, tree_id: str) -> Node:
        row = next(self.db.query("select * from nodes where tree_id = ? and parent_id is null", [tree_id]))
        return _node(row)

    # -- nodes ----------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        return _node(self.db["nodes"].get(node_id))

    def children(self, node_id: str) -> list[Node]:
        """In the order they were added (ranking is a stable sort on top of it)."""
        return [_node(r) for r in self.db.query("select * from nodes where parent_id = ? order by rowid", [node_id])]

    def add_child(self, parent: Node, action: str, outcome: str = "", author: str = "",
                  link_to: str | None = None) -> Node:
        child = Node(parent.tree_id, parent.id, action, outcome, author=author, depth=parent.depth + 1,
                     link_to=link_to)
        with self.db.atomic():
            self._insert(child)
        return child

    def add_children(self, parent: Node, actions: list[str], author: str) -> list[Node]:
        kids = [Node(parent.tree_id, parent.id, a, "", author=author, depth=parent.depth + 1) for a in actions]
        with self.db.atomic():
            self.db["nodes"].insert_all([k.__dict__ for k in kids], alter=False)
        return kids

    def set_outcome(self, node_id: str, outcome: str, author: str) -> None:
        """Store an outcome only where none is stored yet (two players may expand at once)."""
        with self.db.atomic():
            self.db.execute("update nodes set outcome = ?, author = ? where id = ? and outcome = ''",
                            [outcome, author, node_id])

    def rewrite_outcome(self, node_id: str, outcome: str, author: str = "human") -> None:
        with self.db.atomic():
            self.db.execute("update nodes set outcome = ?, author = ? where id = ?", [outcome, author, node_id])

    def chosen(self, node_id: str) -> None:
        with self.db.atomic():
            self.db.execute("update nodes set choices = choices + 1 where id = ?", [node_id])

    def path_to_root(self, node_id: str) -> list[Node]:
        """The node and its ancestors, root first (one recursive query)."""
        rows = self.db.query(
            """with recursive up(id, parent_id, n) as (
                   select id, parent_id, 0 from nodes where id = ?
                   union all
                   select nodes.id, nodes.parent_id, up.n + 1 from nodes join up on nodes.id = up.parent_id
               )
               select nodes.* from up join nodes on nodes.id = up.id order by up.n desc""",
            [node_id])
        return [_node(r) for r in rows]

    def stats(self, tree_id: str) -> dict:
        row = next(self.db.query(
            "select count(*) as nodes, coalesce(max(depth), 0) as depth, "
            "sum(outcome != '') as outcomes from nodes where tree_id = ?", [tree_id]))
        return dict(row)

    # -- votes ----------------------------------------------------------------------------
    def vote(self, node_id: str, voter: str, value: int) -> None:
        """+1 or -1 (replacing the voter's earlier vote), or 0 to take the vote back. Only the
        owner votes in a private tree (anyone else gets the answer an unknown node gets)."""
        if value not in (-1, 0, 1):
            raise ValueError("A vote is +1, -1 or 0")
        with self.db.atomic():  # BEGIN IMMEDIATE: the read below and the write are one unit
            row = next(self.db.query("select trees.visibility, trees.owner from nodes join trees "
                                     "on trees.id = nodes.tree_id where nodes.id = ?", [node_id]), None)
            if row is None or not can_see(row, voter):
                raise TreeNotFound("No such passage to vote on.")
            old = next(self.db.query("select value from votes where node_id = ? and voter = ?",
                                     [node_id, voter]), None)
            old_value = old["value"] if old else 0
            if value == old_value:
                return
            if value:
                self.db.execute("insert into votes (node_id, voter, value, created) values (?, ?, ?, ?) "
                                "on conflict (node_id, voter) do update set value = excluded.value",
                                [node_id, voter, value, now()])
            else:
                self.db.execute("delete from votes where node_id = ? and voter = ?", [node_id, voter])
            ups = (value == 1) - (old_value == 1)
            downs = (value == -1) - (old_value == -1)
            self.db.execute("update nodes set ups = ups + ?, downs = downs + ? where id = ?", [ups, downs, node_id])

    def my_vote(self, node_id: str, voter: str) -> int:
        row = next(self.db.query("select value from votes where node_id = ? and voter = ?", [node_id, voter]), None)
        return row["value"] if row else 0

    # -- bookmarks ------------------------------------------------------------------------
    def bookmark(self, node_id: str, player: str, label: str = "") -> None:
        with self.db.atomic():
            self.db["bookmarks"].upsert({"node_id": node_id, "player": player, "label": label, "created": now()},
                                        pk=("player", "node_id"))

    def bookmarks(self, tree_id: str, player: str) -> list[tuple[Node, str]]:
        rows = self.db.query(
            "select nodes.*, bookmarks.label as label from bookmarks join nodes on nodes.id = bookmarks.node_id "
            "where nodes.tree_id = ? and bookmarks.player = ? order by bookmarks.created", [tree_id, player])
        return [(_node(r), r["label"]) for r in rows]

    # -- drafts: an own action typed at a passage and not sent ----------------------------------
    def save_draft(self, node_id: str, player: str, text: str) -> None:
        """Keep `text` as the player's unsent action at the node (an empty text forgets it)."""
        with self.db.atomic():
            if text.strip():
                self.db["tree_drafts"].upsert({"node_id": node_id, "player": player, "text": text, "updated": now()},
                                              pk=("player", "node_id"))
            else:
                self.db.execute("delete from tree_drafts where player = ? and node_id = ?", [player, node_id])

    def draft(self, node_id: str, player: str) -> str:
        row = next(self.db.query("select text from tree_drafts where player = ? and node_id = ?",
                                 [player, node_id]), None)
        return row["text"] if row else ""

    def _insert(self, node: Node) -> None:
        self.db["nodes"].insert(node.__dict__, alter=False)


def can_see(tree_row, viewer: str) -> bool:
    return tree_row["visibility"] == "public" or (bool(viewer) and tree_row["owner"] == viewer)


def _short(value: str, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

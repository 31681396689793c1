"""Sharing story trees: JSON packs (validated, merged by node id) and Twine's Twee 3 text.

Packs and Twee files are hostile input. A file is checked (a regular file, its size) before
it is read, and read with a bound; one set of limits holds for every import path; parsing is
linear (a line tokenizer for Twee, no backtracking regexes); every failure is one PackError
sentence that quotes at most ~80 characters of what it saw. A bad pack changes nothing: the
checks and the writes run in one transaction that holds the write lock (two imports of one
pack at once: one merges, the other then finds nothing new).

Votes in a pack are other people's: by default a pack carries per-node tallies (no names),
and imported tallies are kept apart from local votes (pack_votes, shown as such), each pack's
share per node capped; they never rank options and never become a local voter's vote. Only
`trust=True` merges a pack's named voters as voters here (never replacing a vote already cast).
A pack says where its votes were cast by its `origin` (the exporting database's random id):
one of this database's own packs brings none of its votes back into a tree this database
still holds (they are its local votes, already counted, or taken back since).

Private trees are never exported, and an id that belongs to something the importer may not
see (someone's private tree, a node of another tree) behaves exactly like an unknown id: the
pack's nodes get fresh ids.
"""
from __future__ import annotations

import hashlib
import html
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from storyloom import StoryloomError
from storyloom.store import bounded_read
from storyloom.store.stories import now
from storyloom.store.trees import Node, Tree, TreeNotFound, TreeStore, new_id, valid_id

PACK_FORMAT = "storyloom-tree-pack"
PACK_VERSION = 1
# One set of limits for packs and Twee alike.
MAX_PACK_BYTES = 64 * 1024 * 1024
MAX_NODES = 250_000
MAX_TEXT = 20_000  # an outcome or scenario, in characters
MAX_ACTION = 500
MAX_TITLE = 200
MAX_COUNT = 2**31 - 1
MAX_PACK_VOTES = 20_000  # named votes in one pack
PACK_VOTE_CAP = 25  # ups (and downs) one pack may add to one node's imported tally
_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{8,64}\Z"}
_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}

PACK_SCHEMA = {
    "type": "object",
    "required": ["format", "version", "tree", "nodes"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": PACK_FORMAT},
        "version": {"const": PACK_VERSION},
        "origin": _ID,  # the exporting database, so a newer pack from it replaces its tallies
        "tree": {
            "type": "object", "required": ["id", "title"], "additionalProperties": False,
            "properties": {"id": _ID, "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE},
                           "scenario": _TEXT, "created": {"type": "string", "maxLength": 40}},
        },
        "nodes": {
            "type": "array", "minItems": 1, "maxItems": MAX_NODES,
            "items": {
                "type": "object", "required": ["id", "parent_id", "action", "outcome"],
                "additionalProperties": False,
                "properties": {
                    "id": _ID, "parent_id": {"anyOf": [_ID, {"type": "null"}]},
                    "link_to": {"anyOf": [_ID, {"type": "null"}]},
                    "action": {"type": "string", "maxLength": MAX_ACTION}, "outcome": _TEXT,
                    "author": {"type": "string", "maxLength": 200},
                    "choices": _COUNT,
                    "created": {"type": "string", "maxLength": 40},
                },
            },
        },
        "tallies": {
            "type": "array", "maxItems": MAX_NODES,
            "items": {"type": "object", "required": ["node_id", "ups", "downs"], "additionalProperties": False,
                      "properties": {"node_id": _ID, "ups": _COUNT, "downs": _COUNT}},
        },
        "votes": {
            "type": "array", "maxItems": MAX_PACK_VOTES,
            "items": {
                "type": "object", "required": ["node_id", "voter", "value"], "additionalProperties": False,
                "properties": {"node_id": _ID, "voter": {"type": "string", "minLength": 1, "maxLength": 200},
                               "value": {"enum": [-1, 1]}},
            },
        },
    },
}


class PackError(StoryloomError):
    """A pack or Twee file that cannot be imported; nothing was changed."""


@dataclass
class ImportReport:
    tree_id: str
    title: str
    nodes_added: int
    outcomes_filled: int
    votes_added: int  # votes taken in: as tallies apart from local votes, or (trusted) as voters
    votes_capped: int = 0  # votes over a pack's cap per node, left out
    own_votes: int = 0  # votes the pack holds that were cast in this database: left as they are here
    votes_known: int = 0  # votes this pack (or a named voter's vote) brought in before: not counted again

    def summary(self) -> str:
        """What the import did, in one line the CLI and the TUI both print: with 0 votes counted
        a player asks why (their own pack, the same pack again, a cap, none in the file)."""
        why = []
        if self.own_votes:
            why.append(f"{self.own_votes} of its votes were cast here and are counted already")
        if self.votes_known:
            why.append(f"{self.votes_known} {_votes(self.votes_known, 'was', 'were')} counted when it was imported before")
        if self.votes_capped:
            why.append(f"{self.votes_capped} over the per-pack cap left out")
        if not self.votes_added and not why:
            why.append("it holds no votes")
        counted = f"{self.votes_added} {_votes(self.votes_added)} counted" + (f" ({'; '.join(why)})" if why else "")
        return f"{self.nodes_added} passages added, {self.outcomes_filled} filled in, {counted}"


def _votes(n: int, one: str = "vote", many: str = "votes") -> str:
    return one if n == 1 else many


def quote(value: object, limit: int = 80) -> str:
    """A value for an error message: its repr, cut to `limit` characters."""
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value):,} items"
    if isinstance(value, dict):
        return f"an object with {len(value):,} keys"
    text = repr(value[: limit + 2] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- reading files ------------------------------------------------------------------------
def read_bounded(path: Path, limit: int = MAX_PACK_BYTES) -> bytes:
    """A regular file's bytes, refused before reading when it is not one or is over `limit`."""
    return bounded_read.read_bounded(path, limit, PackError, quote(str(path)), "import a .json pack or a .twee file.",
                                     f"the limit is {limit / 1e6:.0f} MB")


def _check_text(value) -> None:
    """Every string encodes as UTF-8 (a lone surrogate from a JSON escape does not)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise PackError("The pack has text that is not valid Unicode (a lone surrogate such as \\ud800).") from None


# -- JSON packs ---------------------------------------------------------------------------
def export_pack(store: TreeStore, tree_id: str, voters: bool = False, viewer: str | None = None) -> dict:
    """A public tree as a pack. Votes go out as per-node counts of the votes cast here; the
    voters' names only when the owner asks (`voters=True`)."""
    tree = _exportable(store, tree_id, viewer)
    nodes = [dict(r) for r in store.db.query(
        "select id, parent_id, link_to, action, outcome, author, choices, created from nodes "
        "where tree_id = ? order by depth, created, id", [tree_id])]
    pack = {"format": PACK_FORMAT, "version": PACK_VERSION, "origin": origin_id(store),
            "tree": {"id": tree.id, "title": tree.title, "scenario": tree.scenario, "created": tree.created},
            "nodes": nodes}
    if not voters:
        pack["tallies"] = [dict(r) for r in store.db.query(
            "select id as node_id, ups, downs from nodes where tree_id = ? and (ups > 0 or downs > 0) "
            "order by id", [tree_id])]
    else:
        pack["votes"] = [dict(r) for r in store.db.query(
            "select votes.node_id, votes.voter, votes.value from votes join nodes on nodes.id = votes.node_id "
            "where nodes.tree_id = ? order by votes.node_id, votes.voter", [tree_id])]
    return pack


def _exportable(store: TreeStore, tree_id: str, viewer: str | None) -> Tree:
    """The tree if it may leave this database; a private one reads like an unknown id to
    anyone but its owner, who is told why."""
    tree = store.tree(tree_id)  # TreeNotFound for an unknown id
    if tree.visibility != "public":
        if viewer is not None and tree.owner != viewer:
            raise TreeNotFound(f"No tree {quote(tree_id)}; `storyloom tree list` shows their ids.")
        raise PackError("Private trees are never exported. Make it public first if you mean to share it.")
    return tree


def origin_id(store: TreeStore) -> str:
    """A random id for this database, written into its packs (not secret, not personal)."""
    own = _own_origin(store)
    if own:
        return own
    value = new_id()
    with store.db.atomic():
        store.db.execute("insert or ignore into meta (key, value) values ('origin', ?)", [value])
    return next(store.db.query("select value from meta where key = 'origin'"))["value"]


def _own_origin(store: TreeStore) -> str | None:
    """This database's origin id, or None while it has exported nothing (none was made yet)."""
    row = next(store.db.query("select value from meta where key = 'origin'"), None)
    return row["value"] if row else None


def dump_pack(pack: dict) -> str:
    return json.dumps(pack, ensure_ascii=False, indent=1)


def load_pack(text: str | bytes) -> dict:
    """Parse and validate a pack (size, JSON, schema). Raises PackError saying what is wrong."""
    import jsonschema

    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_PACK_BYTES:
        raise PackError(f"The pack is {size / 1e6:.1f} MB; the limit is {MAX_PACK_BYTES / 1e6:.0f} MB.")
    try:
        pack = json.loads(text)
    except RecursionError:
        raise PackError("The pack is not valid JSON: it is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackError(f"The pack is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(pack, dict):
        raise PackError("The pack is not a tree pack: it should be a JSON object with format, tree and nodes.")
    for key, limit in (("nodes", MAX_NODES), ("tallies", MAX_NODES), ("votes", MAX_PACK_VOTES)):
        if isinstance(pack.get(key), list) and len(pack[key]) > limit:  # before the schema quotes it whole
            raise PackError(f"The pack has {len(pack[key]):,} {key}; the limit is {limit:,}.")
    validator = jsonschema.Draft202012Validator(PACK_SCHEMA)
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(pack))
    except RecursionError:
        raise PackError("The pack is nested too deeply to be a tree pack.") from None
    if error is not None:
        where = "/".join(str(p) if len(str(p)) <= 40 else str(p)[:39] + "…" for p in error.absolute_path)
        message = error.message if len(error.message) <= 160 else f"{quote(error.instance)} fails {error.validator!r}"
        raise PackError(f"The pack does not match the tree pack schema at {where or 'the top level'}: {message}")
    _check_text(pack)
    return pack


def import_pack(store: TreeStore, pack: dict, owner: str = "", trust: bool = False,
                visibility: str = "public") -> ImportReport:
    """Merge a validated pack into the store: new nodes by id, empty outcomes filled, votes as
    capped tallies apart from local votes (or, with `trust`, named voters as voters here)."""
    import sqlite3

    for n in pack["nodes"]:  # the schema checked these; ids are checked in code as well
        for ref in ("id", "parent_id", "link_to"):
            if n.get(ref) is not None and not valid_id(n[ref]):
                raise PackError(f"Node id {quote(n[ref])} is not a valid id.")
    if not valid_id(pack["tree"]["id"]):
        raise PackError(f"Tree id {quote(pack['tree']['id'])} is not a valid id.")
    try:
        with store.db.atomic():  # checks and writes see one state; a second import waits here
            return _merge(store, pack, owner, trust, visibility)
    except sqlite3.IntegrityError as exc:
        raise PackError(f"The pack conflicts with this database ({str(exc)[:80]}); nothing was imported.") from None


def _merge(store: TreeStore, pack: dict, owner: str, trust: bool, visibility: str = "public") -> ImportReport:
    tree_info = dict(pack["tree"])
    nodes = {n["id"]: dict(n) for n in pack["nodes"]}
    if len(nodes) != len(pack["nodes"]):
        raise PackError("The pack lists the same node id twice.")
    row = next(store.db.query("select * from trees where id = ?", [tree_info["id"]]), None)
    if row is not None and row["visibility"] != "public" and owner and row["owner"] == owner:
        raise PackError("This pack is a copy of your private tree here; make that tree public to merge into it.")
    existing_tree = row is not None and row["visibility"] == "public"
    if row is not None and not existing_tree:
        # Someone else's private tree: the same answer as an unknown id (a new tree with fresh
        # ids), so a pack cannot probe for what it may not see.
        tree_info["id"] = new_id()
        renames = {i: new_id() for i in nodes}
    else:
        renames = {}
    local = {} if renames else {r["id"]: dict(r) for r in store.db.query(
        "select id, tree_id, parent_id, outcome, depth from nodes where id in (select value from json_each(?))",
        [json.dumps(list(nodes))])}
    foreign = {i for i, r in local.items() if r["tree_id"] != tree_info["id"]}
    renames.update({i: new_id() for i in foreign})  # another tree's node ids: fresh ones, likewise
    local = {i: r for i, r in local.items() if i not in foreign}
    nodes = _renamed(nodes, renames)
    votes = [{**v, "node_id": renames.get(v["node_id"], v["node_id"])} for v in pack.get("votes", [])]
    tallies = [{**t, "node_id": renames.get(t["node_id"], t["node_id"])} for t in pack.get("tallies", [])]
    tree_id = tree_info["id"]
    in_tree = set(nodes) | _tree_node_ids(store, tree_id) if existing_tree else set(nodes)
    roots = [n for n in nodes.values() if n["parent_id"] is None]
    if not existing_tree and len(roots) != 1:
        raise PackError(f"A new tree needs exactly one root node (parent_id null); this pack has {len(roots)}.")
    if existing_tree and any(r["id"] not in local for r in roots):
        raise PackError("The pack has a root node that this tree does not have.")
    for n in nodes.values():
        for ref in ("parent_id", "link_to"):
            if n.get(ref) is not None and n[ref] not in in_tree:
                raise PackError(f"Node {n['id']} points ({ref}) at {n[ref]}, which is neither in the pack nor in the tree.")
    depths = _depths(store, nodes, local)
    for v in [*votes, *tallies]:
        if v["node_id"] not in in_tree:
            raise PackError(f"A vote is for node {v['node_id']}, which is not in the tree.")

    if not existing_tree:
        private = visibility == "private" and bool(owner)  # a new tree is public unless its owner asks
        store.db["trees"].insert({"id": tree_id, "title": tree_info["title"],
                                  "scenario": tree_info.get("scenario", ""), "visibility": "private" if private else "public",
                                  "owner": owner if private else "", "created": tree_info.get("created") or now()})
    fresh = [n for n in nodes.values() if n["id"] not in local]
    fresh.sort(key=lambda n: depths[n["id"]])  # parents before children (foreign keys)
    store.db["nodes"].insert_all(
        ({"id": n["id"], "tree_id": tree_id, "parent_id": n["parent_id"], "action": n["action"],
          "outcome": n["outcome"], "author": n.get("author", ""), "depth": depths[n["id"]],
          "link_to": None, "ups": 0, "downs": 0, "choices": n.get("choices", 0),
          "created": n.get("created") or now()} for n in fresh), alter=False)
    filled = 0
    for n in nodes.values():  # links last: they may point at nodes inserted after them
        if n.get("link_to") and n["id"] not in local:
            store.db.execute("update nodes set link_to = ? where id = ?", [n["link_to"], n["id"]])
        elif n["id"] in local and n["outcome"] and not local[n["id"]]["outcome"]:
            store.db.execute("update nodes set outcome = ?, author = ? where id = ? and outcome = ''",
                             [n["outcome"], n.get("author", ""), n["id"]])
            filled += 1
    own = 0
    if existing_tree and pack.get("origin") and pack["origin"] == _own_origin(store):
        # Our own export coming back: its tallies are this database's local votes and its named
        # votes are rows of its votes table, so taking them would count each vote twice (or bring
        # back one taken back since). A tree deleted here since gets them again, as any pack's.
        own = sum(t["ups"] + t["downs"] for t in tallies) + len(votes)
        votes, tallies = [], []
    added, capped, known = _take_votes(store, pack, votes, tallies, trust)
    return ImportReport(tree_id, tree_info["title"], len(fresh), filled, added, capped, own, known)


def _renamed(nodes: dict[str, dict], ids: dict[str, str]) -> dict[str, dict]:
    if not ids:
        return nodes
    out = {}
    for n in nodes.values():
        n = {**n, **{k: ids.get(n.get(k), n.get(k)) for k in ("id", "parent_id", "link_to")}}
        out[n["id"]] = n
    return out


def _take_votes(store: TreeStore, pack: dict, votes: list[dict], tallies: list[dict],
                trust: bool) -> tuple[int, int, int]:
    """Trusted named votes become voters here (insert or ignore: a vote already cast stays);
    everything else becomes this pack's tally per node, capped, replacing its earlier tally.
    Returns (votes added, left out over the cap, already taken in from this pack before)."""
    added = capped = known = 0
    if trust and votes:
        for v in votes:
            cur = store.db.execute("insert or ignore into votes (node_id, voter, value, created) values (?, ?, ?, ?)",
                                   [v["node_id"], v["voter"], v["value"], now()])
            added += cur.rowcount
            known += 1 - cur.rowcount
        for node_id in {v["node_id"] for v in votes}:  # keep the counts in step with the votes table
            store.db.execute(
                "update nodes set ups = (select count(*) from votes where node_id = ? and value = 1), "
                "downs = (select count(*) from votes where node_id = ? and value = -1) where id = ?",
                [node_id, node_id, node_id])
        votes = []
    counts: dict[str, list[int]] = {}
    for t in tallies:
        c = counts.setdefault(t["node_id"], [0, 0])
        c[0], c[1] = max(c[0], t["ups"]), max(c[1], t["downs"])
    for v in votes:  # named but untrusted: counted, the names dropped
        c = counts.setdefault(v["node_id"], [0, 0])
        c[0 if v["value"] == 1 else 1] += 1
    source = pack.get("origin") or f"pack:{pack['tree']['id']}"
    for node_id, (ups, downs) in counts.items():
        kept_ups, kept_downs = min(ups, PACK_VOTE_CAP), min(downs, PACK_VOTE_CAP)
        capped += ups + downs - kept_ups - kept_downs
        old = next(store.db.query("select ups, downs from pack_votes where node_id = ? and source = ?",
                                  [node_id, source]), None)
        before = old["ups"] + old["downs"] if old else 0
        known += min(before, kept_ups + kept_downs)
        if old and (old["ups"], old["downs"]) == (kept_ups, kept_downs):
            continue  # the same pack again: nothing new
        added += max(0, kept_ups + kept_downs - before)
        store.db.execute("insert into pack_votes (node_id, source, ups, downs, created) values (?, ?, ?, ?, ?) "
                         "on conflict (node_id, source) do update set ups = excluded.ups, downs = excluded.downs",
                         [node_id, source, kept_ups, kept_downs, now()])
        store.db.execute(
            "update nodes set pack_ups = (select coalesce(sum(ups), 0) from pack_votes where node_id = ?), "
            "pack_downs = (select coalesce(sum(downs), 0) from pack_votes where node_id = ?) where id = ?",
            [node_id, node_id, node_id])
    return added, capped, known


def _tree_node_ids(store: TreeStore, tree_id: str) -> set[str]:
    return {r["id"] for r in store.db.query("select id from nodes where tree_id = ?", [tree_id])}


def _depths(store: TreeStore, nodes: dict[str, dict], local: dict[str, dict]) -> dict[str, int]:
    """Each pack node's depth from its parents; raises PackError on a parent cycle."""
    depths: dict[str, int] = {i: r["depth"] for i, r in local.items()}
    for start in nodes:
        chain = []
        at = start
        while at not in depths:
            if at in chain:
                raise PackError(f"The pack's parent links form a cycle at node {at}.")
            chain.append(at)
            parent = nodes[at]["parent_id"] if at in nodes else None
            if parent is None:
                depths[at] = 0
                chain.pop()
                break
            if parent not in nodes and parent not in depths:
                depths[parent] = store.node(parent).depth
            at = parent
        for node_id in reversed(chain):
            depths[node_id] = depths[nodes[node_id]["parent_id"]] + 1
    return depths


# -- Twee 3 (Twine) -----------------------------------------------------------------------
# Export escapes, as HTML entities, everything Twine or Harlowe would read as structure:
# links and hooks ([ ]), link separators (| -> <-), HTML (< > &), macros "(name:", variables
# ($x, _x), whitespace collapsing ({ }) and line joins (\); a line starting "::" gets Twee's
# "\::". Outcomes are text, not HTML. Import decodes entities (as Twine shows them).
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;", "{": "&#123;", "}": "&#125;",
             "|": "&#124;", "\\": "&#92;"}
_MACRO_OR_VARIABLE = re.compile(r"\((?=[A-Za-z0-9_-]+:)|(?<![\w$])[$_](?=[A-Za-z])")


def _escape(text: str) -> str:
    text = "".join(_ENTITIES.get(c, c) for c in text)
    return _MACRO_OR_VARIABLE.sub(lambda m: f"&#{ord(m.group())};", text)


def _twee_text(text: str) -> str:
    lines = _escape(text).split("\n")
    return "\n".join("\\" + line if line.startswith("::") else line for line in lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _link_text(action: str) -> str:
    return _escape(_one_line(action).replace("->", "→").replace("<-", "←")) or "…"


def _passage_name(node_id: str, root_id: str) -> str:
    return "Start" if node_id == root_id else f"n{node_id}"


# A Twee file round-trips without loss: an unwritten passage is tagged (its placeholder text is
# not an outcome), the scenario is its own tagged passage that Start displays, a link option is
# written [[text|target]] and a tree child [[text->target]] (Twine reads both alike), passages go
# out breadth first with each passage's links in the tree's order, and the IFID names the tree.
UNWRITTEN_TAG = "storyloom-unwritten"
SCENARIO_TAG = "storyloom-scenario"
SCENARIO_PASSAGE = "StoryLoom scenario"
SCENARIO_INCLUDE = f'(display: "{SCENARIO_PASSAGE}")'
UNWRITTEN_TEXT = "(Nobody has gone this way yet. Play it in StoryLoom to write it.)"
_IFID_ID = re.compile(r"[0-9a-f]{32}")


def tree_ifid(tree_id: str) -> str:
    """A tree's Twine IFID: a tree made from a Twine story keeps its IFID as its id."""
    if _IFID_ID.fullmatch(tree_id):
        return str(uuid.UUID(tree_id)).upper()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"storyloom:{tree_id}")).upper()


def export_twee(store: TreeStore, tree_id: str, viewer: str | None = None) -> str:
    tree = _exportable(store, tree_id, viewer)
    root = store.root(tree_id)
    rows = [Node(**{k: r[k] for k in Node.__dataclass_fields__}) for r in store.db.query(
        "select * from nodes where tree_id = ? order by created, rowid", [tree_id])]
    kids: dict[str, list[Node]] = {}
    for n in rows:
        if n.parent_id:
            kids.setdefault(n.parent_id, []).append(n)
    data = {"ifid": tree_ifid(tree.id), "format": "Harlowe", "format-version": "3.3.9", "start": "Start"}
    title = _one_line(tree.title) or "Untitled"
    out = [":: StoryTitle", "\\" + title if title.startswith("::") else title, "",
           ":: StoryData", json.dumps(data, indent=2), ""]
    scenario = tree.scenario.strip()
    if scenario:
        out += [f":: {SCENARIO_PASSAGE} [{SCENARIO_TAG}]", _twee_text(scenario), ""]
    order, at = [root], 0
    while at < len(order):  # breadth first; a link has no passage of its own
        order += [k for k in kids.get(order[at].id, []) if not k.link_to]
        at += 1
    for n in order:
        body = n.outcome.strip()
        text = _twee_text(body) if body else UNWRITTEN_TEXT
        if n.id == root.id and scenario:
            text = SCENARIO_INCLUDE + "\n\n" + text
        links = [f"[[{_link_text(k.action)}{'|' if k.link_to else '->'}{_passage_name(k.link_to or k.id, root.id)}]]"
                 for k in kids.get(n.id, [])]
        out += [f":: {_passage_name(n.id, root.id)}" + ("" if body else f" [{UNWRITTEN_TAG}]"), text]
        if links:
            out += [""] + links
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _header_name(line: str) -> str:
    return _header(line)[0]


def _header(line: str) -> tuple[str, list[str]]:
    """The passage name and tags of a ':: Name [tags] {metadata}' line, in one pass (no regex)."""
    rest, name, i = line[2:], [], 0
    while i < len(rest):
        c = rest[i]
        if c == "\\" and i + 1 < len(rest):
            name.append(rest[i + 1])
            i += 2
            continue
        if c in "[{":
            break
        name.append(c)
        i += 1
    tail, tags = rest[i:].strip(), []
    if tail.startswith("["):
        end = tail.find("]")
        if end < 0:
            raise PackError(f"A passage header's tags are not closed: {quote(line)}")
        tags = tail[1:end].split()
        tail = tail[end + 1:].strip()
    if tail and not (tail.startswith("{") and tail.endswith("}")):
        raise PackError(f"Not a Twee passage header: {quote(line)}")
    return "".join(name).strip(), tags


def _links(body: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """The prose without its [[links]], and each link's (text, target); linear in the body."""
    prose, found = [], []
    for line in body.split("\n"):
        kept, at = [], 0
        while True:
            start = line.find("[[", at)
            if start < 0:
                break
            end = line.find("]]", start + 3)
            if end < 0:
                break  # no closing bracket anywhere later on this line: no more links
            kept.append(line[at:start])
            found.append(_parse_link(line[start + 2:end]))
            at = end + 2
        kept.append(line[at:])
        prose.append("".join(kept))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(prose)).strip()
    return html.unescape(text), found


def _parse_link(inner: str) -> tuple[str, str, bool]:
    """(text, target, written with a pipe): our exports write link options [[text|target]]."""
    pipe = False
    if "->" in inner:
        text, _, target = inner.rpartition("->")
    elif "<-" in inner:
        target, _, text = inner.partition("<-")
    elif "|" in inner:
        text, _, target = inner.partition("|")
        pipe = True
    else:
        text = target = inner
    return html.unescape(text.strip()), target.strip(), pipe


def parse_twee(text: str) -> tuple[str, str, dict[str, str]]:
    """(title, start passage, {passage name: raw text}) from Twee 3 source."""
    story = _parse_story(text)
    return story.title, story.start, story.bodies


@dataclass
class _Story:
    title: str
    start: str
    bodies: dict[str, str]
    tags: dict[str, list[str]]
    ifid: str | None


def _parse_story(text: str) -> _Story:
    if len(text) > MAX_PACK_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_PACK_BYTES:
        raise PackError(f"The Twee file is over the {MAX_PACK_BYTES / 1e6:.0f} MB limit.")
    passages: dict[str, list[str]] = {}
    tags: dict[str, list[str]] = {}
    current = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("::"):
            current, tags_here = _header(line)
            if not current:
                raise PackError(f"Not a Twee passage header: {quote(line)}")
            if current in passages:
                raise PackError(f"Two passages are named {quote(current)}.")
            if len(passages) >= MAX_NODES:
                raise PackError(f"The Twee file has more than {MAX_NODES:,} passages.")
            passages[current] = []
            tags[current] = tags_here
        elif current is not None:
            passages[current].append(line[1:] if line.startswith("\\::") else line)
    if not passages:
        raise PackError("No Twee passages found (they start with ':: Name').")
    bodies = {k: "\n".join(v).strip() for k, v in passages.items()}
    title = html.unescape(_one_line(bodies.pop("StoryTitle", ""))) or "Imported story"
    start, ifid = "Start", None
    if "StoryData" in bodies:
        try:
            data = json.loads(bodies.pop("StoryData")[:MAX_TEXT])
        except (ValueError, RecursionError):
            raise PackError("The StoryData passage is not valid JSON.") from None
        if not isinstance(data, dict):
            raise PackError("The StoryData passage should be a JSON object (with ifid and start).")
        start = data.get("start", start)
        if not isinstance(start, str) or not start:
            raise PackError(f"StoryData's start should be a passage name, not {quote(start)}.")
        try:  # an IFID that is not a UUID names nothing: the story imports as a new tree each time
            ifid = str(uuid.UUID(str(data.get("ifid")))).upper() if data.get("ifid") else None
        except ValueError:
            ifid = None
    if start not in bodies:
        raise PackError(f"The start passage {quote(start)} is missing.")
    return _Story(title, start, bodies, tags, ifid)


def _tree_for_ifid(store: TreeStore, ifid: str | None) -> str | None:
    """The tree this IFID names here: one we exported, or one made from this Twine story before."""
    if ifid is None:
        return None
    own = uuid.UUID(ifid).hex
    if next(store.db.query("select id from trees where id = ?", [own]), None):
        return own
    return next((r["id"] for r in store.db.query("select id from trees") if tree_ifid(r["id"]) == ifid), None)


def _match_local_children(store: TreeStore, tree_id: str, rows: list[dict]) -> None:
    """Merging into a tree: an option the tree already has (same parent, same words, a link the
    same way) keeps its id here, so a link option is not added twice (links carry no id in Twee)."""
    known = _tree_node_ids(store, tree_id)
    renames: dict[str, str] = {}
    for r in rows:  # parents come before their children
        r["parent_id"] = renames.get(r["parent_id"], r["parent_id"])
        if r["id"] in known or r["parent_id"] not in known:
            continue
        twin = next((k for k in store.children(r["parent_id"])
                     if _one_line(k.action) == _one_line(r["action"]) and bool(k.link_to) == bool(r["link_to"])), None)
        if twin is not None:
            renames[r["id"]] = r["id"] = twin.id
    for r in rows:
        r["link_to"] = renames.get(r["link_to"], r["link_to"])


def twee_ifid(text: str) -> str | None:
    """The IFID a Twee story names itself by (None if it has none); PackError if it is not Twee."""
    return _parse_story(text).ifid


def import_twee(store: TreeStore, text: str, visibility: str = "public", owner: str = "",
                author: str = "twine") -> ImportReport:
    """A Twee story as a tree: passages become outcomes, links become options (each by `author`).
    A story whose IFID names a tree here (ours, or imported before) merges into it like a pack:
    new passages are added, empty outcomes filled, nothing else changed. The pack limits hold."""
    story = _parse_story(text)
    title, start, bodies = story.title, story.start, story.bodies
    if len(title) > MAX_TITLE:
        raise PackError(f"The story title is {len(title):,} characters; the limit is {MAX_TITLE}.")
    existing = _tree_for_ifid(store, story.ifid)
    tree_id = existing or (uuid.UUID(story.ifid).hex if story.ifid else new_id())

    def stable(*parts: str) -> str:  # the same file gives the same ids, so a second import merges
        if story.ifid is None:
            return new_id()
        return hashlib.sha256("\x00".join((story.ifid, *parts)).encode("utf-8", "surrogatepass")).hexdigest()[:24]

    def passage_id(name: str) -> str:
        return name[1:] if name.startswith("n") and valid_id(name[1:]) else stable("passage", name)

    scenario = ""
    for name, tags in story.tags.items():
        if SCENARIO_TAG in tags and name != start:
            scenario = html.unescape(bodies.pop(name, ""))
            if len(scenario) > MAX_TEXT:
                raise PackError(f"The scenario is {len(scenario):,} characters; the limit is {MAX_TEXT:,}.")
    rows: list[dict] = []
    made: dict[str, dict] = {}  # passage name -> its node
    deferred: list[tuple[dict, str]] = []  # [[text|target]] children: a link unless nothing else reaches it

    def row(node_id, parent, action) -> dict:
        if len(rows) >= MAX_NODES:
            raise PackError(f"The story makes more than {MAX_NODES:,} passages and links; the limit is {MAX_NODES:,}.")
        if len(action) > MAX_ACTION:
            raise PackError(f"A link's text is {len(action):,} characters; the limit is {MAX_ACTION}: {quote(action)}")
        node = {"id": node_id, "parent_id": parent, "action": action, "outcome": "", "author": author,
                "link_to": None}
        rows.append(node)
        return node

    root = row(store.root(existing).id if existing else stable("passage", start), None, "")
    made[start] = root
    queue, at = [start], 0
    while True:
        while at < len(queue):  # breadth first; a child's row is made with its parent's, in link order
            name = queue[at]
            at += 1
            node = made[name]
            body = bodies.get(name, "")
            if name == start and body.startswith(SCENARIO_INCLUDE):
                body = body[len(SCENARIO_INCLUDE):]
            outcome, found = _links(body)
            if UNWRITTEN_TAG in story.tags.get(name, ()):
                outcome = ""
            if len(outcome) > MAX_TEXT:
                raise PackError(f"Passage {quote(name)} is {len(outcome):,} characters; the limit is {MAX_TEXT:,}.")
            node["outcome"] = outcome
            for position, (link_text, target, pipe) in enumerate(found):
                child = row(stable("link", node["id"], str(position)), node["id"], link_text)
                if target in made:
                    child["link_to"] = made[target]["id"]
                elif pipe:
                    deferred.append((child, target))
                else:
                    child["id"] = passage_id(target)
                    made[target] = child
                    queue.append(target)
        if not deferred:
            break
        for child, target in deferred:  # only pipes lead there: the first becomes its place in the tree
            if target in made:
                child["link_to"] = made[target]["id"]
            else:
                child["id"] = passage_id(target)
                made[target] = child
                queue.append(target)
        deferred = []
    if existing:
        _match_local_children(store, existing, rows)
    try:
        json.dumps(rows, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise PackError("The Twee file has text that is not valid Unicode.") from None
    pack = {"format": PACK_FORMAT, "version": PACK_VERSION,
            "tree": {"id": tree_id, "title": title, "scenario": scenario}, "nodes": rows}
    return import_pack(store, pack, owner=owner, visibility=visibility)


def import_path(store: TreeStore, path: Path, owner: str = "", trust: bool = False) -> ImportReport:
    """A .json pack or a .twee/.tw Twine story, by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".twee", ".tw"):
        raise PackError("Import a tree pack (.json) or a Twine story (.twee / .tw).")
    data = read_bounded(path)
    if suffix == ".json":
        return import_pack(store, load_pack(data), owner=owner, trust=trust)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"{quote(str(path))} is not UTF-8 text.") from None
    return import_twee(store, text, owner=owner)

"""Sharing story trees: JSON packs (validated, merged by node id) and Twine's Twee 3 text.

A bad pack changes nothing: it is checked whole (size, schema, references, one root, no
cycles) before the single transaction that writes it. Private trees are never exported.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from storyloom import StoryloomError
from storyloom.store.stories import now
from storyloom.store.trees import Node, Tree, TreeStore, new_id

PACK_FORMAT = "storyloom-tree-pack"
PACK_VERSION = 1
MAX_PACK_BYTES = 64 * 1024 * 1024
MAX_NODES = 250_000
_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"}
_TEXT = {"type": "string", "maxLength": 20_000}

PACK_SCHEMA = {
    "type": "object",
    "required": ["format", "version", "tree", "nodes"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": PACK_FORMAT},
        "version": {"const": PACK_VERSION},
        "tree": {
            "type": "object", "required": ["id", "title"], "additionalProperties": False,
            "properties": {"id": _ID, "title": {"type": "string", "minLength": 1, "maxLength": 200},
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
                    "action": {"type": "string", "maxLength": 500}, "outcome": _TEXT,
                    "author": {"type": "string", "maxLength": 200},
                    "choices": {"type": "integer", "minimum": 0},
                    "created": {"type": "string", "maxLength": 40},
                },
            },
        },
        "votes": {
            "type": "array", "maxItems": 5 * MAX_NODES,
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
    votes_added: int


# -- JSON packs ---------------------------------------------------------------------------
def export_pack(store: TreeStore, tree_id: str) -> dict:
    tree = store.tree(tree_id)
    if tree.visibility != "public":
        raise PackError("Private trees are never exported. Make it public first if you mean to share it.")
    nodes = [dict(r) for r in store.db.query(
        "select id, parent_id, link_to, action, outcome, author, choices, created from nodes "
        "where tree_id = ? order by depth, created, id", [tree_id])]
    votes = [dict(r) for r in store.db.query(
        "select votes.node_id, votes.voter, votes.value from votes join nodes on nodes.id = votes.node_id "
        "where nodes.tree_id = ? order by votes.node_id, votes.voter", [tree_id])]
    return {"format": PACK_FORMAT, "version": PACK_VERSION,
            "tree": {"id": tree.id, "title": tree.title, "scenario": tree.scenario, "created": tree.created},
            "nodes": nodes, "votes": votes}


def dump_pack(pack: dict) -> str:
    return json.dumps(pack, ensure_ascii=False, indent=1)


def load_pack(text: str | bytes) -> dict:
    """Parse and validate a pack (size, JSON, schema). Raises PackError saying what is wrong."""
    import jsonschema

    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_PACK_BYTES:
        raise PackError(f"The pack is {size / 1e6:.1f} MB; the limit is {MAX_PACK_BYTES / 1e6:.0f} MB.")
    try:
        pack = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackError(f"The pack is not valid JSON: {exc}") from None
    validator = jsonschema.Draft202012Validator(PACK_SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(pack))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise PackError(f"The pack does not match the tree pack schema at {where}: {error.message}")
    return pack


def import_pack(store: TreeStore, pack: dict) -> ImportReport:
    """Merge a validated pack into the store: new nodes by id, empty outcomes filled, votes per voter."""
    tree_info = pack["tree"]
    tree_id = tree_info["id"]
    nodes = {n["id"]: n for n in pack["nodes"]}
    if len(nodes) != len(pack["nodes"]):
        raise PackError("The pack lists the same node id twice.")
    existing_tree = store.db["trees"].count_where("id = ?", [tree_id]) > 0
    if existing_tree and store.tree(tree_id).visibility != "public":
        raise PackError("A private tree with this id exists here; the pack was not merged into it.")
    local = {r["id"]: dict(r) for r in store.db.query(
        "select id, tree_id, parent_id, outcome, depth from nodes where id in (select value from json_each(?))",
        [json.dumps(list(nodes))])}
    foreign = [i for i, r in local.items() if r["tree_id"] != tree_id]
    if foreign:
        raise PackError(f"Node {foreign[0]} already belongs to another tree here.")
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
    votes = pack.get("votes", [])
    for v in votes:
        if v["node_id"] not in in_tree:
            raise PackError(f"A vote is for node {v['node_id']}, which is not in the tree.")

    added = filled = votes_added = 0
    with store.db.atomic():
        if not existing_tree:
            store.db["trees"].insert({"id": tree_id, "title": tree_info["title"],
                                      "scenario": tree_info.get("scenario", ""), "visibility": "public",
                                      "owner": "", "created": tree_info.get("created") or now()})
        fresh = [n for n in nodes.values() if n["id"] not in local]
        fresh.sort(key=lambda n: depths[n["id"]])  # parents before children (foreign keys)
        store.db["nodes"].insert_all(
            ({"id": n["id"], "tree_id": tree_id, "parent_id": n["parent_id"], "action": n["action"],
              "outcome": n["outcome"], "author": n.get("author", ""), "depth": depths[n["id"]],
              "link_to": None, "ups": 0, "downs": 0, "choices": n.get("choices", 0),
              "created": n.get("created") or now()} for n in fresh), alter=False)
        added = len(fresh)
        for n in nodes.values():  # links last: they may point at nodes inserted after them
            if n.get("link_to") and n["id"] not in local:
                store.db.execute("update nodes set link_to = ? where id = ?", [n["link_to"], n["id"]])
            elif n["id"] in local and n["outcome"] and not local[n["id"]]["outcome"]:
                store.db.execute("update nodes set outcome = ?, author = ? where id = ? and outcome = ''",
                                 [n["outcome"], n.get("author", ""), n["id"]])
                filled += 1
        for v in votes:
            cur = store.db.execute("insert or ignore into votes (node_id, voter, value, created) values (?, ?, ?, ?)",
                                   [v["node_id"], v["voter"], v["value"], now()])
            votes_added += cur.rowcount
        touched = {v["node_id"] for v in votes}
        for node_id in touched:  # keep the counts in step with the votes table
            store.db.execute(
                "update nodes set ups = (select count(*) from votes where node_id = ? and value = 1), "
                "downs = (select count(*) from votes where node_id = ? and value = -1) where id = ?",
                [node_id, node_id, node_id])
    return ImportReport(tree_id, tree_info["title"], added, filled, votes_added)


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
_NAME_SPECIALS = re.compile(r"([\\\[\]{}])")


def _passage_name(node: Node, root_id: str) -> str:
    return "Start" if node.id == root_id else f"n{node.id}"


def _twee_text(text: str) -> str:
    # A line starting with "::" would begin a new passage: Twee 3 escapes it with a backslash.
    return re.sub(r"^::", r"\\::", text, flags=re.MULTILINE)


def _link_text(action: str) -> str:
    return action.replace("]]", "] ]").replace("->", "→").replace("<-", "←").replace("|", "/") or "…"


def export_twee(store: TreeStore, tree_id: str) -> str:
    tree = store.tree(tree_id)
    if tree.visibility != "public":
        raise PackError("Private trees are never exported.")
    root = store.root(tree_id)
    rows = [Node(**{k: r[k] for k in Node.__dataclass_fields__}) for r in store.db.query(
        "select * from nodes where tree_id = ? order by depth, created, id", [tree_id])]
    kids: dict[str, list[Node]] = {}
    for n in rows:
        if n.parent_id:
            kids.setdefault(n.parent_id, []).append(n)
    ifid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"storyloom:{tree.id}")).upper()
    data = {"ifid": ifid, "format": "Harlowe", "format-version": "3.3.9", "start": "Start"}
    out = [":: StoryTitle", tree.title, "", ":: StoryData", json.dumps(data, indent=2), ""]
    for n in rows:
        if n.link_to:
            continue  # a link has no passage of its own: its parent links straight to the target
        body = n.outcome.strip() or "(Nobody has gone this way yet. Play it in StoryLoom to write it.)"
        if n.id == root.id and tree.scenario.strip():
            body = tree.scenario.strip() + "\n\n" + body
        links = []
        for k in kids.get(n.id, []):
            target = k.link_to or k.id
            links.append(f"[[{_link_text(k.action)}->{'Start' if target == root.id else 'n' + target}]]")
        out += [f":: {_passage_name(n, root.id)}", _twee_text(body)]
        if links:
            out += [""] + links
        out.append("")
    return "\n".join(out).rstrip() + "\n"


_HEADER = re.compile(r"^::(?!:)\s*(?P<name>(?:\\.|[^\\\[{])*?)\s*(?:\[(?P<tags>[^\]]*)\])?\s*(?P<meta>\{.*\})?\s*$")
_LINK = re.compile(r"\[\[(.+?)\]\]")


def _parse_link(inner: str) -> tuple[str, str]:
    if "->" in inner:
        text, _, target = inner.rpartition("->")
    elif "<-" in inner:
        target, _, text = inner.partition("<-")
    elif "|" in inner:
        text, _, target = inner.partition("|")
    else:
        text = target = inner
    return text.strip(), target.strip()


def parse_twee(text: str) -> tuple[str, str, dict[str, str]]:
    """(title, start passage, {passage name: raw text}) from Twee 3 source."""
    if len(text.encode("utf-8")) > MAX_PACK_BYTES:
        raise PackError("The Twee file is too large to import.")
    passages: dict[str, list[str]] = {}
    current = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("::"):
            match = _HEADER.match(line)
            if not match or not match.group("name"):
                raise PackError(f"Not a Twee passage header: {line[:60]!r}")
            current = re.sub(r"\\(.)", r"\1", match.group("name"))
            if current in passages:
                raise PackError(f"Two passages are named {current!r}.")
            passages[current] = []
        elif current is not None:
            passages[current].append(line[1:] if line.startswith("\\::") else line)
    if not passages:
        raise PackError("No Twee passages found (they start with ':: Name').")
    bodies = {k: "\n".join(v).strip() for k, v in passages.items()}
    title = bodies.pop("StoryTitle", "").strip() or "Imported story"
    start = "Start"
    if "StoryData" in bodies:
        try:
            start = json.loads(bodies.pop("StoryData")).get("start", start)
        except ValueError:
            raise PackError("The StoryData passage is not valid JSON.") from None
    if start not in bodies:
        raise PackError(f"The start passage {start!r} is missing.")
    return title, start, bodies


def import_twee(store: TreeStore, text: str, visibility: str = "public", owner: str = "") -> ImportReport:
    """A Twee story as a new tree: passages become outcomes, links become options."""
    title, start, bodies = parse_twee(text)
    if len(bodies) > MAX_NODES:
        raise PackError(f"Too many passages ({len(bodies)}); the limit is {MAX_NODES}.")
    tree = Tree(title[:200], visibility=visibility, owner=owner)
    made: dict[str, str] = {}  # passage name -> node id
    rows: list[dict] = []
    links: list[tuple[str, str]] = []

    def split(body: str) -> tuple[str, list[tuple[str, str]]]:
        found = [_parse_link(m) for m in _LINK.findall(body)]
        prose = _LINK.sub("", body)
        return re.sub(r"\n{3,}", "\n\n", prose).strip(), found

    root_id = new_id()
    made[start] = root_id
    queue = [(start, root_id, None, "", 0)]
    while queue:  # breadth first: a passage reached twice becomes a link to its first node
        name, node_id, parent, action, depth = queue.pop(0)
        outcome, found = split(bodies.get(name, ""))
        rows.append({"id": node_id, "tree_id": tree.id, "parent_id": parent, "action": action[:500],
                     "outcome": outcome, "author": "twine", "depth": depth, "link_to": None, "ups": 0,
                     "downs": 0, "choices": 0, "created": now()})
        for link_text, target in found:
            child = new_id()
            if target in made:
                rows.append({"id": child, "tree_id": tree.id, "parent_id": node_id, "action": link_text[:500],
                             "outcome": "", "author": "twine", "depth": depth + 1, "link_to": None, "ups": 0,
                             "downs": 0, "choices": 0, "created": now()})
                links.append((child, made[target]))
            else:
                made[target] = child
                queue.append((target, child, node_id, link_text, depth + 1))
    with store.db.atomic():
        store.db["trees"].insert(tree.__dict__)
        store.db["nodes"].insert_all(rows, alter=False)
        for child, target in links:
            store.db.execute("update nodes set link_to = ? where id = ?", [target, child])
    return ImportReport(tree.id, tree.title, len(rows), 0, 0)


def import_path(store: TreeStore, path: Path, owner: str = "") -> ImportReport:
    """A .json pack or a .twee/.tw Twine story, by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".twee", ".tw"):
        raise PackError("Import a tree pack (.json) or a Twine story (.twee / .tw).")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackError(f"Cannot read {path}: {exc.strerror or exc}") from None
    if suffix == ".json":
        return import_pack(store, load_pack(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"{path} is not UTF-8 text.") from None
    return import_twee(store, text, owner=owner)

"""`storyloom bench votes`: several processes voting on one tree while another imports a pack.

Each voter process casts `votes` votes (a fresh voter name each, so every success is one row)
on random nodes of a shared tree; one more process imports an `import_nodes`-node pack at the
same time. Reports how many votes failed, how many that reported success are missing from the
database (lost), whether the node counts agree with the votes table, and the import's result.
Prints JSON; the numbers are the figure for "0 failed, 0 lost" under concurrent writers.
"""
from __future__ import annotations

import multiprocessing as mp
import random
import tempfile
import time
from pathlib import Path


def _voter(path: str, node_ids: list[str], votes: int, who: int, start, results) -> None:
    from storyloom.store.db import open_db
    from storyloom.store.trees import TreeStore

    store = TreeStore(open_db(path))
    rng = random.Random(who)
    ok = failed = 0
    errors: dict[str, int] = {}
    start.wait()
    for i in range(votes):
        try:
            store.vote(rng.choice(node_ids), f"p{who}-v{i}", rng.choice((1, -1)))
            ok += 1
        except Exception as exc:  # noqa: BLE001 - counted: the figure is how many fail
            failed += 1
            key = f"{type(exc).__name__}: {str(exc)[:60]}"
            errors[key] = errors.get(key, 0) + 1
    results.put({"ok": ok, "failed": failed, "errors": errors})


def _importer(path: str, nodes: int, start, results) -> None:
    from storyloom.store import tree_packs
    from storyloom.store.db import open_db
    from storyloom.store.trees import TreeStore, new_id

    store = TreeStore(open_db(path))
    root = new_id()
    pack_nodes = [{"id": root, "parent_id": None, "action": "", "outcome": "The bench begins."}]
    for i in range(1, nodes):
        parent = pack_nodes[(i - 1) // 5]["id"]
        pack_nodes.append({"id": new_id(), "parent_id": parent, "action": f"Option {i}.", "outcome": f"Passage {i}."})
    pack = {"format": tree_packs.PACK_FORMAT, "version": tree_packs.PACK_VERSION,
            "tree": {"id": new_id(), "title": "Imported during the vote bench"}, "nodes": pack_nodes}
    start.wait()
    began = time.perf_counter()
    try:
        report = tree_packs.import_pack(store, pack)
        results.put({"import": f"{report.nodes_added} nodes added", "import_s": round(time.perf_counter() - began, 1)})
    except Exception as exc:  # noqa: BLE001 - reported
        results.put({"import": f"failed: {type(exc).__name__}: {str(exc)[:80]}"})


def votes(processes: int = 4, votes: int = 1000, import_nodes: int = 250_000, tree_nodes: int = 2000) -> dict:
    from storyloom.store.db import open_db
    from storyloom.store.trees import Tree, TreeStore

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "votes.db")
        store = TreeStore(open_db(path))
        tree = Tree("Vote bench")
        parents = [store.create(tree, "Start.")]
        for i in range(tree_nodes - 1):
            parents.append(store.add_child(parents[i // 5], f"Option {i}.", "Text."))
        ids = [n.id for n in parents]
        start, results = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_voter, args=(path, ids, votes, w, start, results)) for w in range(processes)]
        if import_nodes:
            procs.append(ctx.Process(target=_importer, args=(path, import_nodes, start, results)))
        for p in procs:
            p.start()
        time.sleep(0.5)  # let every process open the database and get ready
        began = time.perf_counter()
        start.set()
        got = [results.get() for _ in procs]
        for p in procs:
            p.join()
        seconds = time.perf_counter() - began
        voters = [g for g in got if "ok" in g]
        ok = sum(g["ok"] for g in voters)
        rows = store.db.execute("select count(*) from votes").fetchone()[0]
        ups_downs = store.db.execute("select coalesce(sum(ups + downs), 0) from nodes").fetchone()[0]
        errors: dict[str, int] = {}
        for g in voters:
            for k, v in g["errors"].items():
                errors[k] = errors.get(k, 0) + v
        result = {"processes": processes, "votes_each": votes, "import_nodes": import_nodes,
                  "failed": sum(g["failed"] for g in voters), "lost": ok - rows,
                  "counts_match_votes": ups_downs == rows, "seconds": round(seconds, 1), "errors": errors}
        result.update(next((g for g in got if "import" in g), {}))
        return result


if __name__ == "__main__":
    import json
    import sys

    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(votes(*args), indent=2))

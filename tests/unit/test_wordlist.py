"""The shipped word list (assets/word_zipf.txt) answers exactly as wordfreq does."""
from __future__ import annotations

import pytest

from storyloom.modes.poetry import constrain, wordlist

wordfreq = pytest.importorskip("wordfreq", reason="wordfreq (a test dependency) proves the shipped list")


def test_every_dictionary_word_has_wordfreqs_zipf():
    words = wordlist.dictionary_words()
    assert len(words) > 100_000  # the whole CMU dictionary, not a sample
    differ = [(w, wordlist.zipf(w), wordfreq.zipf_frequency(w, "en")) for w in words
              if abs(wordlist.zipf(w) - wordfreq.zipf_frequency(w, "en")) >= 0.005]
    assert differ == [], f"{len(differ)} words differ, e.g. {differ[:5]}: run python -m storyloom.modes.poetry.wordlist"


def test_the_file_is_what_the_generator_makes():
    assert (wordlist.assets_dir() / wordlist.FILE).read_text(encoding="utf-8") == wordlist.build()


def test_unknown_words_and_case():
    assert wordlist.zipf("xqzvbnw") == 0.0 == wordfreq.zipf_frequency("xqzvbnw", "en")
    assert wordlist.zipf("The") == wordlist.zipf("the") == wordfreq.zipf_frequency("The", "en") > 7


def test_default_words_are_the_same_from_either_source(monkeypatch):
    # constrain.py asks for frequencies through wordfreq today and through wordlist.zipf once
    # it moves over; routing both names to one source at a time covers either version.
    from_wordfreq = wordfreq.zipf_frequency
    from_list = wordlist.zipf
    monkeypatch.setattr(wordlist, "zipf", lambda w: from_wordfreq(w, "en"))
    reference = constrain.default_words.__wrapped__()
    monkeypatch.setattr(wordlist, "zipf", from_list)
    monkeypatch.setattr(wordfreq, "zipf_frequency", lambda w, lang="en", *a, **k: from_list(w))
    assert constrain.default_words.__wrapped__() == reference
    assert len(reference) > 10_000

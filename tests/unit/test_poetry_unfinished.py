"""Issue 13, sonnets a reader would keep: a line that ends on a modifier right after a word that wants
a noun next ("sailed the high", "for my grand": the bench's sonnets, seeds 11 and 15) is no finished
phrase, and loses to a line that ends its phrase (pick), when one was drawn; off the topic it is no
reason to stray further (as the tic)."""
from __future__ import annotations

from storyloom.modes import critic
from storyloom.modes.poetry.compose import PoemLine, grade, pick, rank_score, unfinished
from storyloom.modes.poetry.prosody import words_of


def _line(text: str, logprob: float = -20.0, **kw) -> PoemLine:
    return PoemLine(text, True, words_of(text)[-1], logprob=logprob, tokens=10, final_logprob=-2.0, **kw)


def test_lines_the_bench_wrote_that_end_cut_off():
    for text in ("I am a sailor who has sailed the high.", "Is always more than it was, for my grand.",
                 "A flower that smiles with me, and the small", "The ships have sailed the ten",
                 "A tale of high", "And on they sail, my strong"):
        assert unfinished(text), text


def test_a_finished_phrase_is_not_cut_off():
    for text in ("A brave soul on a ship that sails the sun.", "To all who sail through the waves, to the one.",
                 "In days of old", "The city is new and it is not dead.", "And so they wander far",
                 "Beneath the dark", "The wind is strong", "Of a tree with leaves blown away and ground.",
                 "Strong", "The land of the free", "Fortune favours the bold", "From low to high", "From one to ten"):
        assert not unfinished(text), text


def test_a_line_cut_off_loses_to_a_less_fluent_one_that_ends_its_phrase():
    cut = _line("I am a sailor who has sailed the high.", logprob=-10.0)
    whole = _line("I am a sailor who has sailed the sky.", logprob=-25.0)
    assert rank_score(cut) > rank_score(whole), "the cut-off line is the likelier"
    assert pick([cut, whole]) is whole
    assert pick([cut]) is cut, "a last resort is still a line"


def test_cut_off_comes_after_the_critic_the_rhyme_and_the_topic():
    cut = _line("I am a sailor who has sailed the high.")
    forced = _line("I am a sailor who has sailed the sky.")
    forced.final_logprob = -12.0
    assert pick([cut, forced]) is cut, "a forced rhyme word is worse"
    failed = _line("I am a sailor who has sailed the sky.", penalty=critic.FAIL)
    assert pick([cut, failed]) is cut
    on_cut = _line("I am a sailor who has sailed the high.", line_topic=0.5)
    off = _line("I am a sailor who has sailed the sky.", line_topic=-0.5)
    assert pick([on_cut, off]) is on_cut, "late, the topic comes first"
    off_cut = _line("I am a sailor who has sailed the high.", logprob=-10.0, line_topic=-0.1)
    assert pick([off_cut, off]) is off_cut, "off the topic, the likelier wins"
    assert all(grade(_line("I am a sailor who has sailed the sky."))) and not all(grade(cut))

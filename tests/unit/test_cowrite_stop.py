"""Co-write's early stop: once a finished paragraph passes the critic, the rows still going end at
their first whole paragraph; a finished candidate that fails (or is about nothing in the scene)
leaves the batch to run as before."""
from __future__ import annotations

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import cowrite
from storyloom.modes.cowrite import EARLY_WORDS, CoWrite, RepetitionRanker, TurnStop, finish_turn, new_story

STORY = "The lighthouse keeper had not spoken to anyone in three weeks when the boat arrived."
SETTINGS = SamplerSettings(seed=1)
# 45 words in three sentences: a whole paragraph that passes, and ends (its row's text runs out) first
PASSING = ("The boat came in on the evening tide, low in the water and silent. The keeper watched it from "
           "the gallery, one hand on the cold rail, and counted three figures in the stern. None of them "
           "waved, and none of them looked up at the light.")
FAILING = "He nodded. She smiled. It rained."  # too short for a paragraph turn
ASTRAY = ("Mina sold apples at the market every Sunday morning. Her stall stood under a striped awning near "
          "the fountain. Children came by for the red ones, and she gave them away for free when nobody was "
          "looking.")  # passes, but shares no word with the scene
LONG = [
    "Gulls rose from the rocks as the hull scraped the jetty. The keeper went down the spiral stair with his "
    "lamp, slowly, because his knees were bad and the steps were wet. At the bottom he stopped and listened to "
    "the boat knock against the stones. Somebody in the stern was singing under their breath, an old song "
    "he had not heard since he was a boy, and he knew the words before he knew the voice. Then",
    "The first of them stepped onto the jetty without a word. She was wrapped in a coat too big for her, and "
    "the lamp showed a face he half remembered from the village. Behind her the other two lifted a long box "
    "out of the boat between them. It was heavy, and the keeper could see from the way they carried it that "
    "they did not want to put it down on the wet stone of his jetty. Then",
    "The keeper raised his lamp and called out to the boat, but nobody answered him. The tide was turning, "
    "and the hull rocked against the rope somebody had thrown over the bollard. He counted the figures again "
    "and found only two where there had been three. The wind came round from the north and brought the smell "
    "of rain across the water toward the rocks below the lighthouse. Then",
]


class Stepwise(ScriptedGenerator):
    """Writes every row a word a step in one batch, as the batched backend does: after each step
    a row ends where `complete` says so or where its text runs out (an end of text), and the
    batch ends where `enough` says so; rows come back as far as they got."""

    def __init__(self, rows: list[str]):
        super().__init__([])
        self.rows = rows
        self.steps = 0

    def candidates(self, prompt, n, settings=None, cancel=None, on_step=None, grammar=None, enough=None,
                   record=None, complete=None):
        words = [row.split(" ") for row in self.rows[:n]]
        texts, done = [""] * n, [False] * n
        for step in range(1, max(map(len, words)) + 2):
            self.steps = step
            for i in range(n):
                if done[i]:
                    continue
                if step > len(words[i]):
                    done[i] = True
                    continue
                texts[i] += " " + words[i][step - 1]
                done[i] = complete is not None and complete(texts[i])
            if all(done) or (enough is not None and enough(list(texts), list(done))):
                break
        return texts


def _propose(rows: list[str]) -> tuple[list[str], int]:
    gen = Stepwise(rows)
    play = CoWrite(new_story("The Keeper", opening=STORY, candidates_n=len(rows), length="paragraph"))
    ranked = play.propose(gen, SETTINGS, ranker=RepetitionRanker())
    return [c.text for c in ranked], gen.steps


def _whole_paragraph_start(text: str) -> str:
    """finish_turn's cut of `text` at its first whole paragraph (35 words in three sentences)."""
    words = text.split(" ")
    for end in range(1, len(words) + 1):
        if cowrite.whole_paragraph(" ".join(words[:end])):
            return finish_turn(" ".join(words[:end]), "paragraph")
    raise AssertionError("no whole paragraph")


def test_a_passing_finished_paragraph_ends_the_others_at_their_first_whole_paragraph():
    texts, steps = _propose([PASSING, *LONG])
    assert PASSING in texts and len(texts) == 4  # the others are still there to pick from, cut
    for row in LONG:
        assert _whole_paragraph_start(row) in texts
    assert steps <= len(PASSING.split()) + 2  # the batch ended with the passing row, give or take a word


def test_a_failing_or_astray_first_finisher_does_not_end_the_batch(monkeypatch):
    for first in (FAILING, ASTRAY):
        texts, steps = _propose([first, *LONG])
        assert steps > len(PASSING.split()) + 10, first
        assert all(len(t.split()) >= EARLY_WORDS for t in texts if t != first)  # longer than a first paragraph
        with monkeypatch.context() as off:
            off.setattr(cowrite, "STOP_ON_PASS", False)
            assert _propose([first, *LONG]) == (texts, steps)  # the batch ran as it did without the stop


def test_the_same_batch_runs_to_longer_turns_with_the_stop_off(monkeypatch):
    monkeypatch.setattr(cowrite, "STOP_ON_PASS", False)
    texts, steps = _propose([PASSING, *LONG])
    assert steps > len(PASSING.split()) + 10
    assert all(len(t.split()) >= EARLY_WORDS for t in texts if t != PASSING)


def test_the_stop_needs_a_batch_of_paragraphs():
    from storyloom.modes.critic import Brief

    brief = Brief(kind="passage", min_words=35, max_words=200, min_sentences=3, scene=STORY)
    assert not TurnStop("paragraph", 1, brief).on  # one candidate: nothing to cut
    assert not TurnStop("sentence", 4, brief).on  # a sentence turn is complete at its first sentence
    stop = TurnStop("paragraph", 4, brief)
    whole, short = LONG[0][:260], [row[:120] for row in LONG]  # a whole paragraph so far; two sentences
    assert not stop.complete(" " + whole)  # nothing passed yet: a whole paragraph goes on
    assert not stop.enough([PASSING, *short[:3]], [False] * 4)  # passing, but not finished
    assert stop.passer is None
    assert not stop.enough([PASSING, *short[:3]], [True, False, False, False])
    assert stop.passer == PASSING  # from now on a row ends at its first whole paragraph
    assert stop.complete(" " + whole) and not stop.complete(" " + short[0])
    assert not stop.enough([PASSING, CHATTY, *short[1:3]], [True, False, False, False])  # a whole one that fails
    assert stop.enough([PASSING, whole, *short[1:3]], [True, False, False, False])  # a second that passes
    assert stop.enough([PASSING, CHATTY, CHATTY, CHATTY], [True, False, False, False])  # all whole, one passing


CHATTY = ("Sure! Here is the next paragraph of your story about the keeper and the boat. I hope you like it, "
          "and let me know if you want any changes. The keeper watched the boat come in. Then")

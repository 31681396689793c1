"""The embedded default model really loads and writes."""
from __future__ import annotations

import pytest

from storyloom.engine.sampling import SamplerSettings

pytestmark = pytest.mark.real_model


def test_default_model_generates_reproducibly(real_model):
    assert real_model.info.name == "SmolLM2-135M-Instruct"
    assert real_model.info.context_length == 8192
    settings = SamplerSettings(temperature=0.8, seed=42, max_new_tokens=24)
    prompt = "The old castle stood on the hill, and"
    a = real_model.generate(prompt, settings)
    b = real_model.generate(prompt, settings)
    assert a == b
    assert len(a.split()) >= 5
    assert real_model.generate(prompt, settings.with_(seed=43)) != a


def test_the_default_path_is_native_on_the_gguf_weights_and_writes_the_reference_text(real_model):
    """The default model is a Q4_1 GGUF: the native step runs on exactly those weights, so its greedy
    text is the library forward's, token for token; a long prompt (bf16 prefill) stays close."""
    import torch

    from storyloom.engine.backends.transformers_backend import TransformersGenerator

    assert real_model.info.extra["engine"] == "native"
    assert real_model.fast.kinds == {"q4_1": 210, "q8_0": 1}  # 30 layers x 7 matrices, the tied head
    reference = TransformersGenerator(real_model.model, real_model.tokenizer, "ref", engine="reference")
    greedy = SamplerSettings(temperature=0, max_new_tokens=48, repetition_penalty=1.0)
    prompt = "The lighthouse keeper had not spoken to anyone in three weeks when the boat arrived."
    text = real_model.generate(prompt, greedy)
    assert text == reference.generate(prompt, greedy) and len(text.split()) > 10
    long_ids = real_model.encode(prompt * 16)
    assert len(long_ids) > 200
    ours = torch.log_softmax(real_model.decode_state(long_ids).logits[0], -1)
    theirs = torch.log_softmax(reference.decode_state(long_ids).logits[0], -1)
    top = theirs.topk(20).indices
    assert (ours[top] - theirs[top]).abs().max() < 0.1


def test_default_model_chat_template_and_scores(real_model):
    prompt = real_model.chat_prompt([{"role": "user", "content": "Name a colour."}])
    assert "<|im_start|>assistant" in prompt
    good = real_model.score("The cat sat on the", " mat.")
    bad = real_model.score("The cat sat on the", " purple elephant galaxy.")
    assert good > bad


def test_scores_on_our_forward_match_the_librarys_on_a_long_prompt(real_model):
    """Ranking runs on our forward (a long prompt and a batch of candidates in bf16 where the CPU
    has bf16 units): the same scores as the library's fp32 forward, give or take a few hundredths,
    and the same order."""
    import torch

    from storyloom.engine.backends.transformers_backend import mean_logprobs

    prompt = ("The lighthouse keeper had not spoken to anyone in three weeks. The storm came in from the west, "
              "and the lamp burned all night. ") * 6
    conts = [" She climbed the stairs and trimmed the wick.", " Purple galaxy elephant spoon.",
             " At dawn a boat came in sight, low in the water, with a single sail."]
    assert real_model.fast is not None and real_model.count_tokens(prompt) >= 64
    ours = real_model.score_many(prompt, conts)
    ids, longest, prompt_ids = real_model._score_inputs(prompt, conts)
    theirs = []
    for c in ids:  # the library's forward, one row at a time
        with torch.no_grad():
            logits = real_model.model(input_ids=torch.tensor([prompt_ids + c])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        theirs += mean_logprobs(logp[len(prompt_ids) - 1], logp[len(prompt_ids):][None], [c])
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 0.05, (ours, theirs)
    assert sorted(range(3), key=ours.__getitem__) == sorted(range(3), key=theirs.__getitem__)


async def test_two_adventure_turns_with_the_real_model(real_model):
    """The whole app, the real model: open a scenario and play two turns."""
    from storyloom.tui.app import StoryloomApp
    from tests.tui.pilot_helpers import act, start_knight

    app = StoryloomApp(generator_factory=lambda spec, progress: real_model)
    app.config = app.config.with_(sampler=app.config.sampler.with_(max_new_tokens=40, seed=7))
    async def play(text: str) -> None:
        await act(app, pilot, text)
        # A 135M model sometimes only writes the player's next move; the app then gives the
        # action back. Press Enter again, as the hint says (a new seed, as an unseeded game has).
        for seed in (8, 9, 10):
            box = app.screen.query_one("#action")
            if not box.value:
                return
            app.config = app.config.with_(sampler=app.config.sampler.with_(seed=seed))
            await act(app, pilot, "")

    async with app.run_test(size=(100, 32)) as pilot:
        await start_knight(app, pilot)
        await play("draw my sword")
        await play("say who goes there")
        turns = app.games.latest().turns
    assert [t.action for t in turns[1:]] == ["> You draw your sword.", "> You say who goes there."]
    for turn in turns:
        assert turn.output.strip(), turn
        assert "\n>" not in turn.output and not turn.output.startswith(">")
    assert app.speed and float(app.speed) > 0


def test_cowrite_offers_ranked_whole_sentences_and_ranks_a_copy_last(real_model):
    from storyloom.modes.cowrite import CoWrite, ModelRanker, new_story

    opening = ("The lighthouse keeper had not spoken to anyone in three weeks when the boat arrived. "
               "It came in at dusk, low in the water, its sail torn.")
    play = CoWrite(new_story("The Lighthouse", opening=opening, candidates_n=3, length="sentence"))
    ranked = play.propose(real_model, SamplerSettings(temperature=0.9, top_p=0.95, seed=3))
    assert 1 <= len(ranked) <= 3
    assert all(c.text.rstrip("\"'”’)")[-1] in ".!?…" for c in ranked)
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert all(c.logprob is not None and c.logprob < 0 for c in ranked)
    # copied text is what the model finds likeliest; the repetition penalty must still sink it
    prompt = play.prompt_for(real_model, SamplerSettings()).text
    copy = opening.split(". ")[0] + "."
    reranked = ModelRanker(real_model).rank(prompt, play.story_text(), [copy] + [c.text for c in ranked])
    assert reranked[-1].text == copy
    assert reranked[-1].logprob > max(c.logprob for c in reranked[:-1])


def test_candidates_come_with_the_log_probs_ranking_needs(real_model):
    """What co-write ranks by comes with the writing: each candidate's mean log-prob from the
    record is what scoring the finished text again says, so only the neutral pass is left."""
    from storyloom.engine.generate import RowLogprobs
    from storyloom.modes.cowrite import CoWrite, new_story

    prompt = "The Keeper\n\nThe lighthouse keeper had not spoken to anyone in three weeks when the boat arrived."
    record: list[RowLogprobs] = []
    texts = real_model.candidates(prompt, 3, SamplerSettings(seed=1, max_new_tokens=40), record=record)
    assert len(record) == 3
    for text, row in zip(texts, record):
        assert row.ends[-1] == len(text) and len(row.ends) == len(row.logprobs) == 40
        assert row.mean(0, len(text)) == pytest.approx(real_model.score(prompt, text), abs=0.02)

    play = CoWrite(new_story("The Keeper", opening=prompt.split("\n\n")[1], candidates_n=4))
    asked = []
    real_score_many = real_model.score_many
    try:
        real_model.score_many = lambda p, conts: asked.append(p) or real_score_many(p, conts)
        ranked = play.propose(real_model, SamplerSettings(seed=2))
    finally:
        del real_model.score_many
    assert len(ranked) >= 2 and asked == ["\n"]  # the neutral prompt only
    story_prompt = play.prompt_for(real_model, SamplerSettings()).text
    for c in ranked:  # the recorded mean is the text's own (cut to whole sentences)
        assert c.logprob == pytest.approx(real_model.score(story_prompt, " " + c.text), abs=0.05)


def test_the_default_model_writes_a_limerick_that_passes_the_scanner(real_model, capsys):
    from storyloom.cli import main
    from storyloom.modes.poetry.compose import compose
    from storyloom.modes.poetry.forms import get_form
    from storyloom.modes.poetry.scan import scan_poem

    limerick = get_form("limerick")
    poem = compose(real_model, limerick, "a cat who sails", seed=1, time_cap=60)
    assert poem.complete, poem.text
    verdict = scan_poem(poem.text, limerick)
    assert verdict.ok and verdict.rhyme_pairs_ok == 3
    # the same through the command line a user runs, then its own scanner on the output
    assert main(["poem", "--form", "limerick", "--topic", "autumn", "--seed", "2"]) == 0
    out, err = capsys.readouterr()
    assert scan_poem(out, limerick).ok, out
    # the summary counts the lines it said it took back (it counted backtracks only: "0 backtracks"
    # under a "(taking line 5 back...)" that a rewrite had made)
    back = err.count("(taking line")
    assert f"{back} {'line' if back == 1 else 'lines'} taken back, " in err, err
    revised = err.count("(revised line")  # and the lines it said the revision wrote again
    assert f"{revised} {'line' if revised == 1 else 'lines'} revised in " in err, err


def test_the_rhyme_planner_prefers_words_of_the_topic(real_model):
    """The plan's topic gauge on the real model: a word of the topic gains on an unrelated one, so
    among rhymes of equal fit the topic's wins (sea over fee, snow over dough)."""
    from storyloom.modes.poetry.compose import poem_prompt, vocabulary_for
    from storyloom.modes.poetry.forms import get_form
    from storyloom.modes.poetry.plan import TopicGauge

    vocab, form = vocabulary_for(real_model), get_form("limerick")
    neutral = poem_prompt(real_model, form, "")
    sea = TopicGauge(real_model, vocab, poem_prompt(real_model, form, "the sea"), neutral).gain(["sea", "fee"])
    assert sea["sea"] > sea["fee"] + 1.0, sea
    gauge = TopicGauge(real_model, vocab, poem_prompt(real_model, form, "winter"), neutral)
    winter = gauge.gain(["snow", "dough"])
    assert winter["snow"] > winter["dough"] + 1.0, winter
    # a whole line is scored by its content words (compose ranks the lines drawn with it)
    assert gauge.line_gain("The snow is falling on the frozen hill") > gauge.line_gain("The tax is due upon the office desk")


# A co-write prompt from `bench quality` (after a picked turn) where every candidate came back
# empty: the default model ends the text right after the last turn's question mark.
ENDS_AT_ONCE = ("Ferry\n\nThe ferryman charged one coin for the crossing and two for the return.\n\nHe gave 10 "
                "coins to his son and 2 more to his son's family, however there is a 5% chance of not returning "
                "after the 3rd day. If he only has 6 days left, how many times will he have to cross before he "
                "returns?")


def test_min_new_tokens_keeps_the_model_from_ending_a_turn_at_once(real_model):
    prompt = ENDS_AT_ONCE
    greedy = SamplerSettings(temperature=0, max_new_tokens=12)
    assert real_model.generate(prompt, greedy) == ""
    assert real_model.candidates(prompt, 2, greedy.with_(temperature=0.8, seed=3)) == ["", ""]
    held = greedy.with_(min_new_tokens=8)
    assert real_model.count_tokens(real_model.generate(prompt, held)) >= 8
    assert all(real_model.count_tokens(t) >= 8 for t in real_model.candidates(prompt, 2, held.with_(
        temperature=0.8, seed=3)))

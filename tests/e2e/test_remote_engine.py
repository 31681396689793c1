"""StoryLoom on a real OpenAI-compatible server (llama-cpp-python's, serving the default model's
own GGUF on loopback): every mode through the remote backend, cancel, and a server that dies."""
from __future__ import annotations

import threading
import time

import pytest

from storyloom import StoryloomError

from storyloom.engine import models
from storyloom.engine.backends.openai_compat import RemoteError, with_found
from storyloom.engine.sampling import SamplerSettings
from storyloom.modes import adventure as adv
from storyloom.modes import critic
from storyloom.modes.cowrite import (
    CoWrite,
    RepetitionRanker,
    default_ranker,
    finish_turn,
    new_story,
    turn_complete,
    whole_paragraph,
)
from storyloom.modes.tree import TreePlay
from storyloom.store.cowrite import CoStory, CowriteStore
from storyloom.store.db import open_db
from storyloom.store.stories import GameStore
from storyloom.store.trees import Tree, TreeStore
from tests.servers import start_server

pytestmark = pytest.mark.real_model

SETTINGS = SamplerSettings(seed=7, max_new_tokens=40)


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def remote(server):
    return models.load(server.spec)


def test_connecting_finds_the_model_its_family_and_what_it_can_do(remote, server, real_model):
    assert remote.info.backend == "openai"
    assert remote.info.name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # chosen from /v1/models
    assert "llama-cpp-python" in remote.info.extra["server"] and server.url in remote.info.extra["server"]
    caps = remote.capabilities
    assert caps.stream and caps.grammar == "gbnf" and caps.exact_tokens and not caps.token_steering
    # llama-cpp-python 0.3 ignores `n`, and its echoed prompt log-probs are not the log-probs it
    # generates with: the probe must notice both rather than trust the API's promise.
    assert not caps.batch
    assert not caps.scoring and "disagree" in remote.info.extra["no scoring"]
    # token counts come from the server's own tokenizer: the same as the local one
    local = real_model
    text = "The lighthouse keeper had not spoken to anyone in three weeks."
    assert remote.count_tokens(text) == local.count_tokens(text)
    # a name that the server does not serve is refused in one sentence
    with pytest.raises(RemoteError, match="does not serve 'nope'"):
        models.load(server.spec + "#nope")


def test_seeded_generation_is_repeatable_and_streams_in_pieces(remote):
    # The server's first reading of a prompt runs it as one batch; a later one finds it cached
    # with the text written after it, and runs its last token again alone, whose logits differ in
    # the last bits (this AVX-512 build's first text with seed 7 differed from every later one,
    # which all agreed, streamed or not): a first call, so the two compared both start so.
    remote.generate("Once upon a time, in a village by the sea,", SETTINGS)
    pieces = list(remote.stream("Once upon a time, in a village by the sea,", SETTINGS))
    assert len(pieces) > 5
    again = remote.generate("Once upon a time, in a village by the sea,", SETTINGS)
    assert "".join(pieces) == again and len(again.split()) > 5
    assert remote.last_stats.new_tokens > 5 and remote.last_stats.first_token_seconds is not None


def test_token_probabilities_from_a_server_that_echoes_no_trusted_prompt_log_probs(remote, real_model):
    # llama-cpp-python's echoes disagree with its own generation (see above), as llama-server
    # echoes none: the server writes the text itself under a grammar and reports its log-probs
    import math

    assert not remote.capabilities.scoring and remote.capabilities.token_logprobs
    prompt = "The lighthouse keeper climbed the stairs."
    text = ' He lit the lamp and looked out at the "sea".'
    choices = remote.token_choices(prompt, text)
    assert "".join(c.text for c in choices) == text and choices[0].start == 0
    assert all(0 < c.probability <= 1 and len(c.alternatives) == 10 for c in choices)
    # the same model locally: as long as the two split the text alike (the grammar lets the
    # server write " l" + "amp" where the tokenizer has " lamp"), the same probabilities
    local = real_model.token_choices(prompt, text)
    alike = []
    for theirs, ours in zip(choices, local):
        if (theirs.start, theirs.text) != (ours.start, ours.text):
            break
        alike.append((theirs, ours))
    assert len(alike) >= 3
    for theirs, ours in alike:
        assert abs(math.log(theirs.probability / ours.probability)) < 0.35, (theirs, ours)
        assert theirs.alternatives[0][0] == ours.alternatives[0][0]


def knight_game(tmp_path, opening: str) -> tuple[GameStore, adv.Adventure]:
    """A saved knight game with its opening written."""
    store = GameStore(open_db(tmp_path / "s.db"))
    setting = adv.load_scenarios()[0]
    game = adv.new_game(setting, setting.characters[0], "Ada")
    store.create(game)
    play = adv.Adventure(game, store)
    play.commit_opening(opening)
    return store, play


def test_an_adventure_turn_on_the_server(remote, tmp_path):
    store, play = knight_game(tmp_path, "The castle gate stands open. Rain falls on the courtyard.")
    game = play.game
    turn = play.begin("do", "look around")
    built = play.prompt_for(turn.action, remote, SETTINGS)
    assert built.tokens <= play.budget(remote.context_length, SETTINGS)
    for seed in range(1, 6):  # the small model sometimes writes only a next action: cleaned to nothing
        events, turn.output = adv.run(play.generate(built.text, turn.action, remote, SETTINGS.with_(seed=seed)))
        assert any(isinstance(e, adv.Chunk) and e.text for e in events)  # it streamed
        if turn.output:
            break
    assert turn.output and not any(line.lstrip().startswith(">") for line in turn.output.splitlines())
    play.commit(turn)
    assert store.load(game.id).turns[-1].output == turn.output


def test_cowrite_candidates_come_ranked_and_say_by_what(remote, tmp_path):
    store = CowriteStore(open_db(tmp_path / "c.db"))
    story = CoStory(title="The Lighthouse", premise="A quiet story about a lighthouse keeper.")
    store.create(story)
    play = CoWrite(story, store)
    play.write("The keeper climbed the stairs as the storm rolled in.")
    assert isinstance(default_ranker(remote), RepetitionRanker)  # the probe found no usable scoring
    steps = []
    ranked = play.propose(remote, SETTINGS, n=3, on_step=steps.append)
    assert 1 <= len(ranked) <= 3 and all(c.text for c in ranked) and steps
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    # where a server does score, the same candidates are scored from its echoed log-probs
    scoring = with_found(remote, scoring=True)
    scores = scoring.score_many("The keeper climbed the stairs.", [" He lit the lamp.", ""])
    assert scores[0] < 0 and scores[1] == float("-inf")


LETTER = "My grandmother's letter arrived a week after her funeral, in her careful blue handwriting."


def test_paragraph_candidates_end_where_their_turn_is_whole_not_at_the_token_cap(remote):
    play = CoWrite(new_story("The Letter", opening=LETTER, candidates_n=4, length="paragraph"))
    settings = play.settings_for(SamplerSettings(seed=1))
    cap = settings.max_new_tokens
    prompt = play.prompt_for(remote, settings).text
    full = remote.candidates(prompt, 4, settings)  # the same draws, read to the end
    assert any(remote.count_tokens(t) >= cap for t in full)  # without the stop they run to the cap
    drawn = []

    class Spy:
        def __getattr__(self, name):
            return getattr(remote, name)

        def candidates(self, *args, **kw):
            drawn.extend(remote.candidates(*args, **kw))
            return drawn

    assert play.propose(Spy(), SamplerSettings(seed=1))
    assert len(drawn) == 4
    # TurnStop: once a finished row passes (about the scene) and a second passes, the batch ends
    # and the rows still going come back as far as they got
    brief = play.brief()
    verdicts = [critic.judge(t, brief) if (t := finish_turn(s, "paragraph")) else None for s in drawn]
    first = any(v is not None and v.passes_in_scene and (short == whole or turn_complete(short, "paragraph"))
                for v, short, whole in zip(verdicts, drawn, full))
    ended = first and sum(v is not None and v.passed for v in verdicts) >= 2
    for i, (whole, short) in enumerate(zip(full, drawn)):
        assert whole.startswith(short)  # the same seeded tokens, its stream closed where the turn was whole
        if i < 3 and not ended:  # the last, written after the others, may also end at its first whole paragraph
            # a complete turn; or, once a candidate passed the critic (TurnStop), a whole paragraph
            assert short == whole or turn_complete(short, "paragraph") or whole_paragraph(short)
        assert remote.count_tokens(short) < cap
    assert sum(map(remote.count_tokens, drawn)) < sum(map(remote.count_tokens, full))


def test_the_log_probs_llama_cpp_python_reports_are_the_models_own_but_cost_more_than_they_save(remote, real_model):
    found = remote.found
    assert found.raw_logprobs and not found.record_logprobs  # see _probe: it sorts its vocabulary per token
    record = []
    remote.candidates("Once upon a time,", 2, SETTINGS, record=record)
    assert record == []  # so co-write scores (here, by repetition: the server cannot score)
    # Where they are asked for, they are what the model says (the same model, run here)
    local = real_model
    prompt = "The Keeper\n\nThe lighthouse keeper had not spoken to anyone in three weeks when the boat arrived."
    recording = with_found(remote, record_logprobs=True, scoring=True)
    # 20 tokens each: the server sorts its vocabulary for every token it reports (~0.3 s a token
    # on the CI machine), and 20 already average far inside the tolerance (0.005-0.02 off)
    texts = recording.candidates(prompt, 3, SamplerSettings(seed=1, max_new_tokens=20), record=record)
    assert len(record) == 3
    for text, row in zip(texts, record):
        assert row.ends[-1] == len(text) and len(row.ends) == len(row.logprobs) == remote.count_tokens(text)
        assert row.mean(0, len(text)) == pytest.approx(local.score(prompt, text), abs=0.1)  # Q4_1 against float
    # and co-write ranks by them: only the neutral prompt is scored
    play = CoWrite(new_story("The Keeper", opening=prompt.split("\n\n")[1], candidates_n=3, length="sentence"))
    asked = []
    recording.score_many = lambda p, conts: asked.append(p) or [-2.0] * len(conts)
    ranked = play.propose(recording, SamplerSettings(seed=2))
    assert len(ranked) >= 2 and set(asked) <= {critic.NEUTRAL_PROMPT}  # at most the neutral pass
    story_prompt = play.prompt_for(recording, SamplerSettings()).text
    for c in ranked:
        assert c.logprob == pytest.approx(local.score(story_prompt, " " + c.text), abs=0.1)


def test_a_turns_shortest_length_holds_on_the_server(remote):
    from tests.e2e.test_real_model import ENDS_AT_ONCE as prompt  # where the local model ends at once

    greedy = SamplerSettings(temperature=0, max_new_tokens=12)
    assert remote.generate(prompt, greedy) == ""
    assert len(remote.generate(prompt, greedy.with_(min_new_tokens=8)).split()) >= 3


def test_a_tree_expansion_on_the_server(remote, tmp_path):
    store = TreeStore(open_db(tmp_path / "t.db"))
    tree = Tree("The Tower", scenario="A dark fantasy adventure.", visibility="public", owner="ada")
    store.create(tree, "You stand before a ruined tower at dusk. Its door hangs open.")
    play = TreePlay(store, tree.id, player="ada")
    step = play.add_action("Step inside")
    for seed in range(1, 6):  # as in adventure: an outcome may come out empty once cleaned
        try:
            node = play.choose_and_expand(step, remote, SETTINGS.with_(seed=seed))
            break
        except StoryloomError as exc:
            assert "wrote no outcome" in str(exc)
    assert node.outcome and store.node(node.id).outcome == node.outcome
    assert len(play.options()) >= 1


def test_cancel_closes_the_request_at_once(remote):
    cancel = threading.Event()
    started = time.monotonic()
    got = []
    for piece in remote.stream("Write a very long story about a dragon.", SETTINGS.with_(max_new_tokens=400), cancel):
        got.append(piece)
        if len(got) == 3:
            cancel.set()
    assert len(got) <= 4
    # the server stopped writing: the next request is answered at once, not after 400 tokens
    remote.generate("Hello", SETTINGS.with_(max_new_tokens=2))
    assert time.monotonic() - started < 8


def test_a_server_killed_mid_reply_is_one_clear_sentence_and_the_turn_is_not_committed(tmp_path):
    srv = start_server()
    try:
        gen = models.load(srv.spec)
        store, play = knight_game(tmp_path, "A wolf howls.")
        game = play.game
        turn = play.begin("do", "run")
        built = play.prompt_for(turn.action, gen, SETTINGS)
        with pytest.raises(RemoteError) as failed:
            for i, _ in enumerate(play.generate(built.text, turn.action, gen, SETTINGS.with_(max_new_tokens=400))):
                if i == 2:
                    srv.kill()
        message = str(failed.value)
        assert message.startswith(f"The server at {srv.url}") and message.count(".") == 1 + srv.url.count(".")
        assert "\n" not in message and "Traceback" not in message
        assert len(store.load(game.id).turns) == 1  # only the opening: nothing half-written was kept
        # and later requests to the dead server say so, without hanging
        with pytest.raises(RemoteError, match="cannot be reached"):
            gen.generate("Hello", SETTINGS)
    finally:
        srv.stop()

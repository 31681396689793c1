"""Poetry on a real OpenAI-compatible server (llama-cpp-python's, serving the default model's GGUF
on loopback): the server cannot be steered token by token, so each line goes out with its GBNF
grammar, and what comes back must pass `storyloom scan`."""
from __future__ import annotations

import pytest

from storyloom import cli
from storyloom.engine import models
from storyloom.modes.poetry.compose import compose
from storyloom.modes.poetry.forms import get_form
from storyloom.modes.poetry.scan import report, scan_poem
from tests.servers import start_server

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    yield srv
    srv.stop()


def test_a_limerick_written_through_a_server_grammar_passes_the_scanner(server):
    remote = models.load(server.spec)
    assert remote.capabilities.grammar == "gbnf" and not remote.capabilities.token_steering
    shape = get_form("limerick")
    shown = []
    poem = compose(remote, shape, "a cat", seed=3, time_cap=600, on_line=lambda i, line: shown.append((i, line)))
    verdict = scan_poem(poem.text, shape)
    assert poem.complete and verdict.ok, report(verdict, shape)
    assert [i for i, line in shown if line is not None][-1] == shape.lines - 1


def test_storyloom_poem_on_a_server_prints_a_poem_that_storyloom_scan_passes(server, tmp_path, capsys):
    # The command's path (options, printing, the scan of what it printed), not a form's: a haiku
    # is three grammar requests where a limerick took 118 s on the CI machine (the test above
    # writes the limerick through the server).
    assert cli.main(["poem", "--model", server.spec, "--form", "haiku", "--topic", "the moon",
                     "--seed", "2", "--time-cap", "600"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "poem.txt").write_text(out, encoding="utf-8")
    assert cli.main(["scan", "--form", "haiku", str(tmp_path / "poem.txt")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")

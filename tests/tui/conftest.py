from __future__ import annotations

import pytest

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.tui.app import StoryloomApp


@pytest.fixture(autouse=True)
def _one_candidate_per_turn(monkeypatch):
    """TUI tests script one output per turn, so scripted models draw one candidate (and stream),
    as a backend without batching does; tests of sample-and-rank turn batching back on for their
    own generator (`generator.capabilities = replace(..., batch=True)`)."""
    from dataclasses import replace

    monkeypatch.setattr(ScriptedGenerator, "capabilities", replace(ScriptedGenerator.capabilities, batch=False))


@pytest.fixture
def fake():
    return ScriptedGenerator(default="Nothing else happens.")


@pytest.fixture
def make_app(fake):
    def make() -> StoryloomApp:
        return StoryloomApp(generator_factory=lambda spec, progress: fake)

    return make


@pytest.fixture
def poet(tiny):
    """The tiny model with a small rhyming vocabulary, so poems compose in a test's time."""
    from storyloom.modes.poetry.constrain import Vocabulary
    from tests.unit.test_poetry import SMALL

    tiny._poetry_vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    yield tiny
    del tiny._poetry_vocab

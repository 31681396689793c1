from __future__ import annotations

import pytest

from storyloom.engine.backends.scripted import ScriptedGenerator
from storyloom.tui.app import StoryloomApp


@pytest.fixture
def fake():
    return ScriptedGenerator(default="Nothing else happens.")


@pytest.fixture
def make_app(fake):
    def make() -> StoryloomApp:
        return StoryloomApp(generator_factory=lambda spec, progress: fake)

    return make

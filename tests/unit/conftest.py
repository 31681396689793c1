"""Fixtures the poetry tests share."""
from __future__ import annotations

import pytest


@pytest.fixture
def small(tiny):
    """The tiny model with a poetry vocabulary of a few hundred words (tests/unit/test_poetry.SMALL)."""
    from storyloom.modes.poetry.constrain import Vocabulary
    from tests.unit.test_poetry import SMALL

    tiny._poetry_vocab = Vocabulary(tiny.tokenizer, words=SMALL, max_tokens=12)
    yield tiny
    del tiny._poetry_vocab

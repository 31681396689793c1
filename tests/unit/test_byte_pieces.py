"""A row's text from its tokens' bytes joined must be the tokenizer's own decoding, byte for byte
(candidates() judges each row's growing text with it), wherever byte_pieces offers a table."""
from __future__ import annotations

import random

import pytest

from storyloom.engine import byte_pieces


def _agrees(tokenizer, table, trials=400, seed=0):
    rng = random.Random(seed)
    size = len(tokenizer)
    for _ in range(trials):
        ids = [rng.randrange(size) for _ in range(rng.randint(1, 12))]  # cut characters, specials, anything
        assert byte_pieces.join(table, ids) == tokenizer.decode(ids, skip_special_tokens=True), ids


def test_the_tiny_models_byte_level_tokenizer_decodes_as_its_pieces(tiny):
    table = byte_pieces.pieces(tiny.tokenizer)
    assert table is not None and len(table) == len(tiny.tokenizer)
    _agrees(tiny.tokenizer, table)


@pytest.mark.real_model
def test_the_default_models_tokenizer_decodes_as_its_pieces(real_model):
    table = real_model.byte_pieces()
    assert table is not None
    _agrees(real_model.tokenizer, table, trials=2000)
    text = "The lighthouse keeper — café 🌊 said “no”.\n\nThen…"
    assert byte_pieces.join(table, real_model.encode(text, special=False)) == text


def test_a_tokenizer_that_does_not_decode_by_bytes_gets_no_table(tiny, monkeypatch):
    monkeypatch.setattr(tiny.tokenizer, "clean_up_tokenization_spaces", True)  # text clean-up after the bytes
    assert byte_pieces.pieces(tiny.tokenizer) is None


def test_a_table_that_disagrees_with_the_tokenizer_is_refused(tiny, monkeypatch):
    real = tiny.tokenizer.decode
    monkeypatch.setattr(tiny.tokenizer, "decode", lambda ids, **kw: real(ids, **kw).upper())
    assert byte_pieces.pieces(tiny.tokenizer) is None

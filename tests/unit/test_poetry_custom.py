"""A custom form typed on one line (the poetry screen's box)."""
from __future__ import annotations

import re

import pytest

from storyloom import StoryloomError
from storyloom.modes.poetry.forms import parse_custom


def test_a_scheme_with_or_without_meter_and_feet():
    form = parse_custom("ABAB CDCD iambic 4")
    assert (form.scheme, form.meter, form.feet) == ("ABAB CDCD", "iambic", (4,) * 8)
    form = parse_custom("aabb trochaic")
    assert (form.scheme, form.meter, form.feet) == ("AABB", "trochaic", (5,) * 4)
    assert parse_custom("3 ABA").feet == (3, 3, 3)


@pytest.mark.parametrize("text, said", [
    ("iambic 4", "needs a rhyme scheme"),
    ("", "needs a rhyme scheme"),
    ("AABB iambik", "Unknown meter 'iambik'"),
    ("ABAB anapest 3", "Unknown meter 'anapest'"),
    ("AB1", "A scheme is letters"),
    ("ABAB 0", "Feet must be between 1 and 8 (got 0)"),
])
def test_bad_lines_say_what_is_wrong_in_one_line(text, said):
    with pytest.raises(StoryloomError, match=re.escape(said)) as caught:
        parse_custom(text)
    assert "\n" not in str(caught.value)

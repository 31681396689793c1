"""A read-ahead that fails is skipped for the player and written to the log with its traceback."""
from __future__ import annotations

import logging

from storyloom.modes import tree
from tests.tui.test_tree_app import ROOT_ACTIONS, new_tree, options
from tests.tui.pilot_helpers import settle


async def test_a_failed_read_ahead_is_logged_and_play_goes_on(make_app, fake, monkeypatch, caplog):
    real_expand = tree.expand

    def expand(generator, tree, path, *, actions, **kwargs):
        if actions == 0:  # only the read-ahead asks for an outcome alone
            raise RuntimeError("the model ran out of memory")
        return real_expand(generator, tree, path, actions=actions, **kwargs)

    monkeypatch.setattr(tree, "expand", expand)  # what expand_many calls
    fake.push(*ROOT_ACTIONS)
    app = make_app()
    with caplog.at_level(logging.INFO, logger="storyloom"):
        async with app.run_test(size=(100, 36)) as pilot:
            await new_tree(app, pilot, pregenerate=True)
            await settle(app, pilot)
            assert sum("new: the model writes it" in o for o in options(app)) == 5  # nothing written ahead
    failed = [r for r in caplog.records if r.name == "storyloom.tui.screens.tree_play"]
    assert len(failed) == 3 and all(r.levelno == logging.WARNING and r.exc_info for r in failed)
    assert "reading ahead from node" in failed[0].getMessage()
    assert "the model ran out of memory" in caplog.text

"""StoryLoom: creative writing with a local language model, in the terminal."""

from storyloom.engine.threads import prepare_runtime as _prepare_runtime

__version__ = "0.1.0"

_prepare_runtime()  # OpenMP's wait policy, read once when torch first loads it


class StoryloomError(Exception):
    """An error with a message meant for the user (shown as is, no traceback)."""

"""StoryLoom: creative writing with a local language model, in the terminal."""

__version__ = "0.1.0"


class StoryloomError(Exception):
    """An error with a message meant for the user (shown as is, no traceback)."""

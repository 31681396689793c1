"""The log file: storyloom.log in the data folder (beside the database), rotated at 1 MB with
three old files kept.

Modules log with logging.getLogger(__name__), so every record is under "storyloom". Failures the
app recovers from (a damaged pack cache, a read-ahead that failed, an error shown to the player)
are written here with their traceback, so a report can say what happened. Nothing goes to the
terminal: the TUI owns it, and the CLI prints its own one-line messages. `storyloom` (cli.main)
calls setup(); the STORYLOOM_LOG variable sets the level (debug, info, warning; info if unset).
"""
from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

from storyloom.paths import home, private_file

MAX_BYTES = 1_000_000
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"


class _PrivateRotatingFile(RotatingFileHandler):
    """Like every data file, the log and each file it rotates into are the user's alone (0600)."""

    def _open(self):
        private_file(Path(self.baseFilename))
        return super()._open()


def log_file() -> Path:
    return home() / "storyloom.log"


def setup() -> Path | None:
    """Send "storyloom" records to the rotating file; None when it cannot be opened (a read-only
    data folder must not stop the app). Calling it again moves the log if the home moved."""
    logger = logging.getLogger("storyloom")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())  # without a file, nothing reaches the terminal either
    level = os.environ.get("STORYLOOM_LOG", "info").upper()
    logger.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    try:
        path = log_file()
    except OSError:
        return None
    for old in [h for h in logger.handlers if isinstance(h, RotatingFileHandler)]:
        if Path(old.baseFilename) == path.resolve():
            return path
        logger.removeHandler(old)
        old.close()
    try:
        handler = _PrivateRotatingFile(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    return path

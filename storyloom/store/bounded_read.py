"""Reading a file a player names (an import) without trusting it: one regular file, at most a
limit of bytes. Each importer words its own refusals (its error type, what to import instead)."""
from __future__ import annotations

import os
import stat
from pathlib import Path


def read_bounded(path: Path, limit: int, error: type[Exception], shown: str, hint: str, allowed: str) -> bytes:
    """A regular file's bytes, refused with `error` before reading when it is not one or is over
    `limit` bytes. `shown` names the file in messages, `hint` says what to import instead, and
    `allowed` words the limit ("the limit is 50 MB").

    O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the open
    descriptor (no race with a swapped path); the read stops at limit + 1 bytes whatever
    the size said (a growing file, /proc).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"Cannot read {shown}: {exc.strerror or exc}.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise error(f"{shown} is {kind}; {hint}")
        if st.st_size > limit:
            raise error(f"The file is {st.st_size / 1e6:.1f} MB; {allowed}.")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise error(f"Cannot read {shown}: {exc.strerror or exc}.") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"The file is over the {limit / 1e6:.0f} MB limit.")
    return data

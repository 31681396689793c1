"""Where StoryLoom keeps the user's things.

STORYLOOM_HOME overrides everything. Otherwise a source checkout keeps its data in its own
saved/ folder (the project layout), and an installed package uses the platform's user data
directory. Models live under home/models unless STORYLOOM_MODELS says otherwise, so tests can
give every test a fresh home and still share one converted model.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

_CHECKOUT_SAVED = Path(__file__).resolve().parent.parent / "saved"


def home() -> Path:
    env = os.environ.get("STORYLOOM_HOME")
    if env:
        path = Path(env).expanduser()
    elif _CHECKOUT_SAVED.is_dir():
        path = _CHECKOUT_SAVED
    else:
        from platformdirs import user_data_dir

        path = Path(user_data_dir("storyloom"))
    return private_dir(path)


def models_dir() -> Path:
    env = os.environ.get("STORYLOOM_MODELS")
    path = Path(env).expanduser() if env else home() / "models"
    return private_dir(path)


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) readable by the user only; existing folders are left
    as they are, except that a folder we create never inherits a permissive umask."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is cut by the umask, never widened; be exact
    return path


def private_file(path: Path) -> None:
    """Make sure `path` exists as a file only its owner can read (0600): created so, or tightened
    when it is ours and readable by others. SQLite gives -wal and -shm the database's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, force: bool = False, mode: int = 0o600) -> None:
    """Write `data` to `path` whole or not at all: a private temp file in the same folder, synced,
    then renamed over. Without `force` an existing file is kept (FileExistsError). A full disk
    leaves the old file as it was; the temp file is ours alone (mkstemp) and removed on failure."""
    import tempfile

    if not force and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "exists", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if someone created it meanwhile: nothing is overwritten
            except FileExistsError:
                raise
            except OSError:  # no hard links here (FAT, some network shares)
                if os.path.lexists(path):
                    raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def config_file() -> Path:
    return home() / "config.toml"


def database_file() -> Path:
    return home() / "storyloom.db"


def assets_dir() -> Path:
    """Scenarios, poem forms, the word list: STORYLOOM_ASSETS, else the copy an installed
    package carries (the wheel ships the checkout's assets/ as storyloom/assets), else the
    checkout's own assets/, the source of truth."""
    from importlib.resources import files

    env = os.environ.get("STORYLOOM_ASSETS")
    if env:
        return Path(env).expanduser()
    packaged = files("storyloom") / "assets"  # a real folder: pip and pipx install unzipped
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "assets"

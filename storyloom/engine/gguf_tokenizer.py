"""The tokenizer of a .gguf file, from its metadata.

transformers builds a fast tokenizer from the GGUF's tokenizer.ggml.* arrays (seconds for a
large vocabulary); we save it once (tokenizer.json and friends) in the file's cache folder and
load that on later runs (a fraction of a second). The saved copy is used only when the folder is
the user's own and not writable by others, its files' sha256 are those recorded when it was
saved (a truncated or edited copy fails), and it has exactly the file's token count; anything
else is rebuilt from the file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from storyloom.engine.gguf_file import Header, cache_dir, trusted_cache

log = logging.getLogger(__name__)
TOKENIZER_FORMAT = 2
MARKER = "storyloom.json"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _cached(folder: Path, tokens: int):
    if not (folder / MARKER).is_file():
        return None
    names = [MARKER] + sorted(p.name for p in folder.iterdir())
    if not trusted_cache(folder, *names):
        return None
    try:
        marker = json.loads((folder / MARKER).read_text())
        if marker.get("format") != TOKENIZER_FORMAT or marker.get("tokens") != tokens:
            return None
        if marker.get("files") != _hashes(folder):
            log.warning("tokenizer cache %s is not what was saved there; rebuilding", folder)
            return None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - any damage means the same: build it again
        log.info("tokenizer cache %s unusable (%s: %s); rebuilding", folder, type(exc).__name__, exc)
        return None
    if len(tokenizer) != tokens:
        log.warning("tokenizer cache %s has %d tokens, the file %d; rebuilding", folder, len(tokenizer), tokens)
        return None
    return tokenizer


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.name != MARKER and p.is_file()}


def token_count(header: Header) -> int:
    """How many tokens the file's vocabulary has (counted when the header was parsed)."""
    count = header.get("storyloom.token_count")
    return count if isinstance(count, int) and count > 0 else 0


def load(path: Path, header: Header):
    """A transformers tokenizer for the GGUF at `path` (built once, then read from the cache)."""
    _quiet_transformers()
    folder = cache_dir(path) / "tokenizer"
    tokens = token_count(header)
    tokenizer = _cached(folder, tokens) if tokens else None
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, **kwargs: iterable  # our own progress, not its bar
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
    tokens = tokens or len(tokenizer)
    try:
        from storyloom.paths import private_dir

        private_dir(folder.parent)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".tokenizer-") as tmp:
            out = Path(tmp) / "tokenizer"
            tokenizer.save_pretrained(out)
            (out / MARKER).write_text(json.dumps({"format": TOKENIZER_FORMAT, "tokens": tokens,
                                                  "files": _hashes(out)}))
            for p in out.iterdir():
                p.chmod(0o600)
            out.chmod(0o700)
            if folder.exists():
                shutil.rmtree(folder)
            out.rename(folder)
    except OSError as exc:  # an optimisation: the next load builds it again
        log.warning("could not cache the tokenizer in %s (%s)", folder, exc)
    return tokenizer

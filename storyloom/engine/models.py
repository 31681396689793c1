"""Turn a model spec into a Generator.

A spec is one of:
  "default"            the embedded SmolLM2-135M-Instruct (fetched and converted once)
  a folder             a transformers checkpoint on disk (config.json + weights)
  a .gguf file         llama/mistral/qwen2/qwen3: run from the file's own blocks by the native step
                       (gguf_native.py); anything else converted once to safetensors and loaded
                       with transformers (`storyloom model info` says which, and why)
  a Hugging Face id    "org/name": loaded from the local Hugging Face cache; downloaded only when
                       the hub is reachable and HF_HUB_OFFLINE is not set
  openai:URL[#name]    an OpenAI-compatible completions server (a plain http(s) URL works too);
                       served by backends/openai_compat.py through the registry (backends/__init__.py)
"""
from __future__ import annotations

import gc
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from storyloom import StoryloomError
from storyloom.engine import backends, default_model
from storyloom.engine.default_model import Progress, _quiet
from storyloom.engine.generate import Generator
from storyloom.paths import models_dir

Kind = Literal["default", "folder", "gguf", "hub", "remote", "scripted"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(StoryloomError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    kind: Kind
    value: str

    @property
    def display(self) -> str:
        if self.kind == "remote":
            from storyloom.engine.backends.openai_compat import redact

            return redact(self.value)
        return default_model.MODEL_NAME if self.kind == "default" else self.value


def parse_spec(spec: str) -> ModelSpec:
    spec = (spec or "").strip()
    if spec in ("", "default"):
        return ModelSpec("default", "default")
    backend = backends.backend_for(spec)
    if backend is not None and backend.name == "openai":
        from storyloom.engine.backends.openai_compat import parse_remote

        parse_remote(spec)  # a malformed address is refused here, before anything connects
        return ModelSpec("remote", spec)
    if backend is not None and backend.name == "scripted":
        return ModelSpec("scripted", spec)
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"No GGUF file at {path}.")
        return ModelSpec("gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a folder but not a model: it has no config.json.")
        return ModelSpec("folder", str(path.resolve()))
    if path.exists():
        raise ModelError(f"{path} is neither a model folder nor a .gguf file.")
    if _HUB_ID.match(spec):
        return ModelSpec("hub", spec)
    raise ModelError(
        f"Unknown model {spec!r}: use 'default', a model folder, a .gguf file, a Hugging Face "
        "id such as 'HuggingFaceTB/SmolLM2-360M-Instruct', or a server as 'openai:http://host:port/v1'."
    )


def load(spec: str | ModelSpec = "default", progress: Progress = _quiet) -> Generator:
    """Load a Generator for `spec`; any failure is a ModelError with a readable message."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    backend = backends.backend_for(parsed.value)
    assert backend is not None  # the local backend claims whatever the others do not
    return backend.load(parsed.value, progress)


def _load_local(spec: str, progress: Progress) -> Generator:
    parsed = parse_spec(spec)
    if parsed.kind == "default":
        folder = default_model.ensure(progress)
        generator = _from_folder(folder, default_model.MODEL_NAME, progress)
    elif parsed.kind == "folder":
        generator = _from_folder(Path(parsed.value), Path(parsed.value).name, progress)
    elif parsed.kind == "gguf":
        generator = _from_gguf(Path(parsed.value), progress)
    else:
        generator = _from_hub(parsed.value, progress)
    # The model and the libraries live as long as the process: move them out of the garbage
    # collector's sight, so its full passes stop rescanning them (a few ms, in the middle of a
    # prompt or a token, now and then).
    gc.freeze()
    return generator


backends.register(backends.Backend(
    "local", "this computer: the default model, a transformers folder, a .gguf file or a Hugging Face id",
    lambda spec: True, _load_local))


def _from_folder(folder: Path, name: str, progress: Progress, **kwargs) -> Generator:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # we show our own progress
    hf_logging.set_verbosity_error()

    from storyloom.engine.backends.transformers_backend import TransformersGenerator

    progress(f"Loading {name}", None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        config = AutoConfig.from_pretrained(folder, **kwargs)
        _check_shapes(config, tokenizer, name)
        model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype="auto", **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        if isinstance(exc, ModelError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"Could not load model {name!r}: {first[:200]}") from exc
    if model.dtype == torch.float16:  # fp16 matmuls are slow or missing on CPU
        model = model.float()
    return TransformersGenerator(model, tokenizer, name=name, location=str(folder))


def _check_shapes(config, tokenizer, name: str) -> None:
    """Files that do not fit together fail here with a sentence, not deep inside a forward."""
    vocab = getattr(config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        raise ModelError(f"Model {name!r} does not fit its tokenizer: the tokenizer has {len(tokenizer)} "
                         f"tokens but the model only {vocab} (the files come from different models).")
    heads = getattr(config, "num_attention_heads", None)
    kv = getattr(config, "num_key_value_heads", None)
    if heads and kv and (kv <= 0 or heads % kv):
        raise ModelError(f"Model {name!r} is malformed: {heads} attention heads cannot share "
                         f"{kv} key/value heads (the number must divide it).")
    hidden = getattr(config, "hidden_size", None)
    if heads and hidden and hidden % heads and not getattr(config, "head_dim", None):
        raise ModelError(f"Model {name!r} is malformed: a width of {hidden} does not split into {heads} heads.")


def _from_hub(model_id: str, progress: Progress) -> Generator:
    try:
        return _from_folder(model_id, model_id, progress, local_files_only=True)  # type: ignore[arg-type]
    except ModelError:
        if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"):
            raise ModelError(
                f"{model_id!r} is not in the local Hugging Face cache and offline mode is on."
            ) from None
    try:
        return _from_folder(model_id, model_id, progress)  # type: ignore[arg-type]
    except ModelError as exc:
        raise ModelError(
            f"{exc} (it is not in the local Hugging Face cache and could not be downloaded)"
        ) from None


def _from_gguf(path: Path, progress: Progress) -> Generator:
    """A supported architecture runs from the file's own blocks (native step, memory-mapped);
    anything else, or no native step, is converted once to safetensors for transformers."""
    from storyloom.engine import gguf_file, gguf_native
    from storyloom.engine.backends.transformers_backend import engine_choice

    way, why = gguf_native.route(path, engine_choice())
    if way == "native":
        progress(f"Loading {path.name}", None)
        header = gguf_file.read(path)
        plan = gguf_file.plan(header)
        assert not isinstance(plan, str)  # route() said it runs
        try:
            return gguf_native.load(path, header, plan, path.name, gguf_native.native_gguf(), {"path": why})
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"Could not load {path.name}: {exc}") from exc
    generator = _from_folder(_converted_gguf(path, progress), path.name, progress)
    generator.info.extra["path"] = why
    return generator


def gguf_cache_folder(gguf: Path) -> Path:
    """Where a GGUF file's safetensors conversion is kept (a new path, size or time: a new one)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return models_dir() / "gguf" / f"{gguf.stem}-{key}"


def _converted_gguf(gguf: Path, progress: Progress) -> Path:
    target = gguf_cache_folder(gguf)
    if (target / "config.json").is_file():
        return target
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"Converting {gguf.name} to safetensors (once)", None)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as tmp:
        out = Path(tmp) / "model"
        try:
            default_model.convert_gguf(gguf, out)
        except Exception as exc:  # noqa: BLE001 - gguf/transformers raise many kinds
            raise ModelError(f"Could not read {gguf.name} as a GGUF model: {exc}") from exc
        try:
            os.replace(out, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another StoryLoom converted the same file meanwhile: its folder is as good as ours
    return target

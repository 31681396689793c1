"""The backend registry: which engine runs a model spec.

Each backend registers once (as simonw/llm's model plugins do): a name, a one-line description,
`claims(spec)` saying whether a spec string is its own, and `load(spec, progress)` returning a
Generator. What a backend can do is on the Generator it returns (`capabilities`, `stop_strings`),
so modes ask for abilities and never test which backend they got. Backends are imported only
when chosen: the local one pulls in torch, the remote one an HTTP client.

Registered here:
  local    "default", a transformers folder, a .gguf file, a Hugging Face id (transformers_backend)
  openai   "openai:http://host:port/v1[#model]" or a plain http(s) URL: an OpenAI-compatible
           completions server (llama.cpp's llama-server, llama-cpp-python, vLLM, Ollama, hosted)
  scripted "scripted": replays queued outputs (tests and demos)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from storyloom.engine.generate import Generator

Progress = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    claims: Callable[[str], bool]
    load: Callable[[str, Progress], "Generator"]


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add a backend; the latest registration of a name wins (tests may swap one in)."""
    _REGISTRY[backend.name] = backend
    return backend


def backends() -> list[Backend]:
    return list(_REGISTRY.values())


def backend_for(spec: str) -> Backend | None:
    """The first registered backend (in registration order) that claims `spec`."""
    for backend in _REGISTRY.values():
        if backend.claims(spec):
            return backend
    return None


def _is_remote(spec: str) -> bool:
    return spec.startswith(("openai:", "http://", "https://"))


def _load_remote(spec: str, progress: Progress) -> "Generator":
    from storyloom.engine.backends.openai_compat import connect

    return connect(spec, progress)


def _load_scripted(spec: str, progress: Progress) -> "Generator":
    from storyloom.engine.backends.scripted import ScriptedGenerator

    return ScriptedGenerator()


register(Backend("openai", "an OpenAI-compatible completions server (llama-server, vLLM, Ollama, hosted)",
                 _is_remote, _load_remote))
register(Backend("scripted", "replays queued outputs (tests and demos)", lambda s: s == "scripted",
                 _load_scripted))
# The local backend claims everything else; models.py resolves its spec kinds (default, folder,
# .gguf, hub id) and registers it last so the others are asked first.

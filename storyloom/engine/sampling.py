"""Sampler settings: one frozen, validated dataclass (no torch here: the UI imports it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from storyloom import StoryloomError


class SettingsError(StoryloomError, ValueError):
    """A sampler setting is out of range; the message names the field."""


@dataclass(frozen=True)
class SamplerSettings:
    """How to pick each next token. temperature 0 means greedy (deterministic)."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50  # 0 = off
    typical_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.1  # 1 = off
    repetition_range: int = 256  # how many recent tokens the penalty looks at; 0 = all
    max_new_tokens: int = 80
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> SettingsError:
            return SettingsError(f"{name} {why} (got {getattr(self, name)!r})")

        for name in ("temperature", "top_p", "typical_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, "must be a number")
        for name in ("top_k", "repetition_range", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(name, "must be a whole number")
        if not 0 <= self.temperature <= 5:
            raise bad("temperature", "must be between 0 and 5")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be above 0 and at most 1")
        if not 0 < self.typical_p <= 1:
            raise bad("typical_p", "must be above 0 and at most 1")
        if self.top_k < 0:
            raise bad("top_k", "must be 0 (off) or more")
        if not 1 <= self.repetition_penalty <= 3:
            raise bad("repetition_penalty", "must be between 1 (off) and 3")
        if self.repetition_range < 0:
            raise bad("repetition_range", "must be 0 (all tokens) or more")
        if not 1 <= self.max_new_tokens <= 8192:
            raise bad("max_new_tokens", "must be between 1 and 8192")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "must be a list of non-empty strings")
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise bad("seed", "must be a whole number or empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **changes: Any) -> "SamplerSettings":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplerSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"unknown sampler setting(s): {', '.join(unknown)}")
        data = dict(data)
        if "stop" in data:
            data["stop"] = tuple(data["stop"])
        return cls(**data)

"""Sampler settings: one frozen, validated dataclass (no torch here: the UI imports it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from storyloom import StoryloomError
from storyloom.engine import biasing


# SillyTavern's and text-generation-webui's default DRY breakers: newline, colon, quote, asterisk.
DRY_BREAKERS = ("\n", ":", '"', "*")
TEXT_LISTS = ("stop", "dry_sequence_breakers", "banned")


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
    # min-p: drop tokens less likely than min_p times the likeliest one (0 = off)
    min_p: float = 0.0
    # DRY (koboldcpp / text-generation-webui): a token that would extend a repeat of an earlier
    # sequence longer than dry_allowed_length loses dry_multiplier * dry_base ** (length - allowed)
    # from its logit; repeats stop at a token whose text holds a sequence breaker.
    dry_multiplier: float = 0.0  # 0 = off
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_range: int = 0  # how many recent tokens DRY looks at; 0 = all
    dry_sequence_breakers: tuple[str, ...] = DRY_BREAKERS
    # XTC (exclude top choices): with xtc_probability, every token at or above xtc_threshold
    # except the least likely of them is removed (only when two or more are above it).
    xtc_threshold: float = 0.1
    xtc_probability: float = 0.0  # 0 = off
    # Words and phrases that must never appear in the output (any case, whole words); when one
    # forms across tokens, generation backs up to where it began and picks another token there.
    banned: tuple[str, ...] = ()
    # Phrases to raise, with a bias in logits (engine/biasing.py): the first token of each and,
    # once one has begun, the tokens that go on with it, until it is written. Set per turn by
    # the modes (triggered world info's names), not a setting the player edits.
    phrase_bias: tuple[tuple[str, float], ...] = ()
    # The end of text is not drawn before this many tokens: set per turn by the modes (a prompt
    # that ends on a whole paragraph makes a small model stop at once), not a player's setting.
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> SettingsError:
            return SettingsError(f"{name} {why} (got {getattr(self, name)!r})")

        for name in ("temperature", "top_p", "typical_p", "repetition_penalty", "min_p", "dry_multiplier",
                     "dry_base", "xtc_threshold", "xtc_probability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, "must be a number")
        for name in ("top_k", "repetition_range", "max_new_tokens", "dry_allowed_length", "dry_range",
                     "min_new_tokens"):
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
        if not 0 <= self.min_new_tokens <= 8192:
            raise bad("min_new_tokens", "must be between 0 (off) and 8192")
        if not 0 <= self.min_p < 1:
            raise bad("min_p", "must be 0 (off) or more, and below 1")
        if not 0 <= self.dry_multiplier <= 5:
            raise bad("dry_multiplier", "must be between 0 (off) and 5")
        if not 1 < self.dry_base <= 4:
            raise bad("dry_base", "must be above 1 and at most 4")
        if not 1 <= self.dry_allowed_length <= 50:
            raise bad("dry_allowed_length", "must be between 1 and 50")
        if self.dry_range < 0:
            raise bad("dry_range", "must be 0 (all tokens) or more")
        if not 0 < self.xtc_threshold <= 0.5:
            raise bad("xtc_threshold", "must be above 0 and at most 0.5 (above it, two tokens can never both pass)")
        if not 0 <= self.xtc_probability <= 1:
            raise bad("xtc_probability", "must be between 0 (off) and 1")
        for name in TEXT_LISTS:
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) \
                    or not all(isinstance(s, str) and s for s in value):
                raise bad(name, "must be a list of non-empty strings")
            object.__setattr__(self, name, tuple(value))
        if any(not b.strip() for b in self.banned):
            raise bad("banned", "must not hold a phrase of spaces only")
        if len(self.banned) > 200 or any(len(b) > 100 for b in self.banned):
            raise bad("banned", "takes at most 200 phrases of at most 100 characters")
        try:
            object.__setattr__(self, "phrase_bias", biasing.check(self.phrase_bias))
        except ValueError as exc:
            raise bad("phrase_bias", str(exc)) from None
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise bad("seed", "must be a whole number or empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **changes: Any) -> "SamplerSettings":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in TEXT_LISTS:
            data[name] = list(getattr(self, name))
        data["phrase_bias"] = [list(pair) for pair in self.phrase_bias]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplerSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"unknown sampler setting(s): {', '.join(unknown)}")
        data = dict(data)
        for name in TEXT_LISTS:
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        return cls(**data)

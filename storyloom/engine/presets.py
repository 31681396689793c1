"""Named sampler presets: a few built in (assets/presets.toml), the player's own saved in
config.toml. No torch or textual here.

A preset is how tokens are chosen; applying one resets those fields to the preset (defaults for
what it leaves out) and keeps the player's output length, stop strings, seed and banned phrases.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from storyloom.engine.sampling import SamplerSettings, SettingsError
from storyloom.paths import assets_dir

KEPT = ("max_new_tokens", "stop", "seed", "banned", "phrase_bias", "min_new_tokens")  # the player's own (or per turn), never a preset's
FIELDS = tuple(f.name for f in fields(SamplerSettings) if f.name not in KEPT)
NAME_LIMIT = 40


@dataclass(frozen=True)
class Preset:
    name: str
    values: dict[str, Any]
    description: str = ""
    builtin: bool = False


def check_values(values: dict[str, Any], where: str) -> dict[str, Any]:
    """The preset's fields, validated as sampler settings; SettingsError names what is wrong."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise SettingsError(f"{where}: {', '.join(unknown)} cannot be part of a preset "
                            f"(a preset sets {', '.join(FIELDS[:4])}, ...)")
    try:
        apply(SamplerSettings(), values)
    except (SettingsError, TypeError) as exc:
        raise SettingsError(f"{where}: {exc}") from None
    return dict(values)


def apply(settings: SamplerSettings, values: dict[str, Any]) -> SamplerSettings:
    defaults = SamplerSettings()
    changes = {name: getattr(defaults, name) for name in FIELDS}
    changes.update({k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return SamplerSettings.from_dict({**settings.to_dict(), **changes})


def capture(settings: SamplerSettings) -> dict[str, Any]:
    """What a saved preset stores: every choosing field, so it reads the same after an upgrade."""
    data = settings.to_dict()
    return {name: data[name] for name in FIELDS}


@lru_cache(maxsize=1)
def builtin() -> tuple[Preset, ...]:
    data = tomllib.loads((assets_dir() / "presets.toml").read_text(encoding="utf-8"))
    out = []
    for entry in data.get("preset", []):
        entry = dict(entry)
        name, description = entry.pop("name"), entry.pop("description", "")
        out.append(Preset(name, check_values(entry, f"built-in preset {name!r}"), description, True))
    return tuple(out)


def check_name(name: str, saved: dict[str, dict]) -> str:
    name = " ".join(name.split())
    if not name:
        raise SettingsError("A preset needs a name.")
    if len(name) > NAME_LIMIT:
        raise SettingsError(f"A preset name is at most {NAME_LIMIT} characters.")
    if any(p.name.lower() == name.lower() for p in builtin()):
        raise SettingsError(f"{name!r} is a built-in preset; choose another name.")
    return name


def all_presets(saved: dict[str, dict]) -> list[Preset]:
    """Built-in presets first, then the player's (alphabetical)."""
    return [*builtin(), *(Preset(n, v) for n, v in sorted(saved.items(), key=lambda kv: kv[0].lower()))]


def find(name: str, saved: dict[str, dict]) -> Preset:
    for preset in all_presets(saved):
        if preset.name.lower() == name.strip().lower():
            return preset
    raise SettingsError(f"No preset named {name!r}.")

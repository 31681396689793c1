"""User settings, kept in config.toml in the StoryLoom home folder."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings, SettingsError
from storyloom.paths import config_file


class ConfigError(StoryloomError):
    pass


@dataclass(frozen=True)
class Config:
    model: str = "default"
    player: str = "player"  # your name on story-tree votes and bookmarks
    sampler: SamplerSettings = field(default_factory=SamplerSettings)

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)


def load_config(path: Path | None = None) -> Config:
    path = path or config_file()
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        sampler = SamplerSettings.from_dict(data.get("sampler", {}))
    except (tomllib.TOMLDecodeError, SettingsError, TypeError) as exc:
        raise ConfigError(f"Settings file {path} is not valid: {exc}") from exc
    return Config(model=str(data.get("model", "default")), player=str(data.get("player", "player")) or "player",
                  sampler=sampler)


def save_config(config: Config, path: Path | None = None) -> None:
    path = path or config_file()
    sampler = {k: v for k, v in config.sampler.to_dict().items() if v is not None}
    text = tomli_w.dumps({"model": config.model, "player": config.player, "sampler": sampler})
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # never leave a half-written settings file

"""User settings, kept in config.toml in the StoryLoom home folder."""
from __future__ import annotations

import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w

from storyloom import StoryloomError
from storyloom.engine.sampling import SamplerSettings, SettingsError
from storyloom.paths import atomic_write, config_file


class ConfigError(StoryloomError):
    pass


LORE_BIAS = 3.0  # modes/worldinfo.py's DEFAULT_BIAS (measured with `bench quality --modes world_info`)
MAX_LORE_BIAS = 10.0


@dataclass(frozen=True)
class Config:
    model: str = "default"
    player: str = "player"  # your name on story-tree votes and bookmarks
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    word_filter: bool = True  # profanity kept out of every mode's text (modes/wordfilter.py)
    presets: dict[str, dict] = field(default_factory=dict)  # the player's named sampler presets
    # Phrase bias (logits) on the names of triggered world info where an entry sets none; 0: off
    lore_bias: float = LORE_BIAS

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)


MAX_CONFIG_BYTES = 1024 * 1024


def load_config(path: Path | None = None) -> Config:
    """The saved settings; ConfigError (one sentence) when the file cannot be used as it is."""
    path = path or config_file()
    try:
        st = path.stat()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"Settings file {path} cannot be read ({exc.strerror or exc}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"Settings file {path} is not a regular file (a folder?); move it aside.")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"Settings file {path} is {st.st_size:,} bytes; a settings file is a few lines.")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"Settings file {path} cannot be read ({exc.strerror or exc}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Settings file {path} is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Settings file {path} is not valid TOML: {exc}") from None
    for key in ("model", "player"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"Settings file {path}: {key} must be a string, like {key} = \"{getattr(Config, key)}\".")
    if not isinstance(data.get("word_filter", True), bool):
        raise ConfigError(f"Settings file {path}: word_filter must be true or false, like word_filter = true.")
    lore_bias = data.get("lore_bias", LORE_BIAS)
    if isinstance(lore_bias, bool) or not isinstance(lore_bias, (int, float)) \
            or not -MAX_LORE_BIAS <= lore_bias <= MAX_LORE_BIAS:
        raise ConfigError(f"Settings file {path}: lore_bias must be a number from -{MAX_LORE_BIAS:g} to "
                          f"{MAX_LORE_BIAS:g} (0 = off), like lore_bias = {LORE_BIAS}.")
    if not isinstance(data.get("sampler", {}), dict):
        raise ConfigError(f"Settings file {path}: sampler must be a table ([sampler] with temperature = 0.8 ...).")
    try:
        sampler = SamplerSettings.from_dict(data.get("sampler", {}))
    except (SettingsError, TypeError, ValueError) as exc:
        raise ConfigError(f"Settings file {path} is not valid: {exc}") from None
    presets = data.get("presets", {})
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ConfigError(f"Settings file {path}: presets must be tables ([presets.\"Name\"] with min_p = 0.05 ...).")
    from storyloom.engine.presets import check_values

    try:
        presets = {str(name): check_values(values, f"preset {name!r}") for name, values in presets.items()}
    except SettingsError as exc:
        raise ConfigError(f"Settings file {path} is not valid: {exc}") from None
    return Config(model=data.get("model", "default") or "default", player=data.get("player", "player") or "player",
                  sampler=sampler, word_filter=data.get("word_filter", True), presets=presets,
                  lore_bias=float(lore_bias))


def load_or_default(path: Path | None = None) -> tuple[Config, str | None]:
    """The settings, or the defaults and the sentence saying why (the file is left as it is)."""
    try:
        return load_config(path), None
    except ConfigError as exc:
        return Config(), f"{exc} Using default settings."


def save_config(config: Config, path: Path | None = None) -> None:
    path = path or config_file()
    sampler = {k: v for k, v in config.sampler.to_dict().items() if v is not None}
    data = {"model": config.model, "player": config.player, "word_filter": config.word_filter,
            "lore_bias": config.lore_bias, "sampler": sampler}
    if config.presets:
        data["presets"] = {name: {k: v for k, v in values.items() if v is not None}
                           for name, values in config.presets.items()}
    text = tomli_w.dumps(data)
    try:
        atomic_write(path, text.encode("utf-8"), force=True)  # never a half-written settings file
    except OSError as exc:
        raise ConfigError(f"Settings could not be saved to {path}: {exc.strerror or exc}.") from None

"""Where StoryLoom keeps the user's things.

STORYLOOM_HOME overrides everything. Otherwise a source checkout keeps its data in its own
saved/ folder (the project layout), and an installed package uses the platform's user data
directory. Models live under home/models unless STORYLOOM_MODELS says otherwise, so tests can
give every test a fresh home and still share one converted model.
"""
from __future__ import annotations

import os
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
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    env = os.environ.get("STORYLOOM_MODELS")
    path = Path(env).expanduser() if env else home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_file() -> Path:
    return home() / "config.toml"


def database_file() -> Path:
    return home() / "storyloom.db"


def assets_dir() -> Path:
    env = os.environ.get("STORYLOOM_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "assets"

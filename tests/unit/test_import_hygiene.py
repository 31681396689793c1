"""engine/, modes/ and store/ never import textual; store/ never imports torch."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest


def _modules(package: str) -> list[str]:
    pkg = __import__(f"storyloom.{package}", fromlist=["_"])
    return [f"storyloom.{package}"] + [
        m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"storyloom.{package}.")
    ]


def _imported_after(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("package", ["engine", "modes", "store"])
def test_core_never_imports_textual(package):
    loaded = _imported_after(_modules(package))
    assert not any(m == "textual" or m.startswith("textual.") for m in loaded)


def test_store_never_imports_torch():
    loaded = _imported_after(_modules("store"))
    assert "torch" not in loaded

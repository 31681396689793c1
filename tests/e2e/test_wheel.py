"""The wheel, installed as `pip install .` or `pipx install .` would, works away from the checkout.

The wheel is built from a copy of the sources (no build/ or egg-info in the checkout), with the
setuptools of the test environment (offline, --no-build-isolation), and installed with
--no-index --no-deps into a fresh venv. That venv sees, through a .pth file, only the packages
the wheel declares it needs (its Requires-Dist, followed transitively, symlinked from the test
environment): a dependency used but not declared fails here as it would for a user. Every
command runs from a folder outside the checkout, with a fresh home.
"""
from __future__ import annotations

import email
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ["pyproject.toml", "README.md", "storyloom", "assets"]
pytestmark = pytest.mark.real_model

HOME_SCREEN = textwrap.dedent("""
    import asyncio
    from storyloom.engine.backends.scripted import ScriptedGenerator
    from storyloom.tui.app import StoryloomApp

    async def main():
        app = StoryloomApp(generator_factory=lambda spec, progress: ScriptedGenerator(default="A door opens."))
        async with app.run_test(size=(100, 32)) as pilot:
            for _ in range(3):
                await pilot.pause()
                await app.workers.wait_for_complete()
            print("screen:", type(app.screen).__name__)
            menu = app.screen.query_one("#home-menu")
            print("menu:", [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)])
            await pilot.press("n")
            await pilot.pause()
            print("then:", type(app.screen).__name__)
            print("css:", app.css_path)

    asyncio.run(main())
""")


def _run(cmd, *, cwd, env, input=None, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, input=input, capture_output=True,
                          text=True, timeout=300)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _requires(text: str, extras: set[str]) -> list:
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in text]
    return [r for r in reqs if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras | {""})]


def _runtime_closure(wheel_requires: list[str]) -> list[metadata.Distribution]:
    """The installed distributions the wheel needs at run time: its requirements, transitively."""
    found: dict[str, metadata.Distribution] = {}
    todo = _requires(wheel_requires, set())
    while todo:
        req = todo.pop()
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req} is a run-time requirement but is not installed in the test environment")
        key = dist.metadata["Name"].lower()
        if key not in found:
            found[key] = dist
            todo += _requires(dist.requires or [], set(req.extras))
    return list(found.values())


def _dependency_view(dists: list[metadata.Distribution], view: Path) -> None:
    """A folder holding only these distributions' files (symlinks to the test environment's)."""
    view.mkdir()
    for dist in dists:
        if dist.files is None:
            pytest.fail(f"{dist.metadata['Name']} lists no files (no RECORD), cannot isolate it")
        for top in {f.parts[0] for f in dist.files if f.parts and f.parts[0] not in ("..", "__pycache__")}:
            target = Path(dist.locate_file(top))
            if target.exists() and not (view / top).exists():
                (view / top).symlink_to(target)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    if importlib.util.find_spec("setuptools") is None:
        reason = "cannot build the wheel: setuptools is not installed (it is in the test extra)"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STORYLOOM_ASSETS", "STORYLOOM_HOME")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", work / "dist", src], cwd=work, env=env)
    (wheel,) = (work / "dist").glob("storyloom-*.whl")

    target = work / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(target)
    bin_dir = target / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=work, env=env).stdout.strip())
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = email.message_from_bytes(zf.read(meta_name)).get_all("Requires-Dist") or []
    _dependency_view(_runtime_closure(requires), work / "deps")
    (purelib / "storyloom-test-deps.pth").write_text(str(work / "deps") + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
          "--no-cache-dir", wheel], cwd=work, env=env)

    outside = work / "elsewhere"
    outside.mkdir()
    env.update(STORYLOOM_HOME=str(work / "home"), HF_HUB_OFFLINE="1")
    return {"wheel": wheel, "bin": bin_dir, "python": python, "purelib": purelib, "cwd": outside,
            "env": env, "work": work}


def test_the_wheel_carries_every_source_and_asset(wheel_env):
    with zipfile.ZipFile(wheel_env["wheel"]) as zf:
        names = set(zf.namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "storyloom").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    expected |= {"storyloom/assets/" + p.relative_to(ROOT / "assets").as_posix()
                 for p in (ROOT / "assets").rglob("*") if p.is_file()}
    assert {"storyloom/assets/scenarios.toml", "storyloom/assets/poem_forms.toml", "storyloom/assets/word_zipf.txt",
            "storyloom/assets/trees/gull-rock.twee", "storyloom/engine/native/decode_step.c",
            "storyloom/tui/app.tcss"} <= expected  # a subfolder of assets/ (the starter trees) too
    assert sorted(expected - names) == []
    assert not any(n.startswith(("tests/", "assets/", "saved/")) for n in names)


def test_installed_package_runs_from_its_own_files(wheel_env):
    e = wheel_env
    out = _run([e["python"], "-c", textwrap.dedent("""
        import storyloom
        from storyloom.paths import assets_dir
        from storyloom.modes.adventure import load_scenarios
        from storyloom.modes.poetry.forms import load_forms
        from storyloom.modes.poetry.wordlist import zipf
        print(storyloom.__file__)
        print(assets_dir())
        print(len(load_scenarios()), sorted(load_forms()), zipf("love"))
    """)], cwd=e["cwd"], env=e["env"]).stdout.splitlines()
    package, assets, loaded = out
    assert Path(package).is_relative_to(e["purelib"]) and not Path(package).is_relative_to(ROOT)
    assert Path(assets) == e["purelib"] / "storyloom" / "assets"
    scenarios, forms, love = loaded.split(" ", 1)[0], loaded.split(" ", 1)[1].rsplit(" ", 1)[0], loaded.rsplit(" ", 1)[1]
    assert int(scenarios) >= 3 and "'sonnet'" in forms and "'limerick'" in forms and float(love) > 5


def test_test_only_packages_are_out_of_sight(wheel_env):
    e = wheel_env
    done = _run([e["python"], "-c", "import pytest"], cwd=e["cwd"], env=e["env"], check=False)
    assert done.returncode != 0 and "No module named 'pytest'" in done.stderr


def test_poem_then_scan_from_the_installed_command(wheel_env):
    from storyloom.engine import default_model

    if not default_model.is_ready():
        pytest.fail("The default model is not pulled: run `storyloom model pull` (tasks.py test does).")
    e = wheel_env
    storyloom = e["bin"] / "storyloom"
    # A haiku: the shortest form (a second on an idle machine), so the time cap is generous.
    poem = _run([storyloom, "poem", "--form", "haiku", "--topic", "the sea", "--seed", "1", "--time-cap", "30"],
                cwd=e["cwd"], env=e["env"], check=False)
    assert poem.returncode in (0, 1), poem.stderr  # 1: a line not completed in time, still a poem
    assert len(poem.stdout.splitlines()) == 3, poem.stdout + poem.stderr
    scan = _run([storyloom, "scan", "--form", "haiku", "-"], cwd=e["cwd"], env=e["env"], input=poem.stdout,
                check=False)
    assert "line" in scan.stdout.lower() and scan.returncode in (0, 1), scan.stdout + scan.stderr
    if poem.returncode == 0:
        assert scan.returncode == 0, scan.stdout
    info = _run([storyloom, "model", "info"], cwd=e["cwd"], env=e["env"]).stdout
    assert "SmolLM2-135M-Instruct" in info and "engine:" in info


def test_tree_list_keeps_its_data_in_the_user_data_folder(wheel_env):
    e = wheel_env
    env = {k: v for k, v in e["env"].items() if k != "STORYLOOM_HOME"}
    env["XDG_DATA_HOME"] = str(e["work"] / "xdg")  # where platformdirs puts a Linux user's data
    done = _run([e["bin"] / "storyloom", "tree", "list"], cwd=e["cwd"], env=env)
    # A fresh home has only the starter trees, read from the package's own assets/trees/
    assert [line.split("  ")[-1] for line in done.stdout.splitlines()] == ["The Midnight Market",
                                                                          "The Lighthouse on Gull Rock"]
    if sys.platform.startswith("linux"):
        data = e["work"] / "xdg" / "storyloom"
        assert (data / "storyloom.db").is_file() and (data / "storyloom.log").is_file()
    assert not (e["purelib"] / "saved").exists() and not list(e["cwd"].iterdir())


def test_home_screen_headless(wheel_env):
    e = wheel_env
    out = _run([e["python"], "-c", HOME_SCREEN], cwd=e["cwd"], env=e["env"]).stdout
    assert "screen: HomeScreen" in out and "then: NewGameScreen" in out, out
    assert "New adventure" in out, out
    assert str(e["purelib"] / "storyloom" / "tui") in out.split("css:")[1], out

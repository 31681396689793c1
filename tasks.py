#!/usr/bin/env python3
"""Set up StoryLoom in ./.venv and run it: `python3 tasks.py app` or `python3 tasks.py test`.

Needs only Python 3.11+. The virtual environment is (re)built when pyproject.toml or
constraints.txt change, so both commands are safe to run on a fresh clone at any time.
`python3 tasks.py lock [--upgrade]` rewrites constraints.txt (see lock()). `test` (and
`setup --tests`, as CI runs it before the lint) builds the test server's wheel in the background
while the rest is set up (minutes where pip's cache lacks it); `test` waits for it
(.venv/test-server-build.log says how it went).
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the test server builds in the foreground
    fcntl = None

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".storyloom-installed"
TORCH = "torch==2.13.0"
# The real OpenAI-compatible server the remote-engine tests run against. No wheel on PyPI: pip
# builds it from source once (a few minutes) and keeps the wheel in its cache.
TEST_SERVER = "llama-cpp-python[server]==0.3.36"
SERVER_STAMP = VENV / ".storyloom-test-server"


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt", "tasks.py"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def _pip(*args: str) -> None:
    cmd = [str(PY), "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def setup(for_tests: bool = False) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"StoryLoom needs Python 3.11 or newer; this is {platform.python_version()}.")
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    if not PY.exists():
        print(f"Creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if for_tests:  # the test server's compile (minutes without pip's cache) overlaps what follows
        start_test_server_build()
    # torch first and alone, so no other package can pull a multi-GB CUDA build.
    # STORYLOOM_TORCH_INDEX lets a machine without a local CPU wheel name the CPU index.
    torch_args = ["install", "-q", TORCH]
    if os.environ.get("STORYLOOM_TORCH_INDEX"):
        torch_args += ["--extra-index-url", os.environ["STORYLOOM_TORCH_INDEX"]]
    _pip(*torch_args)
    _pip("install", "-q", "-c", "constraints.txt", "-e", ".[test]")
    STAMP.write_text(_fingerprint())


def _server_cmake_args() -> str:
    """llama.cpp's build flags: its native build turns on AMX matmuls, which crash on some CPUs
    (this project's CI machine among them), so ask for the x86 levels the CPU reports instead."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return ""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ""
    args = ["-DGGML_NATIVE=OFF"]
    for flag, option in (("avx2", "AVX2"), ("fma", "FMA"), ("f16c", "F16C"), ("avx512f", "AVX512"),
                         ("avx512_vnni", "AVX512_VNNI"), ("avx512_bf16", "AVX512_BF16")):
        args.append(f"-DGGML_{option}={'ON' if flag in flags else 'OFF'}")
    return " ".join(args)


SERVER_WHEELS = VENV / "test-server-wheels"
SERVER_BUILD = VENV / ".storyloom-test-server-build"  # the background build's key, then its rc once ended
SERVER_LOCK = VENV / ".storyloom-test-server-build.lock"  # held by the build for its whole life
SERVER_LOG = VENV / "test-server-build.log"
# Holds the lock while the build runs and writes its state (key, then rc) atomically, so that a
# later `tasks.py test` (CI runs `tasks.py setup --tests`, the lint, then `tasks.py test`) can wait
# for it. A lock, not a pid: a killed build leaves nothing that looks alive (pids are reused).
_BUILD_WRAPPER = """\
import fcntl, os, subprocess, sys
from pathlib import Path
state, lock, key, cmd = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
held = open(lock, "w")
fcntl.flock(held, fcntl.LOCK_EX)
def say(text):
    Path(str(state) + ".tmp").write_text(text)
    os.replace(str(state) + ".tmp", state)
say(f"{key}\\n")
rc = subprocess.call(cmd)
say(f"{key}\\nrc={rc}\\n")
"""
BUILD_WAIT_S = 3600  # past this the wait gives up and the install builds in the foreground


def _server_key() -> str:
    return _fingerprint() + TEST_SERVER


def _server_settled() -> bool:
    """Is the test server installed for this key, or its failure to build recorded?"""
    return SERVER_STAMP.exists() and SERVER_STAMP.read_text().split("\n", 1)[0] == _server_key()


def _server_failed(tail: str) -> None:
    print(f"Could not build {TEST_SERVER} ({tail}); the remote-engine tests will be skipped.", flush=True)
    SERVER_STAMP.write_text(_server_key() + f"\nfailed: {tail}\n")


def _server_env() -> dict:
    env = dict(os.environ)
    if _server_cmake_args() and "CMAKE_ARGS" not in env:
        env["CMAKE_ARGS"] = _server_cmake_args()
    return env


def _build_rc() -> int | None:
    """The exit status of this key's background build, once it ended; else None."""
    try:
        key, *rest = SERVER_BUILD.read_text().splitlines()
    except (OSError, ValueError):
        return None
    fields = dict(line.split("=", 1) for line in rest if "=" in line)
    return int(fields["rc"]) if key == _server_key() and "rc" in fields else None


def _building() -> bool:
    """Is a background build running (it holds SERVER_LOCK)?"""
    if fcntl is None or not SERVER_LOCK.exists():
        return False
    with open(SERVER_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def start_test_server_build() -> None:
    """Start building the test server's wheel in the background, unless it is installed, being
    built, or built: `pip wheel` into .venv/test-server-wheels, which changes no environment (the
    build runs in an isolated one of its own), so it is safe beside the other pip installs.
    From source this is minutes of compiling; meanwhile torch, the other packages, the ARM tools
    and the model are set up. setup_test_server() waits for it and installs the wheel. A build
    that failed is tried again (setup_test_server forgets it)."""
    if fcntl is None:  # no flock here: setup_test_server builds in the foreground
        return
    if _server_settled():
        return
    if _building() or (_build_rc() == 0 and any(SERVER_WHEELS.glob("*.whl"))):
        return
    shutil.rmtree(SERVER_WHEELS, ignore_errors=True)
    SERVER_BUILD.unlink(missing_ok=True)
    cmd = [str(PY), "-m", "pip", "--disable-pip-version-check", "wheel", "-q", "--no-deps", "-c",
           "constraints.txt", "-w", str(SERVER_WHEELS), TEST_SERVER]
    print("+", " ".join(cmd[2:]), "(in the background; built from source once, later runs reuse pip's cache)",
          flush=True)
    with open(SERVER_LOG, "w") as log:
        subprocess.Popen([str(PY), "-c", _BUILD_WRAPPER, str(SERVER_BUILD), str(SERVER_LOCK), _server_key(), *cmd],
                         cwd=ROOT, env=_server_env(), stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 10  # the wrapper takes the lock and writes its key at once
    while not SERVER_BUILD.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _wait_for_server_build() -> int | None:
    """The background build's exit status, once it ends; None if there is none, it died, or
    it ran past BUILD_WAIT_S."""
    said = False
    started = time.monotonic()
    while _building():
        if time.monotonic() - started > BUILD_WAIT_S:
            print(f"The test server's build ran past {BUILD_WAIT_S} s; building it here instead", flush=True)
            return None
        if not said:
            print("Waiting for the test server's build to finish", flush=True)
            said = True
        time.sleep(1)
    if said:
        print(f"  (waited {time.monotonic() - started:.0f} s)", flush=True)
    return _build_rc()


def setup_test_server() -> None:
    """Install the test server once (from the wheel its background build made); when it cannot
    be built, say why and go on (its tests skip and print the reason from the stamp file)."""
    if _server_settled():
        return
    built = _wait_for_server_build()
    if built not in (None, 0):
        lines = [line for line in SERVER_LOG.read_text(errors="replace").splitlines() if line.strip()]
        _server_failed((lines or ["pip wheel failed"])[-1].strip())
        SERVER_BUILD.unlink(missing_ok=True)  # deleting the stamp tries the build again
        return
    wheels = ["--find-links", str(SERVER_WHEELS)] if built == 0 else []
    cmd = [str(PY), "-m", "pip", "--disable-pip-version-check", "install", "-q", "-c", "constraints.txt",
           *wheels, TEST_SERVER]
    print("+", " ".join(cmd[2:]), "" if wheels else "(built from source once; later runs reuse pip's cache)",
          flush=True)
    result = subprocess.run(cmd, cwd=ROOT, env=_server_env(), capture_output=True, text=True)
    if result.returncode == 0:
        SERVER_STAMP.write_text(_server_key() + "\nok\n")
        return
    _server_failed((result.stderr.strip().splitlines() or ["pip failed"])[-1])


CROSS_ARM = VENV / "cross-arm"  # an aarch64 gcc and qemu-user for tests/unit/test_native_arm.py


def setup_cross_arm(env: dict) -> None:
    """Where Debian's apt-get is (x86 Linux), fetch the aarch64 cross compiler and qemu-user once
    (scripts/cross_arm.sh, no root) so the NEON kernels are built and checked; elsewhere, or
    offline, the ARM test skips and says why."""
    root = CROSS_ARM / "root"
    if "STORYLOOM_CROSS_ROOT" in env:
        return
    if not (root / "usr/bin/qemu-aarch64-static").exists():
        if platform.machine().lower() not in ("x86_64", "amd64") or shutil.which("apt-get") is None:
            return
        print("+ scripts/cross_arm.sh (an aarch64 gcc and qemu-user from Debian's packages, once)", flush=True)
        try:
            done = subprocess.run(["sh", str(ROOT / "scripts/cross_arm.sh"), str(CROSS_ARM)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            why = "timed out" if done is None else (done.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"Could not fetch the aarch64 toolchain ({why}); the ARM kernel test will be skipped.",
                  flush=True)
            shutil.rmtree(CROSS_ARM, ignore_errors=True)
            return
    env["STORYLOOM_CROSS_ROOT"] = str(root)


LOCK_HEADER = """\
# The whole resolved set StoryLoom is tested with (test extra and test server included):
# tasks.py installs with `-c constraints.txt`, so every machine gets the same packages (and the
# same screens). Made by `python3 tasks.py lock` ({python}, {platform}): in a throwaway venv,
# torch, then `pip install -c constraints.txt .[test]` and TEST_SERVER, then `pip freeze`.
# After a change to the dependencies in pyproject.toml (or TEST_SERVER) run it again: the pins
# below are kept and only what is new is resolved. `python3 tasks.py lock --upgrade` resolves
# everything afresh (then rerun the tests; new textual/rich/pygments may need --snapshot-update).
"""


def lock(upgrade: bool = False) -> int:
    """Resolve pyproject.toml's dependencies in a fresh venv and pin all it installed."""
    import re
    import tempfile

    with tempfile.TemporaryDirectory(prefix="storyloom-lock-") as tmp:
        env = Path(tmp) / "venv"
        venv.EnvBuilder(with_pip=True).create(env)
        pip = [str(env / BIN.name / PY.name), "-m", "pip", "--disable-pip-version-check"]
        index = os.environ.get("STORYLOOM_TORCH_INDEX")
        subprocess.run([*pip, "install", "-q", TORCH, *(["--extra-index-url", index] if index else [])], check=True)
        keep = [] if upgrade else ["-c", "constraints.txt"]
        subprocess.run([*pip, "install", "-q", *keep, ".[test]"], check=True, cwd=ROOT)
        server_env = dict(os.environ)
        if _server_cmake_args() and "CMAKE_ARGS" not in server_env:
            server_env["CMAKE_ARGS"] = _server_cmake_args()
        subprocess.run([*pip, "install", "-q", *keep, TEST_SERVER], check=True, cwd=ROOT, env=server_env)
        frozen = subprocess.run([*pip, "freeze", "--all", "--exclude", "pip", "--exclude", "storyloom"],
                                check=True, capture_output=True, text=True).stdout.splitlines()
    if odd := [line for line in frozen if "==" not in line]:
        sys.exit(f"Not from a package index, cannot be pinned: {odd}")
    # A local label (torch 2.13.0+cpu) is this index's build; the pin is for any build of it.
    pins = sorted((re.sub(r"\+[^=]*$", "", line) for line in frozen),
                  key=lambda pin: re.sub(r"[-_.]+", "-", pin.split("==")[0]).lower())
    header = LOCK_HEADER.format(python=f"Python {platform.python_version()}",
                                platform=f"{platform.system()} {platform.machine()}")
    (ROOT / "constraints.txt").write_text(header + "\n".join(pins) + "\n")
    print(f"constraints.txt: {len(pins)} packages pinned")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"app", "test", "setup", "lock"}:
        print(__doc__)
        return 2
    if argv[0] == "lock":
        return lock(upgrade="--upgrade" in argv[1:])
    # `test` and `setup --tests` (CI runs it, then the lint, then `test`) start the test server's
    # build in the background; `test` waits for it. `app` and a plain `setup` need no test server.
    setup(for_tests=argv[0] == "test" or "--tests" in argv[1:])
    task, rest = argv[0], argv[1:]
    env = dict(os.environ)
    if task == "setup":
        return 0
    if task == "app":
        return subprocess.call([str(BIN / "storyloom"), *rest], cwd=ROOT, env=env)
    # test: the ARM tools and the embedded model once (cached) while the test server builds
    # (in the background since setup() began, or from here), then the whole suite.
    start_test_server_build()
    setup_cross_arm(env)
    rc = subprocess.call([str(BIN / "storyloom"), "model", "pull"], cwd=ROOT, env=env)
    setup_test_server()
    if rc != 0:
        return rc
    return subprocess.call([str(PY), "-m", "pytest", *_workers(rest), *rest], cwd=ROOT, env=env)


MAX_TEST_WORKERS = 4  # more each load their own models, for little: most tests wait on a Pilot or a server
SERIAL_OPTIONS = frozenset({"-n", "--numprocesses", "--pdb", "--trace", "-s"})
VALUED_OPTIONS = frozenset({"-k", "-m", "-p", "-o", "--ignore", "--ignore-glob", "--deselect", "-c", "--rootdir",
                            "--durations", "--maxfail", "--junit-xml", "--basetemp", "-W"})


def _workers(args: list[str]) -> list[str]:
    """pytest-xdist's options for a whole-suite run: one worker per core (up to MAX_TEST_WORKERS),
    each test file on one worker (its module fixtures load once). Most tests wait (a Textual Pilot,
    a server, a subprocess) more than they compute: two workers halve the suite's time on two
    cores. A run of chosen tests (paths or node ids), one that says -n itself, or one that needs
    the terminal (--pdb, --trace, -s), runs as asked, in this process."""
    valued = False  # the last argument was an option that takes the next as its value
    for a in args:
        if valued:
            valued = False
            if a == "no:xdist":  # -p no:xdist
                return []
        elif a in SERIAL_OPTIONS or a == "-pno:xdist" or a.startswith(("-n", "--numprocesses=", "--dist", "--capture=no")):
            return []
        elif a in VALUED_OPTIONS:
            valued = True
        elif not a.startswith("-") and ((ROOT / a.split("::")[0]).exists() or "::" in a):
            return []  # chosen tests
    return ["-n", str(max(1, min(MAX_TEST_WORKERS, os.cpu_count() or 1))), "--dist", "loadfile"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

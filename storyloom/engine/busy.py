"""Competing busy processes for the benches (`bench engine --busy N`): a laptop always runs
something else, so the engine is measured beside N pure-Python spin loops too.

Each loop is a child interpreter (no fork of a process that holds torch's thread pool) that
spins until it is stopped. `competing()` stops them when its block ends, on Ctrl+C and on any
error; a loop whose parent dies without stopping it (SIGKILL) notices within a few hundredths
of a second and exits, so none is ever left behind.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

MAX_BUSY = 16

# Prints "ready" once spinning, then spins until its parent is gone (checked every ~10 ms).
SPIN = """\
import os, sys
parent = os.getppid()
print("ready", flush=True)
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


def start(n: int) -> list[subprocess.Popen]:
    """n spin loops, each already spinning when this returns."""
    if not 0 <= n <= MAX_BUSY:
        from storyloom import StoryloomError

        raise StoryloomError(f"--busy must be 0-{MAX_BUSY} (got {n}).")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-I", "-S", "-c", SPIN], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        for proc in procs:
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"a busy process exited at start (status {proc.wait()})")
    except BaseException:
        stop(procs)
        raise
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill and reap every process in `procs` (those already gone included)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def competing(n: int) -> Iterator[list[int]]:
    """Run the block beside n busy processes (their pids are yielded); they are stopped however
    the block ends."""
    procs = start(n)
    try:
        yield [p.pid for p in procs]
    finally:
        stop(procs)


def load_average() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None

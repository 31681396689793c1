"""How many threads local generation runs on: the cores other programs leave free.

Decoding one token is ~150 short parallel regions (the C step's matmuls, torch's ops on the
logits), each ending in a barrier. With a thread per core and another program busy on one of
them, the scheduler keeps one of our threads waiting at every barrier for a peer it has
descheduled, and the waiting thread spins on a core the others need: one busy process cut
decoding to a fifth. So the count follows the free cores (see ThreadChooser): `choose()` is
called once per step and reads /proc at most twice a second.

STORYLOOM_THREADS=N fixes the count instead.

OpenMP's idle threads spin before they sleep: libgomp's default is 300,000 spins (milliseconds
on current CPUs), so between tokens (Python sampling, a poem's constraint checks) a worker
burns a core it does not use. `prepare_runtime()` shortens that, before libgomp loads, to what
the gaps between one token's regions need.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 0.5  # how often the free cores are measured again (while steps are being asked for)
# A thread per free core, counting a core as free when others use at most this much of it
# (background noise), so one steady busy process costs a thread and a desktop's idle hum does not.
SLACK = 0.4
# Our threads waiting this share of the time they want a core: oversubscribed. (Measured on the
# 2-core machine: 5-12% beside other sessions' bursty work, 45% beside one busy process.)
CONTENDED = 0.25
MIN_ACTIVE_S = 0.02  # thread-seconds run in a window below which it tells nothing about contention
RETRY_S, MAX_RETRY_S = 2.0, 16.0  # after dropping a thread, try it again after this long (doubling)
TRY_S = 0.15  # a try is judged this soon (schedstat tells contention within a few steps)
# libgomp's spins before a waiting thread sleeps: enough for the gaps between one token's
# regions (about 0.6 ms here; 10,000 let workers sleep inside a token and cost 10% of decode
# speed), a tenth of the default.
SPINCOUNT = "30000"


def prepare_runtime(environ=os.environ) -> None:
    """Set OpenMP's wait policy for this process before libgomp reads it (it does so once, when
    torch or the C step first loads it); the user's own OMP_WAIT_POLICY/GOMP_SPINCOUNT win."""
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = SPINCOUNT


@dataclass(frozen=True)
class Sample:
    at: float      # monotonic seconds
    busy: float    # jiffies the allowed CPUs spent busy (user, system, irq, softirq, steal)
    total: float   # jiffies the allowed CPUs existed (busy + idle + iowait + nice)
    own: float     # seconds of CPU this process used (all its threads)
    ran: float = 0.0     # seconds this process's threads ran (schedstat) ...
    waited: float = 0.0  # ... and waited, runnable, for a core


def parse_proc_stat(text: str, cpus: set[int] | None) -> tuple[float, float, int]:
    """(busy jiffies, total jiffies, CPUs counted) over the per-CPU lines of /proc/stat for
    `cpus` (None: all of them). Steal counts as busy (a hypervisor gave that time to others);
    niced time does not (it yields to us)."""
    busy = total = 0.0
    counted = 0
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            cpu = int(name[3:])
            values = [float(v) for v in fields[:8]] + [0.0] * max(0, 8 - len(fields))
        except ValueError:
            continue
        if cpus is not None and cpu not in cpus:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
        used = user + system + irq + softirq + steal
        busy += used
        total += used + nice + idle + iowait
        counted += 1
    return busy, total, counted


def free_cores(before: Sample, after: Sample, cores: int) -> float | None:
    """Cores out of `cores` that other programs left free between two samples (None when the
    samples cannot tell: no time passed, or /proc/stat did not move)."""
    wall = after.at - before.at
    elapsed = after.total - before.total
    if wall <= 0 or elapsed <= 0:
        return None
    busy_cores = cores * (after.busy - before.busy) / elapsed
    own_cores = (after.own - before.own) / wall
    others = max(0.0, busy_cores - own_cores)
    return max(0.0, cores - others)


def contention(before: Sample, after: Sample) -> float | None:
    """The share of the time our threads wanted a core that they spent waiting for one (None
    when they hardly ran: an idle stretch tells nothing)."""
    ran, waited = after.ran - before.ran, after.waited - before.waited
    if ran + waited < MIN_ACTIVE_S:
        return None
    return max(0.0, waited) / (ran + waited)


def threads_for(free: float, most: int) -> int:
    """A thread per free core (see SLACK), at least one, at most `most`."""
    return max(1, min(most, math.floor(free + SLACK)))


def _read_stat() -> str:
    with open("/proc/stat", encoding="ascii") as f:
        return f.read()


def _read_sched() -> tuple[float, float] | None:
    """(seconds run, seconds waited runnable) summed over this process's threads, or None where
    the kernel keeps no schedstat."""
    ran = waited = 0
    seen = False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", encoding="ascii") as f:
                run_ns, wait_ns, _ = f.read().split()
            ran += int(run_ns)
            waited += int(wait_ns)
            seen = True
        except (OSError, ValueError):
            continue  # a thread that just ended
    return (ran / 1e9, waited / 1e9) if seen else None


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


class ThreadChooser:
    """The thread count for the next step, measured again every `interval` seconds of use.

    Two readings decide: how much of the cores other programs use (/proc/stat, this process
    taken out), and whether our own threads are kept waiting for a core (schedstat). Fewer free
    cores than threads costs a thread only when ours actually wait: a program that merely fills
    a core we leave idle, or yields to us (niced, or of lower weight), costs nothing. After
    such a drop a thread is tried again now and then (2 s later, doubling to 16 s while the
    load stays; a try is judged within 0.15 s), since a core another program fills may be one it would share.
    The readers are parameters so tests can feed crafted readings and clocks."""

    def __init__(self, most: int, read_stat: Callable[[], str] = _read_stat,
                 cpus: set[int] | None = None, clock: Callable[[], float] = time.monotonic,
                 own_cpu: Callable[[], float] = time.process_time,
                 read_sched: Callable[[], tuple[float, float] | None] = _read_sched, interval: float = INTERVAL_S):
        self.most = max(1, min(most, len(cpus)) if cpus else most)
        self.read_stat, self.cpus, self.clock, self.own_cpu = read_stat, cpus, clock, own_cpu
        self.read_sched = read_sched
        self.interval = interval
        self.threads = self.most
        self.free: float | None = None  # the last measurements (benches report them)
        self.contention: float | None = None
        self._last: Sample | None = None
        self._retry_at = 0.0
        self._trying = False  # the count was raised to see whether the cores are really taken
        self._backoff = RETRY_S
        self._lock = threading.Lock()
        self._broken = False  # no /proc/stat here (macOS, a sandbox): keep `most`

    def _sample(self) -> tuple[Sample, int] | None:
        try:
            busy, total, counted = parse_proc_stat(self.read_stat(), self.cpus)
        except OSError:
            return None
        if counted == 0:
            return None
        sched = self.read_sched()
        ran, waited = sched if sched is not None else (math.nan, math.nan)
        return Sample(self.clock(), busy, total, self.own_cpu(), ran, waited), counted

    def choose(self) -> int:
        if self._broken:
            return self.threads
        now = self.clock()
        last = self._last
        if last is not None and now - last.at < (TRY_S if self._trying else self.interval):
            return self.threads
        with self._lock:
            got = self._sample()
            if got is None:
                self._broken = True
                return self.threads
            sample, counted = got
            if self._last is not None:
                self._decide(self._last, sample, counted)
            self._last = sample
            return self.threads

    def _decide(self, before: Sample, after: Sample, cores: int) -> None:
        free = free_cores(before, after, cores)
        most = min(self.most, cores)
        if free is None:
            return
        self.free = free
        waiting = contention(before, after)
        unknown = math.isnan(after.ran) or math.isnan(before.ran)  # no schedstat: free cores alone decide
        self.contention = None if unknown else waiting
        target = threads_for(free, most)
        n = self.threads
        if target > n:  # cores left idle: take them
            chosen = target
            self._backoff = RETRY_S
        elif target < n and (unknown or (waiting is not None and waiting >= CONTENDED)):
            chosen = target
            self._retry_at = after.at + self._backoff
            self._backoff = min(2 * self._backoff, MAX_RETRY_S)
        elif target < n:  # fewer cores look free, yet ours never wait: others only fill what we leave
            chosen = n
            if waiting is not None:
                self._backoff = RETRY_S
        elif n < most and not unknown and after.at >= self._retry_at:
            chosen = n + 1  # try one more; the next reading keeps it or takes it back
        else:
            chosen = n
        chosen = min(chosen, most)
        self._trying = chosen > n and target <= n
        if chosen != n:
            log.info("%.1f of %d cores free, waiting %s: %d threads", free, most,
                     "?" if waiting is None else f"{waiting:.0%}", chosen)
        self.threads = chosen


_chooser: ThreadChooser | None = None
_chooser_lock = threading.Lock()


def _fixed() -> int | None:
    raw = os.environ.get("STORYLOOM_THREADS", "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        from storyloom import StoryloomError

        raise StoryloomError(f"STORYLOOM_THREADS must be a whole number of threads, 1 or more (got {raw!r}).")
    return value


def chooser() -> ThreadChooser:
    """The process's chooser, capped at the threads torch would use on its own (its cores, or
    OMP_NUM_THREADS / torch.set_num_threads before the first step)."""
    global _chooser
    if _chooser is not None:
        return _chooser
    with _chooser_lock:
        if _chooser is None:
            import torch

            _chooser = ThreadChooser(torch.get_num_threads(), cpus=_allowed_cpus())
        return _chooser


def choose() -> int:
    """The threads for the next step, with torch's intra-op count (this thread's) set to match,
    so torch's own ops and the C step (which reads torch.get_num_threads()) agree."""
    import torch

    n = _fixed() or chooser().choose()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n

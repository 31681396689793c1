"""Thread choice under load (fed crafted /proc/stat text and clocks) and the benches' busy helper
(its processes always stop). Nothing here is timed."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from storyloom import StoryloomError
from storyloom.engine import busy, threads
from storyloom.engine.threads import Sample, ThreadChooser, contention, free_cores, parse_proc_stat, threads_for

HEADER = "cpu  {t} 0 0 0 0 0 0 0 0 0\n"


def stat(*cpus: tuple[int, int], steal: int = 0) -> str:
    """/proc/stat text with one line per CPU: (busy user jiffies, idle jiffies)."""
    lines = [HEADER.format(t=sum(b for b, _ in cpus))]
    lines += [f"cpu{i} {b} 0 0 {idle} 0 0 0 {steal} 0 0\n" for i, (b, idle) in enumerate(cpus)]
    return "".join(lines) + "intr 1 2 3\nctxt 99\nprocs_running 3\n"


def test_parse_proc_stat_sums_the_allowed_cpus_and_counts_steal_as_busy_and_nice_as_free():
    text = stat((100, 50), (30, 120), (7, 3), steal=5)
    assert parse_proc_stat(text, None) == (100 + 30 + 7 + 15, 100 + 30 + 7 + 15 + 173, 3)
    assert parse_proc_stat(text, {1}) == (35, 155, 1)
    assert parse_proc_stat("cpu  1 2 3 4\nbogus\ncpuX 1 2\n", None) == (0, 0, 0)
    niced = "cpu0 10 80 0 10 0 0 0 0 0 0\n"  # a niced job's time yields to us: not busy
    assert parse_proc_stat(niced, None) == (10, 100, 1)


@pytest.mark.parametrize("free, most, want", [
    (2.0, 2, 2),    # idle
    (1.8, 2, 2),    # background hum: a thread per core still
    (1.6, 2, 2),    # other sessions' bursts
    (1.1, 2, 1),    # one busy process on a 2-core machine
    (1.5, 2, 1),    # half a core taken: a peer would be descheduled at barriers
    (0.2, 2, 1),    # overloaded: never fewer than one
    (7.9, 4, 4),    # never more than the cap
])
def test_threads_for(free, most, want):
    assert threads_for(free, most) == want


def test_free_cores_takes_this_process_out_of_the_systems_use():
    # 2 CPUs over 1 s (100 jiffies each): 150 jiffies busy, of which this process used 0.5 s.
    before, after = Sample(10.0, 0, 0, 3.0), Sample(11.0, 150, 200, 3.5)
    assert free_cores(before, after, 2) == pytest.approx(1.0)
    # this process alone busy: everything is free to it
    assert free_cores(Sample(0, 0, 0, 0), Sample(1, 190, 200, 1.9), 2) == pytest.approx(2.0)
    assert free_cores(before, before, 2) is None  # no time passed


def test_contention_is_the_share_of_wanted_time_spent_waiting():
    assert contention(Sample(0, 0, 0, 0, 1.0, 0.5), Sample(1, 0, 0, 0, 2.0, 1.0)) == pytest.approx(1 / 3)
    assert contention(Sample(0, 0, 0, 0, 1.0, 0.5), Sample(9, 0, 0, 0, 1.0, 0.5)) is None  # idle stretch


class FakeMachine:
    """/proc/stat of two CPUs, this process's schedstat, a clock and its CPU time, all advanced
    by hand."""

    def __init__(self, schedstat: bool = True):
        self.now, self.own, self.ran, self.waited = 100.0, 0.0, 0.0, 0.0
        self.jiffies = [[0, 0], [0, 0]]  # per CPU: busy, idle
        self.reads = 0
        self.schedstat = schedstat

    def run(self, seconds: float, ours: float, others: float, waiting: float = 0.0) -> None:
        """`ours` and `others` cores busy for `seconds` (spread over both CPUs), our threads
        kept waiting for `waiting` thread-seconds per second."""
        per_cpu_busy = (ours + others) / 2
        for cpu in self.jiffies:
            cpu[0] += round(100 * seconds * per_cpu_busy)
            cpu[1] += round(100 * seconds * (1 - per_cpu_busy))
        self.now += seconds
        self.own += ours * seconds
        self.ran += ours * seconds
        self.waited += waiting * seconds

    def read(self) -> str:
        self.reads += 1
        return stat(*(tuple(c) for c in self.jiffies))

    def sched(self):
        return (self.ran, self.waited) if self.schedstat else None


def chooser_on(machine: FakeMachine, most: int = 2) -> ThreadChooser:
    return ThreadChooser(most, read_stat=machine.read, clock=lambda: machine.now, own_cpu=lambda: machine.own,
                         read_sched=machine.sched)


def load(machine: FakeMachine, chooser: ThreadChooser, seconds: float, busy: float, lower_priority: bool = False):
    """Run `seconds` in half-second steps beside `busy` cores of other work: with our threads
    and theirs more than the cores, equal shares and waiting (or, `lower_priority`, theirs
    yield to ours); returns the thread counts chosen."""
    chosen = []
    for _ in range(int(seconds / threads.INTERVAL_S)):
        n = chooser.choose()
        chosen.append(n)
        if lower_priority:
            ours, others, waiting = n, min(busy, 2 - n), 0.01
        elif n + busy > 2:
            ours = 2 * n / (n + busy)
            others, waiting = 2 - ours, n - ours
        else:
            ours, others, waiting = n, busy, 0.0
        machine.run(threads.INTERVAL_S, ours, others, waiting)
    return chosen


def test_chooser_drops_a_thread_for_a_busy_process_retries_it_rarely_and_takes_it_back_when_it_stops():
    machine = FakeMachine()
    chooser = chooser_on(machine)
    assert load(machine, chooser, 2, busy=0) == [2, 2, 2, 2]
    chosen = load(machine, chooser, 40, busy=1)
    assert chosen[:2] == [2, 1]  # one reading after the busy process starts
    assert chooser.contention is not None
    # tried again (one reading each) 2 s after the drop, then 4 s, 8 s, 16 s after each failed try
    tries = [i for i, n in enumerate(chosen) if n == 2][1:]
    assert tries[0] == 1 + 2 / threads.INTERVAL_S
    assert [b - a for a, b in zip(tries, tries[1:])] == [1 + 4 / 0.5, 1 + 8 / 0.5, 1 + 16 / 0.5]
    assert chosen.count(1) == len(chosen) - 1 - len(tries)
    assert load(machine, chooser, 2, busy=0.05)[-2:] == [2, 2]  # it stopped: back at once


def test_chooser_keeps_its_threads_when_others_only_fill_what_it_leaves():
    machine = FakeMachine()
    chooser = chooser_on(machine)
    load(machine, chooser, 1, busy=1)  # an equal busy process: one thread
    assert chooser.choose() == 1
    # it turns into a lower-priority job: the retry takes the core and keeps it
    chosen = load(machine, chooser, 6, busy=1, lower_priority=True)
    assert chosen[-4:] == [2, 2, 2, 2]


def test_chooser_goes_by_free_cores_alone_without_schedstat():
    machine = FakeMachine(schedstat=False)
    chooser = chooser_on(machine)
    chosen = load(machine, chooser, 10, busy=1)
    assert chosen[0] == 2 and set(chosen[2:]) == {1}  # no retries: nothing would tell them apart
    assert chooser.contention is None
    assert load(machine, chooser, 2, busy=0)[-1] == 2


def test_chooser_reads_proc_at_most_once_per_interval():
    machine = FakeMachine()
    chooser = chooser_on(machine)
    chooser.choose()
    for _ in range(50):  # fifty steps within the interval: no reads
        machine.run(threads.INTERVAL_S / 100, ours=1.0, others=1.0, waiting=1.0)
        chooser.choose()
    assert machine.reads == 1
    machine.run(threads.INTERVAL_S, ours=1.0, others=1.0, waiting=1.0)
    assert chooser.choose() == 1
    assert machine.reads == 2


def test_chooser_keeps_its_count_where_proc_stat_cannot_be_read():
    def missing() -> str:
        raise FileNotFoundError("/proc/stat")

    clock = iter(range(100))
    chooser = ThreadChooser(4, read_stat=missing, clock=lambda: next(clock), own_cpu=lambda: 0.0)
    assert [chooser.choose() for _ in range(3)] == [4, 4, 4]
    empty = ThreadChooser(3, read_stat=lambda: "intr 1\n", clock=lambda: next(clock), own_cpu=lambda: 0.0)
    assert empty.choose() == 3


def test_chooser_caps_at_the_cpus_it_may_run_on():
    machine = FakeMachine()
    chooser = ThreadChooser(8, read_stat=machine.read, cpus={1}, clock=lambda: machine.now,
                            own_cpu=lambda: machine.own, read_sched=machine.sched)
    chooser.choose()
    machine.run(1.0, ours=0.0, others=0.0)
    assert chooser.choose() == 1  # one CPU allowed, whatever torch's default


def test_read_sched_reads_this_process():
    got = threads._read_sched()
    if got is not None:  # kernels without schedstat have none
        ran, waited = got
        assert ran > 0 and waited >= 0


def test_choose_sets_torchs_count_and_honours_storyloom_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("STORYLOOM_THREADS", "1")
        assert threads.choose() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("STORYLOOM_THREADS", "many")
        with pytest.raises(StoryloomError, match="STORYLOOM_THREADS"):
            threads.choose()
    finally:
        torch.set_num_threads(before)


def test_prepare_runtime_shortens_the_spin_but_leaves_the_users_choice():
    env: dict[str, str] = {}
    threads.prepare_runtime(env)
    assert env == {"GOMP_SPINCOUNT": threads.SPINCOUNT}
    for mine in ({"OMP_WAIT_POLICY": "active"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(mine)
        threads.prepare_runtime(env)
        assert env == mine


def test_the_engine_sets_the_wait_policy_before_torch_loads():
    code = ("import os, sys; os.environ.pop('GOMP_SPINCOUNT', None); os.environ.pop('OMP_WAIT_POLICY', None);"
            "import storyloom.engine; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == [threads.SPINCOUNT, "False"]


# -- the busy helper -------------------------------------------------------------------------
def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is not running
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_competing_starts_spinning_processes_and_stops_them():
    with busy.competing(2) as pids:
        assert len(pids) == 2 and all(alive(p) for p in pids)
    assert not any(alive(p) for p in pids)


def test_competing_stops_its_processes_on_an_error_and_on_ctrl_c():
    for raised in (RuntimeError("bench failed"), KeyboardInterrupt()):
        with pytest.raises(type(raised)):
            with busy.competing(1) as pids:
                raise raised
        assert not any(alive(p) for p in pids)


def test_start_stops_the_ones_it_started_when_a_later_one_fails(monkeypatch):
    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(args, **kw):
        if len(started) == 2:
            args = [sys.executable, "-c", "raise SystemExit(3)"]  # exits before "ready"
        started.append(real(args, **kw))
        return started[-1]

    monkeypatch.setattr(busy.subprocess, "Popen", popen)
    with pytest.raises(RuntimeError, match="exited at start"):
        busy.start(3)
    assert len(started) == 3 and all(p.poll() is not None for p in started)


def test_a_busy_process_exits_when_its_parent_dies():
    # A parent that starts a loop and is killed without stopping it: the loop must notice.
    parent = subprocess.run(
        [sys.executable, "-c", "import os, sys; from storyloom.engine import busy;"
         "p = busy.start(1)[0]; print(p.pid, flush=True); os._exit(0)"],
        capture_output=True, text=True, check=True, timeout=60)
    pid = int(parent.stdout.split()[0])
    for _ in range(600):  # it checks its parent every ~10 ms; give it up to a minute on a busy machine
        if not alive(pid):
            break
        os.sched_yield()
        import time as _t  # a sleep while waiting, not a measurement

        _t.sleep(0.1)
    assert not alive(pid)


def test_busy_counts_are_checked():
    with pytest.raises(StoryloomError, match="--busy must be"):
        busy.start(-1)
    with pytest.raises(StoryloomError, match="--busy must be"):
        busy.start(busy.MAX_BUSY + 1)
    assert busy.start(0) == []


def test_a_try_is_judged_sooner_than_the_usual_interval():
    machine = FakeMachine()
    chooser = chooser_on(machine)
    load(machine, chooser, 1, busy=1)
    assert chooser.threads == 1
    for _ in range(int(threads.RETRY_S / threads.INTERVAL_S) + 1):
        machine.run(threads.INTERVAL_S, ours=1, others=1)
        if chooser.choose() == 2:
            break
    assert chooser.threads == 2  # the try
    reads = machine.reads
    machine.run(threads.TRY_S * 1.01, ours=4 / 3, others=2 / 3, waiting=2 / 3)
    assert chooser.choose() == 1 and machine.reads == reads + 1


def test_bench_busy_is_checked_and_runs_a_bench_beside_its_processes(monkeypatch, capsys):
    import json

    from storyloom import cli

    assert cli.main(["bench", "poetry", "--busy", "-1"]) == 2
    assert "--busy must be 0-" in capsys.readouterr().err
    started: list[subprocess.Popen] = []
    real_start = busy.start

    def start(n):
        started.extend(real_start(n))
        return started

    alive_during: list[bool] = []

    def fake_bench(args) -> dict:
        alive_during.extend(alive(p.pid) for p in started)
        return {"what": args.what}

    monkeypatch.setattr(busy, "start", start)
    monkeypatch.setattr(cli, "_bench_result", fake_bench)
    assert cli.main(["bench", "poetry", "--busy", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["what"] == "poetry" and out["busy_processes"] == 2 and "load_average_1m" in out
    assert alive_during == [True, True]  # both spinning while the bench ran
    assert not any(alive(p.pid) for p in started)  # and gone after

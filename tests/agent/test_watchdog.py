"""The watchdog's judgement, measurement by measurement, and the status file's staleness rules.

The process measurement is the one thing replaced here (a scripted series of CPU seconds and
resident bytes, as /proc would give them); tests/agent/test_daemon_status.py drives a real daemon.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from agent.status_file import process_start, read_status, write_status
from agent.watchdog import SHED_ORDER, Ceilings, Usage, Watchdog

MiB = 2**20


class Script:
    """Usage readings in order: each call advances time by `step` seconds."""

    def __init__(self, step: float = 1.0) -> None:
        self.at = 0.0
        self.cpu = 0.0
        self.rss = 40 * MiB
        self.step = step
        self.cpu_per_step = 0.0

    def __call__(self) -> Usage:
        self.at += self.step
        self.cpu += self.cpu_per_step
        return Usage(self.at, self.cpu, self.rss)


class FileLike:
    SHEDDABLE = ("hashing", "inventory walk")

    def __init__(self) -> None:
        self.calls: list[frozenset[str]] = []

    def shed(self, work: frozenset[str]) -> None:
        self.calls.append(work)


class NotSheddable:
    pass


def _dog(script: Script, sensor: FileLike, trims: list[int], **kw: float) -> Watchdog:
    ceilings = Ceilings(
        cpu_percent=kw.get("cpu", 5.0),
        memory_bytes=int(kw.get("memory", 120 * MiB)),
        cpu_window=kw.get("window", 10.0),
        restart_after=kw.get("restart_after", 5.0),
        restart_backoff=kw.get("backoff", 20.0),
        enabled=bool(kw.get("enabled", True)),
    )
    dog = Watchdog(
        ceilings,
        [sensor, NotSheddable()],
        interval=1.0,
        measure=script,
        trim=lambda: trims.append(1),
    )
    dog.started = 0.0
    return dog


def test_memory_over_the_ceiling_trims_then_sheds_costliest_first_then_restarts_last() -> None:
    script, sensor, trims = Script(), FileLike(), []
    dog = _dog(script, sensor, trims)
    script.rss = 130 * MiB
    first = dog.check()
    assert trims == [1]  # freed memory is given back before any work is shed
    assert first is not None and first.state == "degraded" and not first.restart
    assert first.reason == "resident memory 130 MiB over the 120 MiB ceiling: hashing paused"
    assert sensor.calls == [frozenset({"hashing"})]
    assert dog.check() is None  # the next step waits two intervals for the first to show
    second = dog.check()
    assert second is not None and second.reason.endswith("hashing and inventory walk paused")
    assert sensor.calls[-1] == frozenset(SHED_ORDER)
    # Everything shed and still over: restart after restart_after, and not before the backoff
    # (20 s of run time), even though restart_after (5 s) has passed.
    reports = [dog.check() for _ in range(14)]
    assert not any(r is not None and r.restart for r in reports), "restarted before the backoff"
    restart = None
    for _ in range(10):
        restart = dog.check()
        if restart is not None:
            break
    assert (
        restart is not None and restart.restart and restart.reason.startswith("restarting: resident memory")
    )
    assert script.at >= 20.0
    assert len(trims) == 1  # trimming is not repeated every interval


def test_trim_enough_sheds_nothing() -> None:
    script, sensor, trims = Script(), FileLike(), []
    dog = _dog(script, sensor, trims)
    script.rss = 130 * MiB

    def trim() -> None:
        trims.append(1)
        script.rss = 90 * MiB

    dog._trim = trim
    assert dog.check() is None
    assert trims == [1] and sensor.calls == [] and dog.state == "active"


def test_cpu_is_judged_over_its_window_and_work_resumes_once_well_under() -> None:
    script, sensor, trims = Script(), FileLike(), []
    dog = _dog(script, sensor, trims, window=10.0)
    script.cpu_per_step = 0.08  # 8 % of a core
    reports = [dog.check() for _ in range(8)]
    assert reports == [None] * 8, "judged before a whole window was measured"
    reports = [dog.check() for _ in range(4)]
    shed = [r for r in reports if r is not None]
    assert shed and "CPU 8.0 % of a core over 10 s, over the 5 % ceiling" in shed[0].reason
    assert trims == []  # CPU, not memory: nothing to trim
    script.cpu_per_step = 0.01  # 1 %: well under
    back = None
    for _ in range(40):
        back = dog.check() or back
        if back is not None and back.state == "active":
            break
    assert back is not None and back.state == "active"
    assert back.reason.startswith("back under the ceilings (CPU 1.0 %")
    assert sensor.calls[-1] == frozenset() and dog.level == 0


def test_disabled_measures_but_never_acts() -> None:
    script, sensor, trims = Script(), FileLike(), []
    dog = _dog(script, sensor, trims, enabled=False)
    script.rss = 500 * MiB
    assert all(dog.check() is None for _ in range(30))
    assert sensor.calls == [] and dog.peak_rss == 500 * MiB


def test_status_file_is_atomic_private_and_goes_stale(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    me = os.getpid()
    write_status(path, {"pid": me, "process_start": process_start(me), "interval": 1.0})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary left behind
    assert read_status(path).running
    later = read_status(path, now=time.time() + 10)
    assert not later.running and "has not written its status for 10 s" in later.why
    # A pid that now belongs to another process (another start time) is not the daemon.
    write_status(path, {"pid": me, "process_start": process_start(me) - 100.0, "interval": 1.0})
    reused = read_status(path)
    assert not reused.running and f"process {me} is gone" in reused.why
    path.write_text(json.dumps({"format": 99}))
    assert not read_status(path).running
    path.write_text("{half")
    assert "cannot read" in read_status(path).why


def test_freed_memory_is_handed_back_every_five_minutes_under_the_ceilings() -> None:
    script, sensor, trims = Script(), FileLike(), []
    dog = _dog(script, sensor, trims)
    for _ in range(300):
        assert dog.check() is None
    assert trims == []
    for _ in range(2):
        dog.check()
    assert trims == [1] and sensor.calls == []


_FREED = """
import sys
from agent.watchdog import tune_malloc

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

tuned = tune_malloc() if sys.argv[1] == "tuned" else None
big = b"x" * (8 << 20)  # freed: untuned glibc raises its mmap and trim thresholds past it
del big
blocks = [b"x" * (512 << 10) for _ in range(40)]  # 20 MiB in blocks under the raised threshold
peak = rss()
del blocks[::2]  # 10 MiB freed between blocks still in use: holes in the heap
print(tuned, peak - rss())
"""


def test_tuned_malloc_hands_freed_memory_back_at_once() -> None:
    """The daemon's malloc settings (fixed thresholds): 10 MiB of half-MiB blocks freed between
    blocks still in use go back to the system at once; with glibc's defaults, once a large block
    was freed, they stay resident as holes in the heap."""
    import subprocess
    import sys

    def handed_back(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _FREED, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], int(out[1])

    applied, tuned = handed_back("tuned")
    assert applied == "True"  # glibc accepted every setting
    assert tuned > 9 * MiB
    _, default = handed_back("default")
    assert default < 2 * MiB

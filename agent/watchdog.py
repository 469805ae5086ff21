"""The agent's watchdog over itself, in osquery's manner: CPU and memory ceilings on its own process.

osquery's watcher (osquery/core/watcher.cpp) lets its worker use 10 % of a core sustained and 200 MB,
and respawns a worker over them. Umbra's goals are tighter (1 % of a core steady, 5 % during a first
inventory, 60 MB), so its default ceilings are 5 % of a core averaged over five minutes and 120 MB:
above them something is wrong (a leak, a pathological directory, a flood of events), not merely busy.

Over a ceiling the watchdog first gives freed memory back to the system (a garbage collection and
glibc's malloc_trim), then sheds work, costliest first: hashing (the bulk of the file sensor's CPU
and reads), then the inventory walk. Shed work is paused, not dropped; change events are still
followed, so new models are still seen. Each change is reported as an AGENT_HEALTH finding (sensor
"watchdog") with the figure that crossed the ceiling. Only when everything is shed and the agent
stays over a ceiling for `restart_after` seconds does it restart itself (a clean stop and an exec of
the same command), at most once per backoff period, which doubles with each restart up to an hour.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn, Protocol, runtime_checkable

log = logging.getLogger(__name__)

__all__ = [
    "SHED_ORDER",
    "Ceilings",
    "Report",
    "Sheddable",
    "Usage",
    "Watchdog",
    "mib",
    "own_usage",
    "reexec",
    "tune_malloc",
]

#: What the watchdog sheds, costliest first.
SHED_ORDER: Final = ("hashing", "inventory walk")
#: Carried across a restart (exec keeps the environment): restarts so far, for the backoff.
RESTARTS_ENV: Final = "UMBRA_WATCHDOG_RESTARTS"
MAX_BACKOFF: Final = 3600.0
#: Freed memory is handed back this often anyway: the C libraries' (gRPC, SQLite) holes in glibc's
#: heaps are not returned by free() alone, and the resident figure would creep.
TRIM_EVERY: Final = 300.0
#: Back under a ceiling means under this fraction of it (no flapping at the edge).
HYSTERESIS: Final = 0.8


@runtime_checkable
class Sheddable(Protocol):
    """A sensor with work the watchdog may pause: `SHEDDABLE` names it, `shed` pauses what it is
    given (and resumes what it no longer is)."""

    SHEDDABLE: tuple[str, ...]

    def shed(self, work: frozenset[str]) -> None: ...


@dataclass(frozen=True)
class Ceilings:
    cpu_percent: float  # of one core, averaged over cpu_window
    memory_bytes: int
    cpu_window: float
    restart_after: float
    restart_backoff: float
    enabled: bool = True  # False: measure and report the figures, never shed nor restart


@dataclass(frozen=True)
class Usage:
    at: float  # monotonic seconds
    cpu_seconds: float  # user + system, all threads
    rss_bytes: int


@dataclass(frozen=True)
class Report:
    """A change worth an AGENT_HEALTH finding: `state` as HealthEvidence says it."""

    state: str  # "degraded" (shedding, or restarting) or "active" (back under the ceilings)
    reason: str
    restart: bool = False


def own_usage() -> Usage:
    times = os.times()
    return Usage(time.monotonic(), times.user + times.system, _rss())


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import psutil

        return int(psutil.Process().memory_info().rss)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library's malloc controls, looked up once among the symbols the process has loaded
    (ctypes.util.find_library would run ldconfig in a child process each time); None when the C
    library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


#: glibc's mallopt parameters (malloc.h) and the daemon's values for them: two arenas, not eight
#: per core (each thread that allocates would get one, a heap of its own with its own free holes),
#: and freed memory above 128 KiB handed back at once (fixed thresholds: glibc otherwise raises
#: them up to 32 MiB as large blocks are freed, and keeps that much free memory resident).
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
M_ARENA_MAX: Final = -8
MALLOC_SETTINGS: Final = ((M_ARENA_MAX, 2), (M_TRIM_THRESHOLD, 128 * 1024), (M_MMAP_THRESHOLD, 128 * 1024))


def tune_malloc() -> bool:
    """Apply MALLOC_SETTINGS, before the daemon starts its threads; False where not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


def release_memory() -> None:
    """Give freed memory back: collect cycles, then ask glibc to return its free pages."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def mib(n: int) -> str:
    """Bytes as whole MiB, the way the watchdog and `status` print memory."""
    return f"{n / 2**20:.0f} MiB"


class Watchdog:
    """Judges each measurement of the agent's own process; sheds work through `sensors`."""

    def __init__(
        self,
        ceilings: Ceilings,
        sensors: Sequence[object],
        *,
        interval: float,
        restarts: int = 0,
        measure: Callable[[], Usage] = own_usage,
        trim: Callable[[], None] = release_memory,
    ) -> None:
        self.ceilings = ceilings
        self.interval = interval
        self.restarts = restarts
        self._sheddable = [s for s in sensors if isinstance(s, Sheddable)]
        self._measure = measure
        self._trim = trim
        self._history: collections.deque[Usage] = collections.deque()
        self.started = time.monotonic()
        self.level = 0  # how many of SHED_ORDER are shed
        self.state = "active"
        self.reason = ""
        self.peak_rss = 0
        self._changed = self.started
        self._all_shed_since: float | None = None
        self._under_since: float | None = None
        self._trimmed_at: float | None = None  # the first measurement's time, until a trim
        self._urgent_at = -1e9  # the last trim for being over the memory ceiling

    # --- figures ------------------------------------------------------------------------------

    @property
    def last(self) -> Usage | None:
        return self._history[-1] if self._history else None

    @property
    def shed_work(self) -> tuple[str, ...]:
        return SHED_ORDER[: self.level]

    def cpu_percent(self, seconds: float | None = None) -> float | None:
        """CPU % of one core over the last `seconds` (default: the ceiling's window); None until
        that much has been measured."""
        span = self.ceilings.cpu_window if seconds is None else seconds
        if len(self._history) < 2:
            return None
        last = self._history[-1]
        first = next((u for u in self._history if last.at - u.at <= span + self.interval / 2), None)
        if first is None or first is last or last.at - first.at < span * 0.9:
            return None
        return 100 * (last.cpu_seconds - first.cpu_seconds) / (last.at - first.at)

    def backoff(self) -> float:
        """How long this process must have run before the watchdog may restart it again."""
        return float(min(MAX_BACKOFF, self.ceilings.restart_backoff * 2**self.restarts))

    # --- judging ------------------------------------------------------------------------------

    def check(self) -> Report | None:
        """Measure; shed, restore or restart when a ceiling says so. A Report when state changed."""
        usage = self._measure()
        self._remember(usage)
        over = self._over(usage)
        if self._trimmed_at is None:
            self._trimmed_at = usage.at
        urgent = (
            bool(over) and usage.rss_bytes > self.ceilings.memory_bytes and usage.at - self._urgent_at > 60
        )
        if urgent or usage.at - self._trimmed_at > TRIM_EVERY:
            self._trimmed_at = usage.at
            if urgent:
                self._urgent_at = usage.at
            self._trim()  # cheap, and sometimes enough
            usage = self._measure()
            self._remember(usage)
            over = self._over(usage)
        if not self.ceilings.enabled:
            return None
        now = usage.at
        if over:
            self._under_since = None
            if self.level < len(SHED_ORDER):
                if self.level == 0 or now - self._changed >= 2 * self.interval:
                    return self._shed(self.level + 1, over, now)
                return None
            if self._all_shed_since is None:
                self._all_shed_since = now
            if (
                now - self._all_shed_since >= self.ceilings.restart_after
                and now - self.started >= self.backoff()
            ):
                self.state = "degraded"
                paused_for = self.ceilings.restart_after
                self.reason = f"restarting: {over} with all sheddable work paused for {paused_for:.0f} s"
                log.error("watchdog: %s", self.reason)
                return Report(self.state, self.reason, restart=True)
            return None
        if self.level == 0 or not self._well_under(usage):
            self._under_since = None
            return None
        if self._under_since is None:
            self._under_since = now
        if now - self._under_since < self.ceilings.cpu_window:
            return None
        resumed = " and ".join(SHED_ORDER[: self.level])
        self._apply(0, now)
        self.state = "active"
        self.reason = f"back under the ceilings ({self._figures(usage)}): {resumed} resumed"
        return Report(self.state, self.reason)

    def _remember(self, usage: Usage) -> None:
        self._history.append(usage)
        self.peak_rss = max(self.peak_rss, usage.rss_bytes)
        keep = self.ceilings.cpu_window + 2 * self.interval
        while len(self._history) > 2 and usage.at - self._history[0].at > keep:
            self._history.popleft()

    def _over(self, usage: Usage) -> str:
        """What is over a ceiling, with its figure; "" when nothing is."""
        c = self.ceilings
        if usage.rss_bytes > c.memory_bytes:
            return f"resident memory {mib(usage.rss_bytes)} over the {mib(c.memory_bytes)} ceiling"
        cpu = self.cpu_percent()
        if cpu is not None and cpu > c.cpu_percent:
            return (
                f"CPU {cpu:.1f} % of a core over {c.cpu_window:.0f} s, over the {c.cpu_percent:g} % ceiling"
            )
        return ""

    def _well_under(self, usage: Usage) -> bool:
        cpu = self.cpu_percent()
        return usage.rss_bytes < HYSTERESIS * self.ceilings.memory_bytes and (
            cpu is None or cpu < HYSTERESIS * self.ceilings.cpu_percent
        )

    def _figures(self, usage: Usage) -> str:
        cpu = self.cpu_percent()
        return (f"CPU {cpu:.1f} %, " if cpu is not None else "") + f"resident memory {mib(usage.rss_bytes)}"

    def _shed(self, level: int, over: str, now: float) -> Report:
        self._apply(level, now)
        self.state = "degraded"
        self.reason = f"{over}: {' and '.join(self.shed_work)} paused"
        log.warning("watchdog: %s", self.reason)
        return Report(self.state, self.reason)

    def _apply(self, level: int, now: float) -> None:
        self.level = level
        self._changed = now
        self._all_shed_since = now if level == len(SHED_ORDER) else None
        work = frozenset(self.shed_work)
        for sensor in self._sheddable:
            sensor.shed(work & frozenset(sensor.SHEDDABLE))


def restarts_so_far() -> int:
    """Restarts by the watchdog before this process (0 for a process started by its supervisor)."""
    try:
        return max(0, int(os.environ.get(RESTARTS_ENV, "0")))
    except ValueError:
        return 0


def reexec(restarts: int) -> NoReturn:
    """Replace this process with a fresh start of the same command (same pid, same supervisor)."""
    os.environ[RESTARTS_ENV] = str(restarts + 1)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if getattr(sys, "frozen", False):  # a one-file binary: it is its own interpreter
        os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    os.execv(sys.executable, sys.orig_argv)

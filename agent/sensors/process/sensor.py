"""Process sensor: new processes that may be model runtimes, with their listening sockets.

Cost is what matters on a workstation: each poll lists PIDs (one directory read) and inspects
only PIDs it has not seen before, with one cheap pre-filter (the runtime catalog's
`is_candidate`). Only candidates are followed on every poll (sockets, liveness), and only
they pay for user-name lookups and socket tables (read again only when the host's listening
sockets change: listening.py). Processes a few seconds old are looked at
once more on the next poll, because a shell or launcher that `exec`s a runtime keeps
its PID but changes its name. An exec later than that is caught by the kernel's exec events
(agent/system/proc_connector.py, Linux as root): the PID is looked at again.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import psutil

from agent.catalog.cmdline import is_python, norm
from agent.observations import ProcessObservation
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus
from agent.sensors.process.facts import DeepFacts, process_cwd, process_identity, process_user
from agent.sensors.process.listening import ListeningSockets
from agent.system import procfs
from agent.system.privileges import CAP_SYS_PTRACE, has_capability
from agent.system.proc_connector import ProcConnector

#: (name, exe, cmdline) -> worth following? Supplied by the runtime catalog.
CandidateFilter = Callable[[str, str, Sequence[str]], bool]
_LINUX = platform.system() == "Linux"

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)


class ProcessSensor(Sensor):
    name = "process"
    capabilities = SensorCapabilities(needs_root=True, platforms=("Linux", "Darwin", "Windows"))
    produces = (ProcessObservation,)

    def __init__(
        self,
        is_candidate: CandidateFilter,
        *,
        facts: DeepFacts | None = None,
        deep_interval: float = 15.0,
        large_rss_bytes: int = 512 * 1024 * 1024,
        sweep_interval: float = 60.0,
        young_age: float = 5.0,
        exec_events: bool = True,
    ) -> None:
        self._is_candidate = is_candidate
        self._facts = facts or DeepFacts()
        self._deep_interval = deep_interval
        self._large_rss = large_rss_bytes
        self._sweep_interval = sweep_interval
        self._young_age = young_age
        self._seen: set[int] = set()
        self._young: set[int] = set()  # non-candidates born just before a poll: look once more
        self._followed: dict[int, ProcessObservation] = {}
        self._deep_at: dict[int, float] = {}  # pid -> when its deep facts were last read
        self._last_sweep = time.monotonic()
        self._self_pid = os.getpid()
        self._want_events = exec_events and _LINUX
        self._events = ProcConnector()
        self._listening = ListeningSockets(max_age=deep_interval)

    def start(self) -> None:
        if self._want_events:
            self._events.open()

    def stop(self) -> None:
        self._events.close()

    def status(self) -> SensorStatus:
        system = platform.system()
        if system not in self.capabilities.platforms:
            return SensorStatus(self.name, SensorState.INACTIVE, f"unsupported platform {system}")
        if system != "Windows" and not has_capability(CAP_SYS_PTRACE):
            return SensorStatus(
                self.name,
                SensorState.DEGRADED,
                "not root: executables, sockets and maps of other users' processes are hidden",
            )
        if self._want_events and not self._events.is_open and self._events.reason:
            return SensorStatus(self.name, SensorState.ACTIVE, f"polling only: {self._events.reason}")
        return SensorStatus(self.name, SensorState.ACTIVE)

    def _worth_following(self, obs: ProcessObservation, rss: int) -> bool:
        """Catalog candidates, interpreters (a model can run in plain `python worker.py`) and
        processes large enough to hold model weights (a renamed llama.cpp binary)."""
        return (
            self._is_candidate(obs.name, obs.exe, obs.cmdline)
            or is_python(norm(obs.name))
            or rss >= self._large_rss
        )

    def poll(self) -> Sequence[ProcessObservation]:
        now = time.time()
        pids = set(psutil.pids())
        for pid in self._seen - pids:
            self._followed.pop(pid, None)
            self._deep_at.pop(pid, None)
            self._listening.forget(pid)
        recheck, self._young = self._young & pids, set()
        # A process that exec'd is a new program under an old PID: look at it again.
        for pid in self._events.drain().exec_pids & pids:
            recheck.add(pid)
            if pid in self._followed and not self._still_same_program(pid):
                self._followed.pop(pid)
                self._deep_at.pop(pid, None)
                self._listening.forget(pid)
        new = pids - self._seen
        self._seen = pids
        if time.monotonic() - self._last_sweep >= self._sweep_interval:
            # A process that grew into a model server after we first saw it: promote it.
            self._last_sweep = time.monotonic()
            recheck |= {pid for pid in pids - self._followed.keys() if _rss(pid) >= self._large_rss}
        for pid in (*new, *recheck):
            if pid == self._self_pid or pid in self._followed:
                continue
            inspected = process_identity(pid)
            if inspected is None:
                continue
            obs, rss = inspected
            if self._worth_following(obs, rss):
                self._followed[pid] = replace(obs, username=process_user(pid), cwd=process_cwd(pid))
            elif pid in new and now - obs.create_time < self._young_age:
                self._young.add(pid)
        observations = []
        self._listening.begin_poll()
        for pid, obs in list(self._followed.items()):
            listening = self._listening.of(pid)
            if listening is None:  # exited since the PID list was read
                self._followed.pop(pid, None)
                self._deep_at.pop(pid, None)
                continue
            current = replace(obs, listening=listening)
            if now - self._deep_at.get(pid, 0.0) >= self._deep_interval:
                current = self._facts.read(current)
                self._deep_at[pid] = now
            self._followed[pid] = current
            observations.append(current)
        return observations

    def _still_same_program(self, pid: int) -> bool:
        inspected = process_identity(pid)
        followed = self._followed[pid]
        return inspected is not None and (inspected[0].exe, inspected[0].cmdline) == (
            followed.exe,
            followed.cmdline,
        )


def _rss(pid: int) -> int:
    if _LINUX:
        return procfs.rss_bytes(pid)
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (*_GONE, psutil.AccessDenied):
        return 0

"""Process sensor: new processes that may be model runtimes, with their listening sockets.

Cost is what matters on a workstation: each poll lists PIDs (one directory read) and inspects
only PIDs it has not seen before, with one cheap pre-filter (the runtime catalog's
`is_candidate`). Only candidates are followed on every poll (sockets, liveness), and only
they pay for user-name lookups and socket tables. Processes a few seconds old are looked at
once more on the next poll, because a shell or launcher that `exec`s a runtime keeps
its PID but changes its name (catching a late exec needs the kernel's exec events: a later step).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import psutil

from agent.observations import ListeningSocket, ProcessObservation
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus

#: (name, exe, cmdline) -> worth following? Supplied by the runtime catalog.
CandidateFilter = Callable[[str, str, Sequence[str]], bool]

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)


class ProcessSensor(Sensor):
    name = "process"
    capabilities = SensorCapabilities(needs_root=True, platforms=("Linux", "Darwin", "Windows"))

    def __init__(self, is_candidate: CandidateFilter, young_age: float = 5.0) -> None:
        self._is_candidate = is_candidate
        self._young_age = young_age
        self._seen: set[int] = set()
        self._young: set[int] = set()  # non-candidates born just before a poll: look once more
        self._followed: dict[int, ProcessObservation] = {}
        self._self_pid = os.getpid()

    def status(self) -> SensorStatus:
        system = platform.system()
        if system not in self.capabilities.platforms:
            return SensorStatus(self.name, SensorState.INACTIVE, f"unsupported platform {system}")
        if system != "Windows" and os.geteuid() != 0:
            return SensorStatus(
                self.name,
                SensorState.DEGRADED,
                "not root: executables and sockets of other users' processes are hidden",
            )
        return SensorStatus(self.name, SensorState.ACTIVE)

    def poll(self) -> Sequence[ProcessObservation]:
        now = time.time()
        pids = set(psutil.pids())
        for pid in self._seen - pids:
            self._followed.pop(pid, None)
        recheck, self._young = self._young & pids, set()
        new = pids - self._seen
        self._seen = pids
        for pid in (*new, *recheck):
            if pid == self._self_pid or pid in self._followed:
                continue
            obs = _inspect(pid)
            if obs is None:
                continue
            if self._is_candidate(obs.name, obs.exe, obs.cmdline):
                self._followed[pid] = replace(obs, username=_username(pid), cwd=_cwd(pid))
            elif pid in new and now - obs.create_time < self._young_age:
                self._young.add(pid)
        observations = []
        for pid, obs in list(self._followed.items()):
            listening = _listening_sockets(pid)
            if listening is None:  # exited since the PID list was read
                self._followed.pop(pid, None)
                continue
            current = replace(obs, listening=listening)
            self._followed[pid] = current
            observations.append(current)
        return observations


def _inspect(pid: int) -> ProcessObservation | None:
    """Cheap facts of one process, or None when it is gone or hidden."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            name = proc.name()
            ppid = proc.ppid()
            create_time = proc.create_time()
            try:
                exe = proc.exe()
            except psutil.AccessDenied:
                exe = ""
            try:
                cmdline = tuple(proc.cmdline())
            except psutil.AccessDenied:
                cmdline = ()
    except (*_GONE, psutil.AccessDenied):
        return None
    return ProcessObservation(pid, ppid, name, exe, cmdline, "", create_time)


def _username(pid: int) -> str:
    try:
        return psutil.Process(pid).username()
    except (*_GONE, psutil.AccessDenied, KeyError):  # KeyError: uid with no passwd entry
        return ""


def _cwd(pid: int) -> str:
    try:
        return psutil.Process(pid).cwd()
    except (*_GONE, psutil.AccessDenied):
        return ""


def _listening_sockets(pid: int) -> tuple[ListeningSocket, ...] | None:
    """TCP listening sockets of a process; () when hidden from us, None when it is gone."""
    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except _GONE:
        return None
    except psutil.AccessDenied:
        return ()
    found = {
        ListeningSocket(c.laddr.ip, c.laddr.port, "tcp")
        for c in conns
        if c.status == psutil.CONN_LISTEN and c.laddr
    }
    return tuple(sorted(found, key=lambda s: (s.port, s.address)))

"""The sensor interface: every source of observations (process, GPU, network, files) is one.

Like an osquery table, a sensor declares what it produces (its schema: the observation types
`poll()` yields, whose fields are the columns), what it needs and whether it can run here before
it runs, so `umbra-agent status` and the Hello message can say which sensors are active, which
are degraded and why, without trying them. tests/agent/test_sensor_contract.py holds every
sensor to this interface.
"""

from __future__ import annotations

import abc
import enum
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.observations import Observation


class SensorState(enum.Enum):
    ACTIVE = "active"
    DEGRADED = "degraded"  # runs, with less than its full capability (e.g. no root)
    INACTIVE = "inactive"  # cannot run here (no GPU, unsupported OS, disabled)


@dataclass(frozen=True)
class SensorStatus:
    name: str
    state: SensorState
    reason: str = ""


@dataclass(frozen=True)
class SensorCapabilities:
    """What a sensor needs, declared up front."""

    needs_root: bool  # for full capability; without it the sensor may still run degraded
    platforms: tuple[str, ...]  # platform.system() names it supports


class Sensor(abc.ABC):
    """A polled source of observations.

    Lifecycle: `status()` (cheap, no side effects) -> `start()` -> `poll()` repeatedly -> `stop()`.
    Event-driven sensors buffer events between polls and hand them out in `poll()`, so the
    pipeline has one rhythm and one thread model for all sources.
    """

    name: str
    capabilities: SensorCapabilities
    produces: tuple[type[Observation], ...]  # the schema: every observation poll() yields is one of these

    @abc.abstractmethod
    def status(self) -> SensorStatus:
        """Whether the sensor can run here, and if not fully, why."""

    def start(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Acquire resources (sockets, watches). Default: nothing to acquire."""

    @abc.abstractmethod
    def poll(self) -> Sequence[Observation]:
        """Observations since the last poll. Must be bounded in time and memory."""

    def stop(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release resources. Default: nothing to release."""


class SensorThread:
    """A sensor's background thread (a packet reader, a resolver): started once by `start()`,
    told to stop through `stopping`, which its loop watches, and joined by `stop()`."""

    def __init__(self, name: str, join_timeout: float = 2.0) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._join_timeout = join_timeout
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self, loop: Callable[[], None]) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._join_timeout)
            self._thread = None

"""observations -> detection -> policy -> dedupe: one pass over every sensor.

The pipeline owns no I/O of its own; the caller decides where findings go (stdout for
`scan`, the spool for `run`). A sensor that fails is logged once per distinct error and
reported degraded; it never takes the others down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import FindingDraft, FindingTracker
from agent.observations import Observation
from agent.policy.rules import Policy
from agent.sensors.base import Sensor, SensorState, SensorStatus

log = logging.getLogger(__name__)


class Detector(Protocol):
    def detect(self, obs: Observation) -> list[FindingDraft]: ...


@runtime_checkable
class PolicyAware(Protocol):
    """A detector or sensor that reads the policy itself (the network detector's upload threshold,
    the file sensor's watched paths)."""

    def apply_policy(self, policy: Policy) -> None: ...


@runtime_checkable
class PollAware(Protocol):
    """A detector that looks at a sensor's whole poll before its observations one by one (which
    process instances are alive: agent/detection/instances.py)."""

    def begin_poll(self, observations: Sequence[Observation]) -> None: ...


class Pipeline:
    def __init__(
        self,
        sensors: Sequence[Sensor],
        detectors: Sequence[Detector],
        policy: Policy,
        tracker: FindingTracker,
    ) -> None:
        self.sensors = list(sensors)
        self.detectors = list(detectors)
        self.policy = policy
        self.tracker = tracker
        self._failures: dict[str, str] = {}  # sensor name -> last error

    def start(self) -> list[SensorStatus]:
        """Start every sensor that can run here; return all their states."""
        states = []
        for sensor in self.sensors:
            status = sensor.status()
            if status.state is not SensorState.INACTIVE:
                try:
                    sensor.start()
                except Exception as exc:  # one sensor that cannot start must not stop the others
                    log.exception("sensor %s failed to start", sensor.name)
                    self._failures[sensor.name] = f"failed to start: {type(exc).__name__}: {exc}"
                    status = SensorStatus(sensor.name, SensorState.DEGRADED, self._failures[sensor.name])
            states.append(status)
        return states

    def apply_policy(self, policy: Policy) -> None:
        """Put `policy` in force: for judging drafts, and in every detector and sensor that reads it."""
        for part in (*self.detectors, *self.sensors):
            if isinstance(part, PolicyAware):
                part.apply_policy(policy)
        self.policy = policy

    def stop(self) -> None:
        for sensor in self.sensors:
            sensor.stop()

    def statuses(self) -> list[SensorStatus]:
        states = []
        for sensor in self.sensors:
            status = sensor.status()
            if sensor.name in self._failures and status.state is SensorState.ACTIVE:
                status = SensorStatus(sensor.name, SensorState.DEGRADED, self._failures[sensor.name])
            states.append(status)
        return states

    def poll(self, now: float | None = None) -> list[fpb.Finding]:
        """One pass: poll every runnable sensor, return the findings worth sending."""
        out: list[fpb.Finding] = []
        for sensor in self.sensors:
            if sensor.status().state is SensorState.INACTIVE:
                continue
            try:
                observations = sensor.poll()
            except Exception as exc:  # a sensor bug must not stop the agent
                message = f"{type(exc).__name__}: {exc}"
                if self._failures.get(sensor.name) != message:
                    log.exception("sensor %s failed", sensor.name)
                self._failures[sensor.name] = message
                continue
            self._failures.pop(sensor.name, None)
            stamp = time.time() if now is None else now
            for detector in self.detectors:
                if isinstance(detector, PollAware):
                    detector.begin_poll(observations)
            for obs in observations:
                for detector in self.detectors:
                    for draft in detector.detect(obs):
                        finding = self.judge(draft, stamp)
                        if finding is not None:
                            out.append(finding)
        return out

    def judge(self, draft: FindingDraft, now: float) -> fpb.Finding | None:
        """Policy, then dedupe: the finding to send for a draft, or None."""
        decision = self.policy.decide(draft)
        if decision is None:
            return None
        if decision.approved:
            draft.severity = fpb.SEVERITY_INFO
        return self.tracker.observe(draft, decision, now)

"""AGENT_HEALTH findings the collector makes itself: silent hosts, spool drops, degraded sensors.

Each has a fixed id per host, so the store's merge rule keeps one row per condition: the newest
version (by last_seen) is the current state ("silent", then "active" once the host is back).
"""

from __future__ import annotations

import time

from umbra import codec
from umbra.v1 import finding_pb2 as fpb

SILENT_ID = "agent-health:silent"
DROPS_ID = "agent-health:spool-drops"
SENSOR_ID_PREFIX = "agent-health:sensor:"
RULE = "collector:agent-health"


def _finding(
    finding_id: str,
    severity: fpb.Severity.ValueType,
    sensor: str,
    state: str,
    reason: str,
    summary: str,
    now: float,
    count: int = 1,
) -> fpb.Finding:
    f = fpb.Finding(
        id=finding_id,
        kind=fpb.KIND_AGENT_HEALTH,
        severity=severity,
        confidence=1.0,
        summary=summary,
        count=max(1, count),
        evidence=[fpb.Evidence(health=fpb.HealthEvidence(sensor=sensor, state=state, reason=reason))],
        policy=fpb.PolicyDecision(approved=False, rule=RULE),
    )
    f.first_seen.CopyFrom(codec.timestamp(now))
    f.last_seen.CopyFrom(codec.timestamp(now))
    return f


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def silent(last_seen: float, now: float | None = None) -> fpb.Finding:
    now = time.time() if now is None else now
    quiet = max(0.0, now - last_seen)
    since = codec.iso(codec.timestamp(last_seen)) if last_seen > 0 else "never"
    return _finding(
        SILENT_ID,
        fpb.SEVERITY_MEDIUM,
        "agent",
        "silent",
        f"no contact for {_ago(quiet)} (last contact {since})",
        f"Agent silent: no contact for {_ago(quiet)}",
        now,
    )


def back(silent_since: float, now: float | None = None) -> fpb.Finding:
    now = time.time() if now is None else now
    quiet = max(0.0, now - silent_since)
    return _finding(
        SILENT_ID,
        fpb.SEVERITY_INFO,
        "agent",
        "active",
        f"reporting again; it had been marked silent {_ago(quiet)} before",
        "Agent reporting again after being silent",
        now,
    )


def spool_drops(dropped_total: int, now: float | None = None) -> fpb.Finding:
    now = time.time() if now is None else now
    return _finding(
        DROPS_ID,
        fpb.SEVERITY_MEDIUM,
        "spool",
        "degraded",
        f"{dropped_total} findings dropped because the agent's spool was full "
        "(lowest severity, oldest first)",
        f"Agent spool full: {dropped_total} findings dropped",
        now,
        count=dropped_total,
    )


def sensor(name: str, state: str, reason: str, now: float | None = None) -> fpb.Finding:
    now = time.time() if now is None else now
    degraded = state == "degraded"
    return _finding(
        SENSOR_ID_PREFIX + name,
        fpb.SEVERITY_LOW if degraded else fpb.SEVERITY_INFO,
        name,
        state,
        reason,
        f"Sensor {name} {state}" + (f": {reason}" if reason else ""),
        now,
    )

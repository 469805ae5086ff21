"""The agent's own AGENT_HEALTH findings: what its watchdog did (agent/watchdog.py).

One finding per host for the watchdog (its key does not change), so its history reads as one
finding whose state moves: shedding, restarting, back to normal. The collector makes the other
AGENT_HEALTH findings itself (silent hosts, spool drops, degraded sensors: collector/health.py).
"""

from __future__ import annotations

from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import FindingDraft

WATCHDOG_KEY = "watchdog"


def watchdog_draft(state: str, reason: str, occurrence: str) -> FindingDraft:
    """`state` as HealthEvidence says it ("degraded" while work is shed, "active" once back);
    `occurrence` names the episode, so `count` is how many times the watchdog had to act."""
    degraded = state != "active"
    return FindingDraft(
        kind=fpb.KIND_AGENT_HEALTH,
        key=WATCHDOG_KEY,
        severity=fpb.SEVERITY_LOW if degraded else fpb.SEVERITY_INFO,
        confidence=1.0,
        summary=f"Agent watchdog: {reason}",
        occurrence=occurrence,
        evidence=[fpb.Evidence(health=fpb.HealthEvidence(sensor="watchdog", state=state, reason=reason))],
    )

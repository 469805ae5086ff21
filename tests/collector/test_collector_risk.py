"""Risk scoring: pure functions over finding dicts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from umbra import codec

from collector.risk import (
    AT_RISK_LEVEL,
    LEVEL_ORDER,
    SEVERITY_WEIGHTS,
    fleet_risk,
    host_risk,
    level_at_least,
    level_for,
)


def fd(host: str = "h", severity: str = "high", confidence: float = 1.0, approved: bool = False,
       kind: str = "LOCAL_MODEL_RUNTIME") -> dict[str, Any]:  # fmt: skip
    return {
        "host_id": host,
        "severity": severity,
        "confidence": confidence,
        "kind": kind,
        "policy": {"approved": approved, "rule": ""},
    }


def test_no_findings_is_no_risk() -> None:
    r = host_risk("h", [])
    assert (r.score, r.level, r.unapproved) == (0.0, "none", 0)


def test_score_is_weight_times_confidence() -> None:
    r = host_risk("h", [fd(severity="high", confidence=0.5), fd(severity="medium")])
    assert r.score == pytest.approx(SEVERITY_WEIGHTS["high"] * 0.5 + SEVERITY_WEIGHTS["medium"])
    assert r.unapproved == 2
    assert r.by_severity == {"high": 1, "medium": 1}


def test_approved_and_info_findings_add_nothing() -> None:
    r = host_risk("h", [fd(severity="critical", approved=True), fd(severity="info")])
    assert r.score == 0.0
    assert r.level == "none"
    assert r.unapproved == 1  # the info one is unapproved, it just weighs nothing


def test_score_is_capped() -> None:
    r = host_risk("h", [fd(severity="critical")] * 10)
    assert r.score == 100.0
    assert r.level == "critical"


def test_other_hosts_findings_are_ignored() -> None:
    assert host_risk("h", [fd(host="other", severity="critical")]).score == 0.0


def test_levels_rise_with_score() -> None:
    assert level_for(0) == "none"
    assert level_for(2) == "low"
    assert level_for(15) == "medium"
    assert level_for(40) == "high"
    assert level_for(100) == "critical"
    assert level_at_least("high", "medium") and not level_at_least("low", AT_RISK_LEVEL)


@given(
    st.lists(st.tuples(st.sampled_from(codec.SEVERITY_NAMES), st.floats(0, 1), st.booleans()), max_size=30)
)
def test_score_bounds_and_monotonic(items: list[tuple[str, float, bool]]) -> None:
    findings = [fd(severity=s, confidence=c, approved=a) for s, c, a in items]
    r = host_risk("h", findings)
    assert 0.0 <= r.score <= 100.0
    assert r.level in LEVEL_ORDER
    # One more unapproved finding never lowers the score.
    assert host_risk("h", [*findings, fd(severity="low")]).score >= r.score


def test_fleet_summary() -> None:
    findings = [
        fd("a", "critical"),
        fd("a", "high"),
        fd("b", "low", kind="AI_SERVICE_ACCESS"),
        fd("b", "high", approved=True),
    ]
    fleet, per_host = fleet_risk(["a", "b", "c"], findings)
    assert fleet.hosts == 3
    assert per_host["a"].score == 55.0 and per_host["a"].level == "high"
    assert per_host["b"].score == 2.0 and per_host["c"].score == 0.0
    assert fleet.hosts_at_risk == 1
    assert fleet.max_score == 55.0 and fleet.level == "high"
    assert fleet.mean_score == pytest.approx(round(57 / 3, 1))
    assert fleet.findings == 4 and fleet.unapproved == 3
    assert fleet.findings_by_kind == {"LOCAL_MODEL_RUNTIME": 3, "AI_SERVICE_ACCESS": 1}
    assert fleet.findings_by_severity == {"critical": 1, "high": 2, "low": 1}
    assert fleet.hosts_by_level["none"] == 1 and sum(fleet.hosts_by_level.values()) == 3


def test_empty_fleet() -> None:
    fleet, per_host = fleet_risk([], [])
    assert (fleet.hosts, fleet.mean_score, fleet.max_score, fleet.level) == (0, 0.0, 0.0, "none")
    assert per_host == {}

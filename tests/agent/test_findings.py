"""Stable ids, dedupe, first/last seen and count, and when a finding is resent."""

from __future__ import annotations

from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import FindingDraft, FindingTracker, finding_id
from agent.observations import ProcessObservation
from agent.policy.rules import Policy

APPROVE_NOTHING = fpb.PolicyDecision(approved=False, rule="default:unapproved")


def _draft(occurrence: str = "100@1.00", summary: str = "Ollama running") -> FindingDraft:
    proc = ProcessObservation(100, 1, "ollama", "/usr/bin/ollama", ("ollama", "serve"), "alice", 1.0)
    return FindingDraft(
        kind=fpb.KIND_LOCAL_MODEL_RUNTIME,
        key="ollama|/usr/bin/ollama|alice",
        severity=fpb.SEVERITY_MEDIUM,
        confidence=0.9,
        summary=summary,
        occurrence=occurrence,
        subject="ollama",
        user="alice",
        process=proc,
    )


def test_id_is_stable_and_depends_on_host_kind_and_key() -> None:
    a = finding_id("h1", fpb.KIND_LOCAL_MODEL_RUNTIME, "k")
    assert a == finding_id("h1", fpb.KIND_LOCAL_MODEL_RUNTIME, "k")
    assert a != finding_id("h2", fpb.KIND_LOCAL_MODEL_RUNTIME, "k")
    assert a != finding_id("h1", fpb.KIND_MODEL_SERVER_EXPOSED, "k")
    assert a != finding_id("h1", fpb.KIND_LOCAL_MODEL_RUNTIME, "k2")


def test_repeat_sighting_updates_last_seen_without_resending() -> None:
    tracker = FindingTracker("h1", refresh_interval=300)
    first = tracker.observe(_draft(), APPROVE_NOTHING, now=1000.0)
    assert first is not None and first.count == 1
    assert tracker.observe(_draft(), APPROVE_NOTHING, now=1002.0) is None
    (current,) = tracker.current()
    assert current.id == first.id
    assert current.first_seen.seconds == 1000 and current.last_seen.seconds == 1002


def test_new_occurrence_counts_and_is_resent() -> None:
    tracker = FindingTracker("h1")
    tracker.observe(_draft("100@1.00"), APPROVE_NOTHING, now=1000.0)
    again = tracker.observe(_draft("200@50.00"), APPROVE_NOTHING, now=1050.0)
    assert again is not None and again.count == 2 and again.first_seen.seconds == 1000


def test_changed_evidence_or_refresh_interval_resends() -> None:
    tracker = FindingTracker("h1", refresh_interval=60)
    tracker.observe(_draft(), APPROVE_NOTHING, now=1000.0)
    assert (
        tracker.observe(_draft(summary="Ollama running, listening"), APPROVE_NOTHING, now=1001.0) is not None
    )
    assert tracker.observe(_draft(summary="Ollama running, listening"), APPROVE_NOTHING, now=1030.0) is None
    assert (
        tracker.observe(_draft(summary="Ollama running, listening"), APPROVE_NOTHING, now=1062.0) is not None
    )


def test_unsaved_states_are_handed_over_once() -> None:
    tracker = FindingTracker("h1")
    sent = tracker.observe(_draft(), APPROVE_NOTHING, now=1000.0)
    assert sent is not None
    unsaved = tracker.take_unsaved()
    assert set(unsaved) == {sent.id} and unsaved[sent.id].count == 1
    assert tracker.take_unsaved() == {}


def test_policy_approves_runtime_not_exposure_and_floors_confidence() -> None:
    policy = Policy(approved_runtimes=frozenset({"ollama"}), min_confidence=0.5)
    decision = policy.decide(_draft())
    assert decision is not None and decision.approved and decision.rule == "approved_runtimes:ollama"
    exposed = _draft()
    exposed.kind = fpb.KIND_MODEL_SERVER_EXPOSED
    decision = policy.decide(exposed)
    assert decision is not None and not decision.approved
    weak = _draft()
    weak.confidence = 0.3
    assert policy.decide(weak) is None

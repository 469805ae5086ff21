"""Stable ids, dedupe, first/last seen and count, and when a finding is resent."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

from umbra.v1 import finding_pb2 as fpb

from agent.delivery.spool import Spool
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


# --- bounded memory: the tracker forgets what is gone -------------------------------------------


def _passing(key: str) -> FindingDraft:
    """A finding seen once (a flow, a file that comes and goes)."""
    return FindingDraft(
        kind=fpb.KIND_AI_SERVICE_ACCESS,
        key=key,
        severity=fpb.SEVERITY_LOW,
        confidence=0.8,
        summary=f"contact with {key}",
        occurrence=key,
    )


def _held_bytes(tracker: FindingTracker, passing: int, start: float) -> tuple[int, float]:
    """Traced bytes allocated and still held after `passing` findings came and went, one a second
    (the kept runtime seen every ten, the states saved every ten as the daemon does); and the time
    reached."""
    tracemalloc.start()
    try:
        now = start
        for i in range(passing):
            now = start + i
            tracker.observe(_passing(f"host-{start:.0f}-{i}.example"), APPROVE_NOTHING, now)
            if i % 10 == 0:
                tracker.observe(_draft(), APPROVE_NOTHING, now)
                tracker.take_unsaved()
        return tracemalloc.get_traced_memory()[0], now
    finally:
        tracemalloc.stop()


def test_findings_that_come_and_go_are_forgotten_and_memory_stays_flat() -> None:
    tracker = FindingTracker("h1", refresh_interval=60)  # forgets after 180 s unseen
    first = tracker.observe(_draft(), APPROVE_NOTHING, now=1000.0)
    assert first is not None
    small, now = _held_bytes(tracker, 2_000, 1000.0)
    large, now = _held_bytes(tracker, 20_000, now + 1)
    assert large < 2 * small + 256 * 1024, f"ten times the findings held {large} bytes, not {small}"
    assert len(tracker.current()) <= 182, "findings unseen for three refresh intervals are forgotten"
    assert len(tracker) == len(tracker.current())
    kept = next(f for f in tracker.current() if f.id == first.id)
    assert kept.count == 1 and kept.first_seen.seconds == 1000, "a finding still seen is never forgotten"
    assert kept.last_seen.seconds >= now - 10


def test_at_most_max_tracked_findings_are_held_the_least_recently_seen_go_first() -> None:
    tracker = FindingTracker("h1", forget_after=math.inf, max_tracked=100)
    tracker.observe(_draft(), APPROVE_NOTHING, now=1000.0)
    for i in range(1_000):
        tracker.observe(_passing(f"h{i}"), APPROVE_NOTHING, now=1000.0 + i)
        if i % 50 == 0:
            tracker.observe(_draft(), APPROVE_NOTHING, now=1000.0 + i)
    assert len(tracker) == 100
    summaries = {f.summary for f in tracker.current()}
    assert "Ollama running" in summaries, "seen recently: kept"
    assert {f"contact with h{i}" for i in range(901, 1_000)} <= summaries
    assert "contact with h0" not in summaries


def test_a_forgotten_finding_comes_back_from_the_spool_as_if_never_forgotten(tmp_path: Path) -> None:
    """The daemon's tracker reloads a forgotten finding's state from the spool: what it sends is
    what a tracker that forgets nothing sends."""
    spool = Spool(tmp_path / "spool.db")
    forgetful = FindingTracker("h1", refresh_interval=60, state_store=spool)
    keeper = FindingTracker("h1", refresh_interval=60, forget_after=math.inf)

    def both(draft: FindingDraft, now: float) -> fpb.Finding | None:
        sent = forgetful.observe(draft, APPROVE_NOTHING, now)
        assert sent == keeper.observe(draft, APPROVE_NOTHING, now)
        if sent is not None:
            spool.append([sent], 0, forgetful.take_unsaved())
        return sent

    first = both(_draft("100@1.00"), 1000.0)
    assert first is not None
    assert both(_draft("100@1.00"), 1010.0) is None
    assert both(_draft("200@2.00"), 1020.0) is not None
    for i in range(50):  # other findings come and go for half an hour: ours is forgotten
        both(_passing(f"h{i}"), 1100.0 + i * 40)
    assert first.id not in {f.id for f in forgetful.current()}
    assert both(_draft("200@2.00"), 3100.0) is not None  # refresh due: resent, the same on both
    again = both(_draft("300@3.00"), 3110.0)
    assert again is not None and again.count == 3 and again.first_seen.seconds == 1000
    assert both(_draft("300@3.00"), 3120.0) is None
    spool.close()


def test_a_finding_pushed_out_before_its_state_was_saved_keeps_its_count() -> None:
    """Evicted by the cap between observe and take_unsaved (the state is not in the spool yet)."""
    tracker = FindingTracker("h1", max_tracked=1)
    tracker.observe(_draft("100@1.00"), APPROVE_NOTHING, now=1000.0)
    tracker.observe(_passing("h1"), APPROVE_NOTHING, now=1001.0)
    assert len(tracker) == 1
    again = tracker.observe(_draft("200@2.00"), APPROVE_NOTHING, now=1002.0)
    assert again is not None and again.count == 2 and again.first_seen.seconds == 1000

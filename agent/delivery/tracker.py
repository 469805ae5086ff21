"""Findings: stable ids, deduplication, first/last seen and count.

A detector describes what it saw as a `FindingDraft` with a dedupe key; the `FindingTracker`
turns drafts into wire `Finding`s. The same thing seen again (the same runtime by the same
user, the same exposed port) keeps its id; `count` is the number of distinct occurrences
(process instances, flows), `last_seen` moves while it is still there. Instances alive at the
same time are not separate findings: the draft lists them all (agent/detection/instances.py).
The tracker says when a finding is worth sending again: new, changed, a new occurrence, or
still active after `refresh_interval` seconds; otherwise it stays quiet, so a long-lived
runtime does not flood the spool.

Memory is bounded: a finding not seen for `forget_after` seconds (three refresh intervals by
default) is forgotten, and at most `max_tracked` findings are held, the least recently seen
going first. Forgetting changes nothing the collector sees: the daemon's tracker reloads a
forgotten finding's state (first seen, count, occurrences, last sent) from the spool, which
saved it when the finding was last sent, and everything but `last_seen` changes only with a send.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from agent.detection.evidence import process_message
from agent.observations import ProcessObservation

MAX_REMEMBERED_OCCURRENCES = 32  # bounds memory per finding; above detection.instances.MAX_LISTED
FORGET_AFTER_REFRESHES = 3  # a finding unseen this many refresh intervals is dropped from memory
MAX_TRACKED = 100_000  # findings held in memory at once (a few KiB each)
MAX_UNSAVED = 100_000  # states of sent findings waiting for `take_unsaved` (the daemon's next append)


def finding_id(host_id: str, kind: int, key: str) -> str:
    """Stable across scans, restarts and hosts' agents: the collector's idempotency key."""
    digest = hashlib.sha256(f"{host_id}\x1f{codec.kind_name(kind)}\x1f{key}".encode()).hexdigest()
    return digest[:32]


@dataclass
class FindingDraft:
    """What a detector concluded from one observation, before dedupe."""

    kind: fpb.FindingKind.ValueType
    key: str  # dedupe key within the kind, e.g. "ollama|/usr/bin/ollama|alice"
    severity: fpb.Severity.ValueType
    confidence: float
    summary: str
    occurrence: str  # distinguishes occurrences of the same finding (a process instance)
    subject: str = ""  # what policy rules match on (a runtime id, a service, a hash)
    user: str = ""
    process: ProcessObservation | None = None
    evidence: list[fpb.Evidence] = field(default_factory=list)


@dataclass
class TrackedState:
    first_seen: float
    last_seen: float
    count: int
    occurrences: list[str]
    last_sent: float
    fingerprint: str


class FindingStateStore(Protocol):
    """Where tracked state survives restarts (the spool: it saves the state of sent findings
    in the same transaction as the findings, so a crash cannot separate the two)."""

    def load_state(self, finding_id: str) -> TrackedState | None: ...


class FindingTracker:
    def __init__(
        self,
        host_id: str,
        refresh_interval: float = 300.0,
        state_store: FindingStateStore | None = None,
        *,
        forget_after: float | None = None,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        """forget_after: seconds unseen before a finding is forgotten (None: three refresh
        intervals; math.inf: only `max_tracked` bounds memory, for a scan that reports all it saw)."""
        self.host_id = host_id
        self.refresh_interval = refresh_interval
        if forget_after is None:
            forget_after = FORGET_AFTER_REFRESHES * refresh_interval
        self.forget_after = forget_after
        self.max_tracked = max(max_tracked, 1)
        self._store = state_store
        # Both in order of last sighting, least recent first, so forgetting looks at the front only.
        self._states: dict[str, TrackedState] = {}
        self._latest: dict[str, fpb.Finding] = {}
        self._unsaved: dict[str, TrackedState] = {}

    def observe(self, draft: FindingDraft, decision: fpb.PolicyDecision, now: float) -> fpb.Finding | None:
        """Record a sighting; return the finding when it should be (re)sent, else None."""
        fid = finding_id(self.host_id, draft.kind, draft.key)
        finding = fpb.Finding(
            id=fid,
            kind=draft.kind,
            severity=draft.severity,
            confidence=round(min(max(draft.confidence, 0.0), 1.0), 3),
            host_id=self.host_id,
            user=draft.user,
            evidence=draft.evidence,
            policy=decision,
            summary=draft.summary,
        )
        if draft.process is not None:
            finding.process.CopyFrom(process_message(draft.process))
        fingerprint = _fingerprint(finding)

        state = self._states.pop(fid, None) or self._unsaved.get(fid)  # unsaved: not in the store yet
        if state is None and self._store is not None:
            state = self._store.load_state(fid)
        send = False
        if state is None:
            state = TrackedState(now, now, 1, [draft.occurrence], now, fingerprint)
            send = True
        else:
            state.last_seen = max(state.last_seen, now)
            if draft.occurrence not in state.occurrences:
                state.count += 1
                state.occurrences = [*state.occurrences, draft.occurrence][-MAX_REMEMBERED_OCCURRENCES:]
                send = True
            if fingerprint != state.fingerprint:
                state.fingerprint = fingerprint
                send = True
            if now - state.last_sent >= self.refresh_interval:
                send = True
        finding.first_seen.CopyFrom(codec.timestamp(state.first_seen))
        finding.last_seen.CopyFrom(codec.timestamp(state.last_seen))
        finding.count = state.count
        self._states[fid] = state
        self._latest.pop(fid, None)
        self._latest[fid] = finding
        self._forget(now)
        if send:
            state.last_sent = now
            self._unsaved.pop(fid, None)
            self._unsaved[fid] = state
            if len(self._unsaved) > MAX_UNSAVED:  # nobody takes them (a scan): keep the newest
                del self._unsaved[next(iter(self._unsaved))]
            return finding
        return None

    def _forget(self, now: float) -> None:
        """Drop the least recently seen findings while they are stale or too many."""
        horizon = now - self.forget_after
        states = self._states
        while states:
            fid, oldest = next(iter(states.items()))
            if len(states) <= self.max_tracked and oldest.last_seen >= horizon:
                return
            del states[fid]
            del self._latest[fid]

    def __len__(self) -> int:
        """How many findings are held in memory."""
        return len(self._states)

    def take_unsaved(self) -> dict[str, TrackedState]:
        """States of the findings returned since the last call, to persist with them."""
        unsaved, self._unsaved = self._unsaved, {}
        return unsaved

    def current(self) -> Sequence[fpb.Finding]:
        """The newest version of every finding this tracker holds (for one-pass scans): every one
        seen, unless forgotten (see `forget_after`, `max_tracked`)."""
        return list(self._latest.values())


#: What makes a finding 'changed': its evidence and judgement, not its timestamps, count or process.
_CHANGED_BY = ("kind", "severity", "confidence", "evidence", "policy", "summary")


def _fingerprint(finding: fpb.Finding) -> str:
    material = fpb.Finding(**{name: getattr(finding, name) for name in _CHANGED_BY})
    return hashlib.sha256(material.SerializeToString(deterministic=True)).hexdigest()[:16]

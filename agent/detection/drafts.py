"""A finding about one process instance, as the process-based detectors (runtime, GPU workload,
fine-tuning) each draft it: the instance is the occurrence, the process's user the finding's."""

from __future__ import annotations

from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import FindingDraft
from agent.observations import ProcessObservation


def process_draft(
    proc: ProcessObservation,
    kind: fpb.FindingKind.ValueType,
    key: str,
    severity: fpb.Severity.ValueType,
    confidence: float,
    summary: str,
    evidence: list[fpb.Evidence],
    subject: str = "",
) -> FindingDraft:
    return FindingDraft(
        kind, key, severity, confidence, summary, proc.instance_key, subject, proc.username, proc, evidence
    )

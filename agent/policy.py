"""Policy: which findings are approved, and by which rule.

Rules are data (the config file now; pushed by the collector in a later issue). An approved
finding is still recorded, at info severity, with the rule that approved it, so the analyst
sees both what runs and why it is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from umbra.v1 import finding_pb2 as fpb

from agent.findings import FindingDraft

DEFAULT_RULE = "default:unapproved"


@dataclass(frozen=True)
class Policy:
    version: int = 0
    approved_runtimes: frozenset[str] = frozenset()
    min_confidence: float = 0.5  # drafts below this are not findings

    def decide(self, draft: FindingDraft) -> fpb.PolicyDecision | None:
        """The decision for a draft; None when the draft is below the confidence floor."""
        if draft.confidence < self.min_confidence:
            return None
        # Approving a runtime approves running it, not exposing it to the network.
        if draft.kind == fpb.KIND_LOCAL_MODEL_RUNTIME and draft.subject in self.approved_runtimes:
            return fpb.PolicyDecision(approved=True, rule=f"approved_runtimes:{draft.subject}")
        return fpb.PolicyDecision(approved=False, rule=DEFAULT_RULE)

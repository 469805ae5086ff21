"""Policy: which findings are approved, and by which rule.

Rules are data (the config file now; pushed by the collector in a later issue). An approved
finding is still recorded, at info severity, with the rule that approved it, so the analyst
sees both what runs and why it is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import EndpointCatalog
from agent.findings import FindingDraft

DEFAULT_RULE = "default:unapproved"
_SERVICE_KINDS = (fpb.KIND_AI_SERVICE_ACCESS, fpb.KIND_AI_DATA_UPLOAD)


@dataclass(frozen=True)
class Policy:
    version: int = 0
    approved_runtimes: frozenset[str] = frozenset()
    approved_services: frozenset[str] = frozenset()  # endpoint catalog service ids or vendor slugs
    min_confidence: float = 0.5  # drafts below this are not findings
    upload_threshold_bytes: int = 1_000_000  # AI_DATA_UPLOAD above this, to unapproved services
    endpoints: EndpointCatalog | None = None  # resolves a service's vendor for approvals by vendor

    def decide(self, draft: FindingDraft) -> fpb.PolicyDecision | None:
        """The decision for a draft; None when the draft is below the confidence floor."""
        if draft.confidence < self.min_confidence:
            return None
        # Approving a runtime approves running it, not exposing it to the network.
        if draft.kind == fpb.KIND_LOCAL_MODEL_RUNTIME and draft.subject in self.approved_runtimes:
            return fpb.PolicyDecision(approved=True, rule=f"approved_runtimes:{draft.subject}")
        if draft.kind in _SERVICE_KINDS and self.endpoints is not None:
            entry = self.endpoints.get(draft.subject)
            rule = self.endpoints.approval_rule(entry, self.approved_services) if entry else None
            if rule is not None:
                return fpb.PolicyDecision(approved=True, rule=rule)
        return fpb.PolicyDecision(approved=False, rule=DEFAULT_RULE)

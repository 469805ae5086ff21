"""Policy: which findings are approved, and by which rule.

Rules are data: the config file's `[policy]`, replaced by the one the collector pushes
(agent/policy/fleet.py). An approved finding is still recorded, at info severity, with the rule
that approved it, so the analyst sees both what runs and why it is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from umbra.v1 import finding_pb2 as fpb

from agent.catalog.endpoints import EndpointCatalog, load_endpoint_catalog
from agent.catalog.runtimes import default_runtime_catalog
from agent.config import AgentConfig, ConfigError
from agent.delivery.tracker import FindingDraft

DEFAULT_RULE = "default:unapproved"
_SERVICE_KINDS = (fpb.KIND_AI_SERVICE_ACCESS, fpb.KIND_AI_DATA_UPLOAD)
_MODEL_KINDS = (fpb.KIND_MODEL_ARTIFACT, fpb.KIND_MODEL_DOWNLOAD, fpb.KIND_MODEL_EXFILTRATION)


@dataclass(frozen=True)
class Policy:
    version: int = 0
    approved_runtimes: frozenset[str] = frozenset()
    approved_services: frozenset[str] = frozenset()  # endpoint catalog service ids or vendor slugs
    min_confidence: float = 0.5  # drafts below this are not findings
    upload_threshold_bytes: int = 1_000_000  # AI_DATA_UPLOAD above this, to unapproved services
    endpoints: EndpointCatalog | None = None  # resolves a service's vendor for approvals by vendor
    approved_model_hashes: frozenset[str] = frozenset()  # SHA-256 (lower-case hex) of approved weights
    approved_paths: tuple[str, ...] = ()  # directories whose models (and copies into them) are approved
    watched_paths: tuple[str, ...] = ()  # directories the collector asks the file sensor to watch too
    approved_agents: frozenset[str] = frozenset()  # AI agent catalog ids
    approved_mcp_servers: frozenset[str] = frozenset()  # MCP server names, packages, remote hosts
    approved_extensions: frozenset[str] = frozenset()  # extension ids or AI extension catalog ids

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
        ai_rule = self._ai_tool_rule(draft)
        if ai_rule is not None:
            return fpb.PolicyDecision(approved=True, rule=ai_rule)
        if draft.kind in _MODEL_KINDS:  # see agent/detection/artifacts.py
            model_rule = self._model_rule(draft)
            if model_rule is not None:
                return fpb.PolicyDecision(approved=True, rule=model_rule)
        return fpb.PolicyDecision(approved=False, rule=DEFAULT_RULE)

    def _ai_tool_rule(self, draft: FindingDraft) -> str | None:
        """An agent by catalog id; an MCP server by its name, package or remote host; an
        extension by its id or catalog id (see agent/detection/aitools.py)."""
        if draft.kind == fpb.KIND_AI_AGENT and draft.subject in self.approved_agents:
            return f"approved_agents:{draft.subject}"
        for ev in draft.evidence:
            which = ev.WhichOneof("detail")
            if which == "mcp_server" and draft.kind == fpb.KIND_MCP_SERVER:
                m = ev.mcp_server
                for value in (m.name, m.package):
                    if value and value in self.approved_mcp_servers:
                        return f"approved_mcp_servers:{value}"
                if m.remote_host and mcp_host_approved(self, m.remote_host):
                    return f"approved_mcp_servers:{m.remote_host}"
            if which == "ai_extension" and draft.kind == fpb.KIND_AI_EXTENSION:
                x = ev.ai_extension
                for value in (x.extension_id, x.extension_id.lower(), x.catalog_id):
                    if value and value in self.approved_extensions:
                        return f"approved_extensions:{value}"
        return None

    def _model_rule(self, draft: FindingDraft) -> str | None:
        """An approved hash approves the weights anywhere; an approved directory approves the files
        below it, and an exfiltration only when its destination is below it."""
        if draft.subject and draft.subject.lower() in self.approved_model_hashes:
            return f"approved_model_hashes:{draft.subject.lower()}"
        for ev in draft.evidence:
            which = ev.WhichOneof("detail")
            if which == "transfer" and draft.kind == fpb.KIND_MODEL_EXFILTRATION:
                path = ev.transfer.destination
            elif which == "model_file" and draft.kind != fpb.KIND_MODEL_EXFILTRATION:
                path = ev.model_file.path
            else:
                continue
            for folder in self.approved_paths:
                base = folder.rstrip("/") or "/"
                if path == base or path.startswith(base if base == "/" else base + "/"):
                    return f"approved_paths:{folder}"
        return None


def mcp_host_approved(policy: Policy, host: str) -> bool:
    """A remote MCP host ("mcp.example.com" or "mcp.example.com:8443") the policy approves: by its
    name with or without the port, or by a "*.example.com" pattern."""
    name = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    for approved in policy.approved_mcp_servers:
        a = approved.lower()
        if a in (host.lower(), name) or (a.startswith("*.") and name.endswith(a[1:])):
            return True
    return False


def policy_from_config(config: AgentConfig) -> Policy:
    """The local policy from the config file (a policy the collector pushes replaces it)."""
    catalog = config.sensors.network.catalog
    endpoints = load_endpoint_catalog(user_path=Path(catalog) if catalog else None)
    unknown = endpoints.unknown_approvals(config.policy.approved_services)
    if unknown:
        raise ConfigError(
            f"[policy] approved_services: {unknown[0]!r} is no service id or vendor in the catalog"
        )
    runtimes = default_runtime_catalog()
    unknown = sorted(r for r in config.policy.approved_runtimes if runtimes.get(r) is None)
    if unknown:
        raise ConfigError(
            f"[policy] approved_runtimes: {unknown[0]!r} is no runtime id in the catalog "
            "(agent/catalog/runtimes.toml, e.g. 'ollama', 'llama-cpp', 'vllm')"
        )
    from agent.catalog.aitools import default_aitools_catalog  # the AI tooling catalog, only when used

    agent_ids = {a.id for a in default_aitools_catalog().agents}
    unknown_agents = sorted(set(config.policy.approved_agents) - agent_ids)
    if unknown_agents:
        raise ConfigError(f"[policy] approved_agents: {unknown_agents[0]!r} is no agent id in the catalog")
    return Policy(
        approved_runtimes=frozenset(config.policy.approved_runtimes),
        approved_services=frozenset(config.policy.approved_services),
        min_confidence=config.policy.min_confidence,
        upload_threshold_bytes=config.policy.upload_threshold_bytes,
        endpoints=endpoints,
        approved_model_hashes=frozenset(h.lower() for h in config.policy.approved_model_hashes),
        approved_paths=config.policy.approved_paths,
        approved_agents=frozenset(config.policy.approved_agents),
        approved_mcp_servers=frozenset(config.policy.approved_mcp_servers),
        approved_extensions=frozenset(config.policy.approved_extensions),
    )

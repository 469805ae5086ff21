"""AI tooling observations -> AI_AGENT, MCP_SERVER and AI_EXTENSION drafts (no I/O).

Severity is data (the catalog's [risk] table): an agent running weighs more than one installed;
an MCP server with filesystem, shell or database access, or one at a remote host the policy does
not approve, is "risky"; an extension with broad permissions (<all_urls>, nativeMessaging) too.
Approval itself is the policy's (agent/policy/rules.py): the draft's subject is the agent id, the
server's name or the extension id, and the evidence carries the package and host it also matches.
"""

from __future__ import annotations

from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.aitools import AiToolsCatalog, default_aitools_catalog, mcp_package_name
from agent.delivery.tracker import FindingDraft
from agent.detection import evidence
from agent.observations import (
    AiAgentObservation,
    AiExtensionObservation,
    McpServerObservation,
    Observation,
)
from agent.policy.rules import Policy, mcp_host_approved

_SOURCE_WORDS = {
    "npm_global": "installed (npm, global)",
    "path": "installed (on the PATH)",
    "app": "installed (application)",
    "editor_extension": "installed (editor extension)",
}


class AiToolsDetector:
    def __init__(self, catalog: AiToolsCatalog | None = None, policy: Policy | None = None) -> None:
        self.catalog = catalog or default_aitools_catalog()
        self._policy = policy or Policy()

    def apply_policy(self, policy: Policy) -> None:
        self._policy = policy

    def detect(self, obs: Observation) -> list[FindingDraft]:
        if isinstance(obs, AiAgentObservation):
            return self._agent(obs)
        if isinstance(obs, McpServerObservation):
            return self._mcp(obs)
        if isinstance(obs, AiExtensionObservation):
            return self._extension(obs)
        return []

    def _agent(self, obs: AiAgentObservation) -> list[FindingDraft]:
        entry = self.catalog.agent(obs.agent_id)
        if entry is None:
            return []
        risk = self.catalog.risk
        ev = [evidence.ai_agent_evidence(obs, entry)]
        version = f" {obs.version}" if obs.version else ""
        if obs.process is not None:
            proc = obs.process
            started = f", started MCP servers: {', '.join(obs.mcp_children)}" if obs.mcp_children else ""
            summary = f"{entry.name}{version} running as {proc.username or '?'} (pid {proc.pid}){started}"
            ev.append(evidence.instance_evidence(proc))
            return [
                FindingDraft(
                    fpb.KIND_AI_AGENT,
                    f"running|{entry.id}|{proc.username}",
                    codec.severity_value(risk.agent_running),
                    0.95,
                    summary,
                    proc.instance_key,
                    entry.id,
                    proc.username,
                    proc,
                    ev,
                )
            ]
        how = _SOURCE_WORDS.get(obs.source, "installed")
        return [
            FindingDraft(
                fpb.KIND_AI_AGENT,
                f"installed|{entry.id}|{obs.path}",
                codec.severity_value(risk.agent_installed),
                0.9,
                f"{entry.name}{version} {how} at {obs.path}",
                obs.path,
                entry.id,
                obs.owner,
                None,
                ev,
            )
        ]

    def _mcp(self, obs: McpServerObservation) -> list[FindingDraft]:
        risk = self.catalog.risk
        access, package_id = self.catalog.mcp_access([obs.command, *obs.args, obs.remote_host, obs.name])
        package = mcp_package_name([obs.command, *obs.args]) or package_id
        access_list = list(access)
        if obs.remote_host and "remote" not in access_list:
            access_list.append("remote")
        risky = bool(set(access) & risk.risky_access)
        remote_unapproved = bool(obs.remote_host) and not mcp_host_approved(self._policy, obs.remote_host)
        if obs.disabled:
            severity = "info"
        elif risky or remote_unapproved:
            severity = risk.mcp_risky
        else:
            severity = risk.mcp_running if obs.process is not None else risk.mcp_configured
        ev = [evidence.mcp_server_evidence(obs, access_list, package)]
        what = obs.remote_host or " ".join((obs.command, *obs.args[:4])).strip()
        reach = f" with {', '.join(access)} access" if access else ""
        if obs.process is not None:
            proc = obs.process
            ev.append(evidence.instance_evidence(proc))
            by = ""
            if obs.parent is not None:
                agent = self.catalog.agent(obs.client)
                by = f", started by {agent.name if agent else obs.client} (pid {obs.parent.pid})"
            return [
                FindingDraft(
                    fpb.KIND_MCP_SERVER,
                    f"running|{obs.name}|{proc.username}|{obs.client}",
                    codec.severity_value(severity),
                    0.85,
                    f"MCP server {obs.name} running (pid {proc.pid}){reach}{by}",
                    proc.instance_key,
                    obs.name,
                    proc.username,
                    proc,
                    ev,
                )
            ]
        client = next((c for c in self.catalog.clients if c.id == obs.client), None)
        off = " (disabled)" if obs.disabled else ""
        return [
            FindingDraft(
                fpb.KIND_MCP_SERVER,
                f"config|{obs.client}|{obs.config_path}|{obs.name}",
                codec.severity_value(severity),
                0.9,
                f"MCP server '{obs.name}' configured in {client.name if client else obs.client}{off}: "
                f"{obs.transport or '?'} {what}{reach}",
                obs.content_hash,  # a changed entry is a new occurrence
                obs.name,
                obs.owner,
                None,
                ev,
            )
        ]

    def _extension(self, obs: AiExtensionObservation) -> list[FindingDraft]:
        entry = self.catalog.extension(obs.extension_id)
        if entry is None:
            return []
        risk = self.catalog.risk
        broad = sorted(set(obs.permissions) & risk.risky_permissions)
        severity = risk.extension_risky if broad else risk.extension
        note = f", permissions {', '.join(broad)}" if broad else ""
        version = f" {obs.version}" if obs.version else ""
        return [
            FindingDraft(
                fpb.KIND_AI_EXTENSION,
                f"{obs.application}|{obs.path}|{obs.extension_id}",
                codec.severity_value(severity),
                0.95,
                f"{obs.name or entry.name}{version} in {obs.application} ({obs.profile}){note}",
                obs.version,
                obs.extension_id,
                obs.owner,
                None,
                [evidence.ai_extension_evidence(obs, entry)],
            )
        ]

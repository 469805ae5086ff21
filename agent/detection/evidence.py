"""Where observations become wire messages: one builder per evidence type, and the process.

Detectors decide what a finding is; what its evidence says about a process, a socket, a GPU,
a model file, a flow or a transfer is written here once, so two findings about the same thing
describe it the same way (the console groups and diffs them by these fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from umbra import codec
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.aitools import AgentEntry, ExtensionEntry
from agent.catalog.endpoints import EndpointEntry
from agent.observations import (
    AiAgentObservation,
    AiExtensionObservation,
    ListeningSocket,
    McpServerObservation,
    ModelFileObservation,
    ModelTransferObservation,
    NetworkObservation,
    ProcessObservation,
)

if TYPE_CHECKING:  # the type only: the parsers stay out of `scan --pcap`'s start-up
    from agent.modelfiles import ModelFileInfo

__all__ = [
    "ai_agent_evidence",
    "ai_extension_evidence",
    "gpu_evidence",
    "hub_evidence",
    "instance_evidence",
    "mcp_server_evidence",
    "model_file",
    "model_file_evidence",
    "network_evidence",
    "process_message",
    "runtime_evidence",
    "socket_evidence",
    "training_artifact_evidence",
    "transfer_evidence",
]


def process_message(obs: ProcessObservation) -> fpb.Process:
    """The finding's process: identity facts only (the deep facts go in its runtime evidence)."""
    return fpb.Process(
        pid=obs.pid,
        ppid=obs.ppid,
        name=obs.name,
        exe=obs.exe,
        cmdline=list(obs.cmdline),
        username=obs.username,
        start_time=codec.timestamp(obs.create_time),
    )


def runtime_evidence(
    obs: ProcessObservation,
    runtime_id: str,
    runtime_name: str,
    matched_on: Sequence[str],
    reasons: Sequence[str],
    *,
    libraries: Sequence[str] | None = None,
    key_names: bool = True,
) -> fpb.Evidence:
    """What a process-based finding says about the process: why it matched, and its AI facts.

    `libraries` narrows the mapped libraries reported (a GPU finding names the AI ones only);
    `key_names` False leaves the API-key variable names out (not read for GPU processes)."""
    return fpb.Evidence(
        runtime=fpb.RuntimeEvidence(
            runtime_id=runtime_id,
            runtime_name=runtime_name,
            matched_on=list(matched_on),
            reasons=list(reasons),
            libraries=list(obs.libraries if libraries is None else libraries),
            model_files=list(obs.model_files),
            api_key_env_names=list(obs.env_key_names) if key_names else [],
        )
    )


def instance_evidence(obs: ProcessObservation) -> fpb.Evidence:
    """One live instance of a finding's program: the process, where it listens, what weights it holds."""
    return fpb.Evidence(
        instance=fpb.InstanceEvidence(
            process=process_message(obs),
            listening=[socket_evidence(s).socket for s in obs.listening],
            model_files=list(obs.model_files),
        )
    )


def socket_evidence(sock: ListeningSocket) -> fpb.Evidence:
    return fpb.Evidence(
        socket=fpb.SocketEvidence(
            address=sock.address, port=sock.port, transport=sock.transport, exposed=sock.exposed
        )
    )


def gpu_evidence(
    index: int, name: str, memory: int, sm: int, libraries: Sequence[str], uuid: str = "", context: str = ""
) -> fpb.Evidence:
    """One GPU's share of a workload: its (coarsened) peak memory and SM use, and the AI libraries."""
    return fpb.Evidence(
        gpu=fpb.GpuEvidence(
            gpu_index=index,
            gpu_name=name,
            memory_used_bytes=memory,
            sm_utilization_percent=sm,
            ai_libraries=list(libraries),
            gpu_uuid=uuid,
            context=context,
        )
    )


def model_file(
    path: str,
    fmt: str,
    *,
    size_bytes: int = 0,
    sha256: str = "",
    architecture: str | None = None,
    parameter_count: int | None = None,
    quantization: str | None = None,
    model_name: str | None = None,
    reasons: Sequence[str] = (),
) -> fpb.ModelFileEvidence:
    """The model-file message (evidence, and the file sensor's inventory); None is unknown."""
    return fpb.ModelFileEvidence(
        reasons=list(reasons),
        path=path,
        format=fmt,
        size_bytes=size_bytes,
        sha256=sha256,
        architecture=architecture or "",
        parameter_count=parameter_count or 0,
        quantization=quantization or "",
        model_name=model_name or "",
    )


def model_file_evidence(model: ModelFileInfo | ModelFileObservation) -> fpb.Evidence:
    """Weights as their header describes them: held by a process (info) or found on disk (with a hash)."""
    return fpb.Evidence(
        model_file=model_file(
            model.path,
            model.format,
            size_bytes=model.size_bytes,
            sha256=model.sha256 if isinstance(model, ModelFileObservation) else "",
            architecture=model.architecture,
            parameter_count=model.parameter_count,
            quantization=model.quantization,
            model_name=model.model_name,
            reasons=model.reasons if isinstance(model, ModelFileObservation) else (),
        )
    )


def training_artifact_evidence(path: str, label: str) -> fpb.Evidence:
    """A training artifact a process wrote: its path and kind (lora_adapter, trainer_checkpoint ...)."""
    return fpb.Evidence(model_file=model_file(path, label))


def transfer_evidence(obs: ModelTransferObservation) -> list[fpb.Evidence]:
    """Weights leaving their place: the transfer (how the bytes are known to be weights, and how
    its source is known), and the weights at their new place: for an archive, its entry, named
    as a jar: URL names one (ARCHIVE!/ENTRY)."""
    inside = f"{obs.destination}!/{obs.member}" if obs.member else obs.source_path or obs.destination
    return [
        fpb.Evidence(
            transfer=fpb.TransferEvidence(
                source_path=obs.source_path,
                destination=obs.destination,
                destination_kind=obs.kind,
                sha256=obs.sha256,
                size_bytes=obs.size_bytes,
                identified_by=obs.identified_by,
                archive_member=obs.member,
                source_known_by=obs.source_known_by,
            )
        ),
        fpb.Evidence(
            model_file=model_file(
                obs.destination if obs.kind != "archive" else inside,
                obs.format,
                size_bytes=obs.size_bytes,
                sha256=obs.sha256,
                model_name=obs.model_name,
                reasons=obs.reasons,
            )
        ),
    ]


def network_evidence(obs: NetworkObservation, entry: EndpointEntry | None) -> fpb.Evidence:
    """A flow to a catalogued AI service (or, entry None, to a host an Encrypted Client Hello hid):
    the name, where it came from, and the bytes each way."""
    return fpb.Evidence(
        network=fpb.NetworkEvidence(
            host_name=obs.host_name,
            vendor=entry.vendor if entry else "",
            product=entry.product if entry else "",
            category=entry.category if entry else "ech_hidden",
            source=obs.source,
            remote_address=obs.server_ip,
            remote_port=obs.server_port,
            bytes_out=obs.bytes_out,
            bytes_in=obs.bytes_in,
            bytes_source=obs.bytes_source,
            capture_drops=obs.capture_drops,
        )
    )


def hub_evidence(obs: ModelFileObservation) -> fpb.Evidence | None:
    """Where downloaded weights came from, as network evidence (known from the file's place in a
    hub cache, not from a flow); None when the hub is not known."""
    if not obs.hub:
        return None
    host, _, repo = obs.hub.partition("/")
    return fpb.Evidence(
        network=fpb.NetworkEvidence(
            host_name=host,
            product=repo,
            category="model_hub",
            source="file_location",
            bytes_in=obs.size_bytes,
        )
    )


def ai_agent_evidence(obs: AiAgentObservation, entry: AgentEntry) -> fpb.Evidence:
    """An AI agent: which one, how it was found (running, or where it is installed), its version."""
    return fpb.Evidence(
        ai_agent=fpb.AiAgentEvidence(
            agent_id=entry.id,
            agent_name=entry.name,
            vendor=entry.vendor,
            source=obs.source,
            install_path=obs.path,
            version=obs.version,
            services=list(entry.services),
            mcp_servers=list(obs.mcp_children),
            home=obs.home,
        )
    )


def mcp_server_evidence(obs: McpServerObservation, access: Sequence[str], package: str) -> fpb.Evidence:
    """An MCP server as configured or running: names of its variables and headers, never values."""
    return fpb.Evidence(
        mcp_server=fpb.McpServerEvidence(
            name=obs.name,
            client=obs.client,
            config_path=obs.config_path,
            scope=obs.scope,
            transport=obs.transport,
            command=obs.command,
            args=list(obs.args),
            remote_host=obs.remote_host,
            env_names=list(obs.env_names),
            header_names=list(obs.header_names),
            package=package,
            access=list(access),
            content_hash=obs.content_hash,
            disabled=obs.disabled,
        )
    )


def ai_extension_evidence(obs: AiExtensionObservation, entry: ExtensionEntry) -> fpb.Evidence:
    return fpb.Evidence(
        ai_extension=fpb.AiExtensionEvidence(
            application=obs.application,
            profile=obs.profile,
            extension_id=obs.extension_id,
            name=obs.name or entry.name,
            version=obs.version,
            permissions=list(obs.permissions),
            vendor=entry.vendor,
            catalog_id=entry.id,
            path=obs.path,
        )
    )

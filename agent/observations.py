"""Observations: what sensors saw, before any judgement.

Sensors produce observations; detection (catalog + policy) turns them into findings. Keeping
the two apart lets detection be tested on hand-built observations and sensors be tested on
the real OS.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the type only: importing the parsers costs `scan --pcap` a third of its start-up
    from agent.modelfiles import ModelFileInfo


@dataclass(frozen=True)
class ListeningSocket:
    address: str
    port: int
    transport: str = "tcp"

    @property
    def exposed(self) -> bool:
        """True when the socket accepts connections from beyond this host's loopback."""
        host = self.address.split("%", 1)[0]  # drop an IPv6 zone id
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True  # an address we cannot parse is not provably loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ProcessObservation:
    """One process, as the process sensor saw it (metadata only, never memory contents)."""

    pid: int
    ppid: int
    name: str
    exe: str
    cmdline: tuple[str, ...]
    username: str
    create_time: float
    listening: tuple[ListeningSocket, ...] = field(default=())
    cwd: str = ""  # read for candidates only: `python main.py` means nothing without it
    # Deeper evidence, read for candidates only (never per poll for every process):
    libraries: tuple[str, ...] = ()  # basenames of AI-relevant shared libraries mapped (/proc/PID/maps)
    model_files: tuple[str, ...] = ()  # mapped or open files that are model weights (paths)
    models: tuple[ModelFileInfo, ...] = ()  # the same files, as their headers describe them
    written_files: tuple[str, ...] = ()  # regular files open for writing (checkpoints, adapters)
    env_key_names: tuple[str, ...] = ()  # names of AI API-key variables set (OPENAI_API_KEY), never values

    @property
    def instance_key(self) -> str:
        """Identifies this process instance across polls (pids are reused, start times are not)."""
        return f"{self.pid}@{self.create_time:.2f}"


@dataclass(frozen=True)
class GpuDeviceObservation:
    """One GPU, as the GPU sensor saw it through NVML. None: NVML does not report the field here."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    utilization_percent: int | None  # SM busy, whole device, over NVML's last sample period
    memory_utilization_percent: int | None
    process_count: int
    sampled_at: float  # the sensor's clock (time.time()), so detectors can measure windows
    unsupported: tuple[str, ...] = ()  # NVML fields this GPU does not support (NotSupported)


@dataclass(frozen=True)
class GpuProcessObservation:
    """A process holding a context on one GPU: NVML's numbers plus the process's facts from /proc."""

    process: ProcessObservation
    gpu_index: int
    gpu_uuid: str
    gpu_name: str
    used_memory_bytes: int | None  # None: not available (Windows WDDM, MIG without privileges)
    sm_utilization_percent: int | None  # None: per-process samples unsupported, or none this period
    memory_utilization_percent: int | None
    context: str  # "compute" (CUDA) or "graphics"
    sampled_at: float

    @property
    def instance_key(self) -> str:
        return self.process.instance_key


@dataclass(frozen=True, slots=True)
class NetworkObservation:
    """One flow (or, for DNS, one name asked on a flow) and the host name it named."""

    host_name: str
    source: str  # one of SOURCES
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    transport: str  # "tcp" or "udp"
    first_seen: float
    last_seen: float
    bytes_out: int  # client -> server: IP bytes captured, or TCP payload bytes the kernel counted
    bytes_in: int
    packets: int
    aliases: tuple[str, ...] = ()  # CNAME targets a DNS answer gave for the name
    resolved: bool = False  # source "dns": named after a DNS answer for the server's address
    # An Encrypted Client Hello to an ECH-fronting provider hid the real server name: this is the
    # outer, public name it sent (host_name is then the address's DNS name, or this name itself).
    ech_outer_name: str = ""
    process: ProcessObservation | None = None  # the live sensor may know it; a capture does not
    # Who counted the bytes: "capture" (packets seen), "kernel" (the socket's own TCP counters),
    # "kernel+capture" (the last kernel reading, then packets seen after the socket closed unread),
    # "" (nothing counted: the socket tables).
    bytes_source: str = "capture"
    capture_drops: int = 0  # packets the capture lost while the flow lived, when it counted them

    @property
    def occurrence(self) -> str:
        """Identifies the flow: endpoints, transport and start."""
        return (
            f"{self.transport}:{self.client_ip}:{self.client_port}>{self.server_ip}:{self.server_port}"
            f"@{self.first_seen:.6f}"
        )


@dataclass(frozen=True)
class ModelFileObservation:
    """Model weights on disk, identified by content (file sensor). `origin`: "inventory" (found by
    a scan), "new" (appeared while watched), "moved" (renamed while watched), "download"
    (appeared in a hub cache, a runtime's model store or Downloads). Sent once the SHA-256 is
    known, so policy can match the hash."""

    path: str
    format: str
    size_bytes: int
    sha256: str
    confidence: float
    origin: str = "inventory"
    architecture: str = ""
    parameter_count: int = 0
    quantization: str = ""
    model_name: str = ""
    hub: str = ""  # "huggingface.co/ORG/NAME", "registry.ollama.ai/library/llama3.2:latest"
    owner: str = ""  # the file's owner (user name)
    writer: ProcessObservation | None = None  # the process seen writing it, when found
    observed_at: float = 0.0
    # The file sensor's rule (agent/sensors/files/significance.py): demoted files (fixtures, data,
    # what a package ships) are findings at info; `reasons` say why it counts or why it was demoted.
    demoted: bool = False
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelTransferObservation:
    """Model weights leaving their place: `kind` is "removable_media", "sync_folder", "archive",
    "rename", "upload" or "hub"; `destination` a path (mount point, sync folder, archive, new name)."""

    source_path: str
    destination: str
    kind: str
    sha256: str
    size_bytes: int
    destination_root: str = ""  # what the copy went into: mount point, sync folder, archive, new name
    format: str = ""
    model_name: str = ""
    confidence: float = 0.9
    reason: str = ""
    owner: str = ""
    process: ProcessObservation | None = None
    observed_at: float = 0.0
    demoted: bool = False  # the weights carried do not count (see ModelFileObservation)
    reasons: tuple[str, ...] = ()
    # How the bytes are known to be weights: "content" (their header), "hash" (a known model's
    # SHA-256), "size" or "writer" (content not verified: low confidence, low severity).
    identified_by: str = "content"
    member: str = ""  # the archive entry holding them
    # How `source_path` is known: "writer" (the writer had it open), "inode" (the same file);
    # source_path is "" when it is not known, never guessed from a size or another copy's hash.
    source_known_by: str = ""


@dataclass(frozen=True)
class TrainingArtifactObservation:
    """A fine-tuning artifact on disk (adapter, checkpoint-N/, trainer state, optimizer state):
    `label` from agent.modelfiles.TRAINING_LABELS, `writer` the process writing it when found."""

    path: str
    label: str
    owner: str = ""
    writer: ProcessObservation | None = None
    observed_at: float = 0.0


FileObservation = ModelFileObservation | ModelTransferObservation | TrainingArtifactObservation


@dataclass(frozen=True)
class AiAgentObservation:
    """An AI agent (agent/catalog/aitools.toml) installed or running. `source`: "process",
    "npm_global", "path", "app" or "editor_extension"; `path` the package, binary or bundle."""

    agent_id: str
    source: str
    path: str = ""
    version: str = ""
    home: str = ""
    owner: str = ""
    process: ProcessObservation | None = None
    mcp_children: tuple[str, ...] = ()  # the MCP servers it started (running processes), by name
    observed_at: float = 0.0


@dataclass(frozen=True)
class McpServerObservation:
    """An MCP server configured in a client's file (scope "user", "project", "managed") or running
    (scope "running"). Names of env vars and headers only, never values; `args` and URLs redacted."""

    name: str
    client: str  # mcp_client catalog id, or for a running server the agent that started it ("" unknown)
    scope: str
    transport: str  # "stdio", "http", "sse" ("" when the entry does not say and cannot be told)
    config_path: str = ""
    command: str = ""
    args: tuple[str, ...] = ()
    remote_host: str = ""  # host[:port] of a remote server's URL
    env_names: tuple[str, ...] = ()
    header_names: tuple[str, ...] = ()
    disabled: bool = False
    content_hash: str = ""  # SHA-256 of the redacted, normalised entry
    owner: str = ""
    process: ProcessObservation | None = None
    parent: ProcessObservation | None = None  # the agent process that started it, when found
    observed_at: float = 0.0


@dataclass(frozen=True)
class AiExtensionObservation:
    """An extension of a browser or an editor that the AI extension catalog names."""

    application: str  # "chrome", "edge", "firefox", "vscode", "cursor", "jetbrains" ...
    profile: str
    extension_id: str
    name: str
    version: str = ""
    permissions: tuple[str, ...] = ()
    path: str = ""
    owner: str = ""
    observed_at: float = 0.0


AiToolObservation = AiAgentObservation | McpServerObservation | AiExtensionObservation

#: Everything a sensor yields; each sensor names its members in `Sensor.produces`.
Observation = (
    ProcessObservation
    | GpuDeviceObservation
    | GpuProcessObservation
    | NetworkObservation
    | FileObservation
    | AiToolObservation
)

"""Builders shared by the collector tests (imported by conftest and by test modules)."""

from __future__ import annotations

from typing import Any

from umbra import codec
from umbra.contract import PROTOCOL_VERSION
from umbra.v1 import agent_pb2, finding_pb2

T0 = 1_750_000_000.0  # a fixed "now" for finding times, so tests never depend on the clock


def build_finding(
    finding_id: str = "f-1",
    *,
    kind: str = "LOCAL_MODEL_RUNTIME",
    severity: str = "high",
    confidence: float = 1.0,
    host_id: str = "",
    last_seen: float = T0,
    first_seen: float | None = None,
    count: int = 1,
    approved: bool = False,
    summary: str = "",
    pid: int = 4242,
    process_name: str = "ollama",
) -> finding_pb2.Finding:
    f = finding_pb2.Finding(
        id=finding_id,
        kind=codec.kind_value(kind),
        severity=codec.severity_value(severity),
        confidence=confidence,
        host_id=host_id,
        count=count,
        summary=summary or f"{process_name} finding {finding_id}",
        policy=finding_pb2.PolicyDecision(approved=approved, rule="test"),
        process=finding_pb2.Process(pid=pid, name=process_name, cmdline=[process_name, "serve"]),
        evidence=[
            finding_pb2.Evidence(
                runtime=finding_pb2.RuntimeEvidence(runtime_id=process_name, matched_on=["name"])
            )
        ],
    )
    f.last_seen.CopyFrom(codec.timestamp(last_seen))
    f.first_seen.CopyFrom(codec.timestamp(last_seen - 60 if first_seen is None else first_seen))
    return f


def build_hello(host_id: str = "host-a", hostname: str = "ws-a", **kw: Any) -> agent_pb2.Hello:
    return agent_pb2.Hello(
        host=agent_pb2.HostFacts(host_id=host_id, hostname=hostname, os="Linux", os_release="6.1"),
        agent_version=kw.get("agent_version", "0.1.0"),
        protocol_version=kw.get("protocol_version", PROTOCOL_VERSION),
        sensors=[
            agent_pb2.SensorStatus(name="process", state=agent_pb2.SENSOR_STATE_ACTIVE),
            agent_pb2.SensorStatus(name="gpu", state=agent_pb2.SENSOR_STATE_INACTIVE, reason="no GPU"),
        ],
    )


def build_inventory(taken_at: float = T0, *paths: str) -> agent_pb2.Inventory:
    """An Inventory of GGUF model files at `paths` (a 7B-shaped model each)."""
    return agent_pb2.Inventory(
        taken_at=codec.timestamp(taken_at),
        models=[
            finding_pb2.ModelFileEvidence(
                path=path,
                format="gguf",
                size_bytes=4_100_000_000,
                sha256=f"{i:02x}" * 32,
                architecture="llama",
                parameter_count=7_241_732_096,
                quantization="Q4_K_M",
                model_name="Llama 2 7B",
            )
            for i, path in enumerate(paths)
        ],
    )

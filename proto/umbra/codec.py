"""The wire package's one hand-written helper: names and plain-dict views of wire messages.

Both the agent (JSON output) and the collector (storage, console, reports) need the same
human names for kinds and severities and the same dict shape for a finding, so it lives
here, beside the generated code both of them import.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from umbra.v1 import finding_pb2 as fpb

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_KIND_PREFIX = "KIND_"
_SEVERITY_PREFIX = "SEVERITY_"

#: The stable kind names of DESIGN.md, in enum order.
KIND_NAMES: tuple[str, ...] = tuple(
    n.removeprefix(_KIND_PREFIX) for n, _ in fpb.FindingKind.items() if n != "KIND_UNSPECIFIED"
)
#: Severity names, lowest first: info, low, medium, high, critical.
SEVERITY_NAMES: tuple[str, ...] = tuple(
    n.removeprefix(_SEVERITY_PREFIX).lower() for n, _ in fpb.Severity.items() if n != "SEVERITY_UNSPECIFIED"
)


def kind_name(kind: int) -> str:
    """FindingKind value -> "LOCAL_MODEL_RUNTIME"."""
    return fpb.FindingKind.Name(kind).removeprefix(_KIND_PREFIX)  # type: ignore[arg-type]


def kind_value(name: str) -> fpb.FindingKind.ValueType:
    """ "LOCAL_MODEL_RUNTIME" (or "KIND_LOCAL_MODEL_RUNTIME") -> enum value; ValueError if unknown."""
    key = name.upper()
    key = key if key.startswith(_KIND_PREFIX) else _KIND_PREFIX + key
    try:
        return fpb.FindingKind.Value(key)
    except ValueError:
        raise ValueError(f"unknown finding kind {name!r}; known: {', '.join(KIND_NAMES)}") from None


def severity_name(severity: int) -> str:
    """Severity value -> "high"."""
    return fpb.Severity.Name(severity).removeprefix(_SEVERITY_PREFIX).lower()  # type: ignore[arg-type]


def severity_value(name: str) -> fpb.Severity.ValueType:
    """ "high" -> enum value; ValueError if unknown."""
    try:
        return fpb.Severity.Value(_SEVERITY_PREFIX + name.upper())
    except ValueError:
        raise ValueError(f"unknown severity {name!r}; known: {', '.join(SEVERITY_NAMES)}") from None


def human_size(n: int) -> str:
    """A byte count as people read it: "4.1 GB", "820.0 kB", "512 B" (decimal units, as disks)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def timestamp(when: float) -> Timestamp:
    """Unix seconds -> protobuf Timestamp."""
    ts = Timestamp()
    ts.FromNanoseconds(int(when * 1e9))
    return ts


def seconds(ts: Timestamp) -> float:
    """protobuf Timestamp -> Unix seconds (0.0 when unset)."""
    return ts.ToNanoseconds() / 1e9


def iso(ts: Timestamp) -> str:
    """protobuf Timestamp -> ISO 8601 UTC, "" when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return datetime.fromtimestamp(seconds(ts), tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def message_to_dict(message: Message) -> dict[str, Any]:
    """Any message as its proto3 JSON dict: field names as in the .proto, every field (defaults
    included: a reader should not have to know that a missing "exposed" means false), times as
    RFC 3339 strings, and 64-bit integers as numbers."""
    body = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _int64_as_numbers(message.DESCRIPTOR, body)
    return body


def _int64_as_numbers(descriptor: Any, body: dict[str, Any]) -> None:  # a Descriptor (upb or Python)
    # proto3 JSON writes 64-bit integers as strings (for JavaScript); byte counts and parameter
    # counts are numbers to every reader of ours.
    for field in descriptor.fields:
        if field.name not in body:
            continue
        value = body[field.name]
        if field.type in _INT64_TYPES:
            body[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.message_type is not None:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):  # a nested message (a Timestamp is a string)
                    _int64_as_numbers(field.message_type, item)


def evidence_to_dict(evidence: fpb.Evidence) -> dict[str, Any]:
    """One typed evidence -> {"type": "runtime", ...fields}."""
    which = evidence.WhichOneof("detail")
    if which is None:
        return {"type": "none"}
    return {"type": which, **message_to_dict(getattr(evidence, which))}


def finding_to_dict(finding: fpb.Finding) -> dict[str, Any]:
    """A finding as a flat, readable dict: the JSON line of `umbra-agent scan` and the API shape."""
    process: dict[str, Any] | None = None
    if finding.HasField("process"):
        p = finding.process
        process = {
            "pid": p.pid,
            "ppid": p.ppid,
            "name": p.name,
            "exe": p.exe,
            "cmdline": list(p.cmdline),
            "username": p.username,
            "start_time": iso(p.start_time),
        }
    return {
        "id": finding.id,
        "kind": kind_name(finding.kind),
        "severity": severity_name(finding.severity),
        "confidence": round(finding.confidence, 3),
        "host_id": finding.host_id,
        "user": finding.user,
        "summary": finding.summary,
        "process": process,
        "evidence": [evidence_to_dict(e) for e in finding.evidence],
        "policy": {"approved": finding.policy.approved, "rule": finding.policy.rule},
        "first_seen": iso(finding.first_seen),
        "last_seen": iso(finding.last_seen),
        "count": finding.count,
    }

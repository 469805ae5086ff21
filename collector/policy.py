"""The fleet policy: one versioned document the collector keeps and pushes to every agent.

`umbra-collector policy set FILE` reads a TOML file, validates it strictly (an unknown key or a
wrong type is an error naming the key) and stores it as the next version; every connected agent
gets it on its stream, and an agent that connects with an older version gets it on connect.

    approved_runtimes = ["ollama"]                 # runtime catalog ids
    approved_services = ["openai"]                 # endpoint-catalog service ids or vendor slugs
    approved_model_hashes = ["<sha256 hex>"]       # model files approved by content
    watched_paths = ["/srv/models"]                # where the file sensor looks for model weights
    approved_agents = ["github-copilot"]           # AI agent catalog ids (agent/catalog/aitools.toml)
    approved_mcp_servers = ["mcp.example.com"]     # MCP server names, packages or remote hosts
    approved_extensions = ["github.copilot-chat"]  # browser or editor extension ids, or catalog ids
    min_confidence = 0.5                           # drafts below this are not findings (0..1)
    upload_threshold_bytes = 10485760              # AI_DATA_UPLOAD above this many bytes out

The keys are the agent config's names for the same things (`[policy]` approved_runtimes,
approved_services, approved_model_hashes, min_confidence, upload_threshold_bytes; `[sensors.files]`
watched_paths). The older `[thresholds]` table (min_confidence, upload_bytes) is still read, with a
deprecation warning. On the wire the thresholds keep their names (umbra.contract), so older agents
understand a newer collector.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from umbra import contract
from umbra.v1 import agent_pb2

#: Document key -> wire rule kind (the inverse of the wire contract's LIST_RULES).
LIST_KEYS: dict[str, str] = {key: kind for kind, key in contract.LIST_RULES.items()}
#: Threshold name -> its allowed range.
THRESHOLDS: dict[str, tuple[float, float]] = {
    contract.THRESHOLD_MIN_CONFIDENCE: (0.0, 1.0),
    contract.THRESHOLD_UPLOAD_BYTES: (0.0, float(2**53)),
}
#: File key (the agent config's name) -> the threshold it sets on the wire.
FILE_THRESHOLDS: dict[str, str] = {
    "min_confidence": contract.THRESHOLD_MIN_CONFIDENCE,
    "upload_threshold_bytes": contract.THRESHOLD_UPLOAD_BYTES,
}
MAX_VALUES = 10_000
MAX_VALUE_LENGTH = 4096
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PolicyError(ValueError):
    """A policy document that cannot be used; the message names the key."""


def from_file_names(doc: Any, where: str, warn: Callable[[str], None]) -> Any:
    """A policy file's document in `validate`'s shape: top-level min_confidence and
    upload_threshold_bytes go into the thresholds; an old `[thresholds]` table is read with a warning."""
    if not isinstance(doc, dict):
        return doc
    doc = dict(doc)
    if "thresholds" in doc:
        names = {wire: key for key, wire in FILE_THRESHOLDS.items()}
        table = doc["thresholds"]
        renames = ", ".join(f"{k} -> {names.get(k, k)}" for k in table) if isinstance(table, dict) else ""
        warn(f"{where}: the [thresholds] table is deprecated; write its keys at the top ({renames})")
    thresholds = (
        dict(doc.pop("thresholds", {}) or {}) if isinstance(doc.get("thresholds", {}), dict) else None
    )
    if thresholds is None:
        raise PolicyError(f"{where}: [thresholds] must be a table")
    for key, wire in FILE_THRESHOLDS.items():
        if key in doc:
            if wire in thresholds:
                raise PolicyError(f"{where}: {key} is given twice (at the top and in [thresholds])")
            thresholds[wire] = doc.pop(key)
    doc["thresholds"] = thresholds
    return doc


def validate(doc: Any, where: str = "policy") -> dict[str, Any]:
    """A checked, normalised policy body (every key present, lists sorted and unique)."""
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: expected a table")
    known = {*LIST_KEYS, "thresholds"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    body: dict[str, Any] = {}
    for key in LIST_KEYS:
        values = doc.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise PolicyError(f"{where}: {key} must be a list of strings")
        if len(values) > MAX_VALUES:
            raise PolicyError(f"{where}: {key} has more than {MAX_VALUES} entries")
        cleaned = []
        for value in values:
            value = value.strip()
            if not value or len(value) > MAX_VALUE_LENGTH or not value.isprintable():
                raise PolicyError(f"{where}: {key} entry {value[:40]!r} is empty, too long or not printable")
            if key == "approved_model_hashes":
                value = value.lower()
                if not _SHA256.match(value):
                    raise PolicyError(f"{where}: {key} entry {value[:70]!r} is not a SHA-256 hex digest")
            if key == "approved_services":
                value = value.lower().rstrip(".")
            if key == "approved_extensions" and "." in value:  # editor ids are case-insensitive
                value = value.lower()
            cleaned.append(value)
        body[key] = sorted(set(cleaned))
    thresholds = doc.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise PolicyError(f"{where}: [thresholds] must be a table")
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise PolicyError(
            f"{where}: unknown threshold {unknown[0]!r} (known: {', '.join(sorted(THRESHOLDS))})"
        )
    body["thresholds"] = {}
    for name, value in sorted(thresholds.items()):
        low, high = THRESHOLDS[name]
        key = next((k for k, wire in FILE_THRESHOLDS.items() if wire == name), name)  # as files name it
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PolicyError(f"{where}: {key} must be a number")
        if not low <= value <= high:
            raise PolicyError(f"{where}: {key} must be between {low:g} and {high:g}")
        body["thresholds"][name] = value
    return body


def _no_warning(message: str) -> None:
    del message


def load_file(path: Path, warn: Callable[[str], None] = _no_warning) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path} is not valid TOML: {exc}") from None
    return validate(from_file_names(raw, str(path), warn), str(path))


def to_wire(version: int, body: dict[str, Any]) -> agent_pb2.Policy:
    rules = [
        agent_pb2.PolicyRule(name=key, kind=kind, values=body.get(key, [])) for key, kind in LIST_KEYS.items()
    ]
    rules += [
        agent_pb2.PolicyRule(name=name, kind=contract.RULE_THRESHOLD, values=[repr(float(value))])
        for name, value in sorted(body.get("thresholds", {}).items())
    ]
    return agent_pb2.Policy(version=version, rules=rules)

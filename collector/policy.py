"""The fleet policy: one versioned document the collector keeps and pushes to every agent.

`umbra-collector policy set FILE` reads a TOML file, validates it strictly (an unknown key or a
wrong type is an error naming the key) and stores it as the next version; every connected agent
gets it on its stream, and an agent that connects with an older version gets it on connect.

    approved_runtimes = ["ollama"]                 # runtime catalog ids
    approved_services = ["api.openai.com"]         # AI service host names ("*.example.com" allowed)
    approved_model_hashes = ["<sha256 hex>"]       # model files approved by content
    watched_paths = ["/srv/models"]                # where the file sensor looks for model weights
    approved_agents = ["github-copilot"]           # AI agent catalog ids (agent/catalog/aitools.toml)
    approved_mcp_servers = ["mcp.example.com"]     # MCP server names, packages or remote hosts
    approved_extensions = ["github.copilot-chat"]  # browser or editor extension ids, or catalog ids
    [thresholds]
    min_confidence = 0.5                           # drafts below this are not findings (0..1)
    upload_bytes = 10485760                        # AI_DATA_UPLOAD above this many bytes out
"""

from __future__ import annotations

import math
import re
import tomllib
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
MAX_VALUES = 10_000
MAX_VALUE_LENGTH = 4096
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PolicyError(ValueError):
    """A policy document that cannot be used; the message names the key."""


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
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PolicyError(f"{where}: threshold {name} must be a number")
        if not low <= value <= high:
            raise PolicyError(f"{where}: threshold {name} must be between {low:g} and {high:g}")
        body["thresholds"][name] = value
    return body


def load_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path} is not valid TOML: {exc}") from None
    return validate(raw, str(path))


def to_wire(version: int, body: dict[str, Any]) -> agent_pb2.Policy:
    rules = [
        agent_pb2.PolicyRule(name=key, kind=kind, values=body.get(key, [])) for key, kind in LIST_KEYS.items()
    ]
    rules += [
        agent_pb2.PolicyRule(name=name, kind=contract.RULE_THRESHOLD, values=[repr(float(value))])
        for name, value in sorted(body.get("thresholds", {}).items())
    ]
    return agent_pb2.Policy(version=version, rules=rules)

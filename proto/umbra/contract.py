"""The wire contract's plain values, written once for both sides.

Protobuf fixes the shape of the messages; some of their string fields carry values the two sides
must agree on that the .proto cannot express as an enum without breaking old agents: the protocol
version a Hello names, and the kinds of rule a Policy carries (agent.proto, `PolicyRule.kind`).
The agent and the collector both import these names, so neither writes the strings itself.
"""

from __future__ import annotations

from typing import Final

#: What an agent says in `Hello.protocol_version`; a collector refuses any other non-empty value.
PROTOCOL_VERSION: Final = "umbra.v1"

#: The initial metadata a collector sends on a stream once it has accepted the Hello (identity,
#: enrollment, limits): from then on the agent knows it is connected, before any Ack.
STREAM_ACCEPTED: Final = ("umbra-stream", "accepted")

# `PolicyRule.kind`: a list rule carries its entries in `values`; a threshold rule names the
# threshold in `name` and carries its number, as text, in `values[0]`.
RULE_APPROVED_RUNTIME: Final = "approved_runtime"  # runtime catalog ids
RULE_APPROVED_SERVICE: Final = "approved_service"  # AI service host names ("*.example.com" allowed)
RULE_APPROVED_MODEL_HASH: Final = "approved_model_hash"  # SHA-256 hex digests of model files
RULE_WATCHED_PATH: Final = "watched_path"  # where the file sensor looks for model weights
RULE_APPROVED_AGENT: Final = "approved_agent"  # AI agent catalog ids ("claude-code")
# MCP servers: a configured name, a package ("@modelcontextprotocol/server-github") or a remote host
RULE_APPROVED_MCP_SERVER: Final = "approved_mcp_server"
RULE_APPROVED_EXTENSION: Final = "approved_extension"  # extension ids (browser or editor) or catalog ids
RULE_THRESHOLD: Final = "threshold"

#: List rule kind -> the policy list it fills (a key of the collector's policy document, a field
#: of the agent's fleet policy: the same name on both sides).
LIST_RULES: Final[dict[str, str]] = {
    RULE_APPROVED_RUNTIME: "approved_runtimes",
    RULE_APPROVED_SERVICE: "approved_services",
    RULE_APPROVED_MODEL_HASH: "approved_model_hashes",
    RULE_WATCHED_PATH: "watched_paths",
    RULE_APPROVED_AGENT: "approved_agents",
    RULE_APPROVED_MCP_SERVER: "approved_mcp_servers",
    RULE_APPROVED_EXTENSION: "approved_extensions",
}

# Threshold rule names the agent applies.
THRESHOLD_MIN_CONFIDENCE: Final = "min_confidence"  # drafts below this are not findings (0..1)
THRESHOLD_UPLOAD_BYTES: Final = "upload_bytes"  # AI_DATA_UPLOAD above this many bytes out

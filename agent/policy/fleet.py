"""The policy the collector pushes: applied when newer than the one in force, kept on disk.

The agent starts with its config's `[policy]` (version 0). A pushed policy (version >= 1) replaces
it, is written to `<state_dir>/policy.json` atomically before it is applied, and is loaded again
at start, so the agent enforces the newest policy it has seen even while the collector is away.
Its version goes in every Hello. `Pipeline.apply_policy` hands it to the detectors and sensors that
read it themselves: the network detector (services, upload threshold), the file sensor (watched paths).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from umbra import contract
from umbra.private import write_private
from umbra.v1 import agent_pb2 as apb

from agent.catalog.runtimes import default_runtime_catalog
from agent.policy.rules import Policy

log = logging.getLogger(__name__)

POLICY_FILE = "policy.json"


@dataclass(frozen=True)
class FleetPolicy:
    version: int
    approved_runtimes: tuple[str, ...] = ()
    approved_services: tuple[str, ...] = ()
    approved_model_hashes: tuple[str, ...] = ()
    watched_paths: tuple[str, ...] = ()
    approved_agents: tuple[str, ...] = ()
    approved_mcp_servers: tuple[str, ...] = ()
    approved_extensions: tuple[str, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, policy: apb.Policy) -> FleetPolicy:
        lists: dict[str, list[str]] = {name: [] for name in contract.LIST_RULES.values()}
        thresholds: dict[str, float] = {}
        for rule in policy.rules:
            if rule.kind in contract.LIST_RULES:
                lists[contract.LIST_RULES[rule.kind]].extend(rule.values)
            elif rule.kind == contract.RULE_THRESHOLD and rule.values:
                try:
                    value = float(rule.values[0])
                except ValueError:
                    log.warning("policy %d: threshold %s is not a number", policy.version, rule.name)
                    continue
                if math.isfinite(value):
                    thresholds[rule.name] = value
            else:
                log.info(
                    "policy %d: rule kind %r not known to this agent, ignored", policy.version, rule.kind
                )
        return cls(
            version=int(policy.version),
            thresholds=thresholds,
            **{k: tuple(sorted(set(v))) for k, v in lists.items()},
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FleetPolicy:
        doc = json.loads(text)
        return cls(
            version=int(doc["version"]),
            approved_runtimes=tuple(doc.get("approved_runtimes", ())),
            approved_services=tuple(doc.get("approved_services", ())),
            approved_model_hashes=tuple(doc.get("approved_model_hashes", ())),
            watched_paths=tuple(doc.get("watched_paths", ())),
            approved_agents=tuple(doc.get("approved_agents", ())),
            approved_mcp_servers=tuple(doc.get("approved_mcp_servers", ())),
            approved_extensions=tuple(doc.get("approved_extensions", ())),
            thresholds={str(k): float(v) for k, v in doc.get("thresholds", {}).items()},
        )

    def detection_policy(self, local: Policy) -> Policy:
        """The detection Policy this fleet policy means; thresholds it leaves out keep the local value."""
        confidence = self.thresholds.get(contract.THRESHOLD_MIN_CONFIDENCE, local.min_confidence)
        upload = self.thresholds.get(contract.THRESHOLD_UPLOAD_BYTES, float(local.upload_threshold_bytes))
        return replace(
            local,
            version=self.version,
            approved_runtimes=frozenset(self.approved_runtimes),
            approved_services=frozenset(self.approved_services),
            approved_model_hashes=frozenset(h.lower() for h in self.approved_model_hashes),
            min_confidence=min(max(confidence, 0.0), 1.0),
            upload_threshold_bytes=max(int(upload), 0),
            watched_paths=self.watched_paths,
            approved_agents=frozenset(self.approved_agents),
            approved_mcp_servers=frozenset(self.approved_mcp_servers),
            approved_extensions=frozenset(self.approved_extensions),
        )


def load(state_dir: Path) -> FleetPolicy | None:
    path = state_dir / POLICY_FILE
    try:
        return FleetPolicy.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("ignoring the saved fleet policy %s: %s", path, exc)
        return None


def save(state_dir: Path, policy: FleetPolicy) -> None:
    write_private(state_dir / POLICY_FILE, policy.to_json().encode())


class PolicyKeeper:
    """Holds the policy in force; `receive` (the transport's on_policy) applies a newer pushed one."""

    def __init__(
        self, state_dir: Path, local: Policy, apply: Callable[[Policy, FleetPolicy | None], None]
    ) -> None:
        self._state_dir = state_dir
        self._local = local
        self._apply = apply
        self._lock = threading.Lock()
        self.fleet = load(state_dir)
        if self.fleet is not None:
            log.info("fleet policy version %d loaded from %s", self.fleet.version, state_dir / POLICY_FILE)
        apply(self.current(), self.fleet)

    def _warn_unknown(self, fleet: FleetPolicy) -> None:
        """The collector cannot check ids against this agent's catalogs: say which approve nothing."""
        runtimes = default_runtime_catalog()
        endpoints = self._local.endpoints
        unknown = {
            "approved_runtimes": [r for r in fleet.approved_runtimes if runtimes.get(r) is None],
            "approved_services": endpoints.unknown_approvals(fleet.approved_services) if endpoints else [],
        }
        for key, names in unknown.items():
            if names:
                log.warning(
                    "fleet policy version %d: %s %s name nothing in this agent's catalog, so approve nothing",
                    fleet.version,
                    key,
                    ", ".join(repr(n) for n in names),
                )

    def current(self) -> Policy:
        return self.fleet.detection_policy(self._local) if self.fleet is not None else self._local

    @property
    def version(self) -> int:
        return self.fleet.version if self.fleet is not None else 0

    def receive(self, policy: apb.Policy) -> bool:
        """Apply `policy` when it is newer than the one in force; True when it was applied."""
        with self._lock:
            if policy.version <= self.version:
                return False
            fleet = FleetPolicy.from_wire(policy)
            save(self._state_dir, fleet)  # persisted before it takes effect
            self.fleet = fleet
            self._apply(self.current(), fleet)
        self._warn_unknown(fleet)
        log.info(
            "fleet policy version %d applied: %d approved runtimes, %d services, %d model hashes, %d paths",
            fleet.version,
            len(fleet.approved_runtimes),
            len(fleet.approved_services),
            len(fleet.approved_model_hashes),
            len(fleet.watched_paths),
        )
        return True
